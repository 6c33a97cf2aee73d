// Package he adds up hospitals' aggregates under homomorphic encryption so
// that no party sees another's totals, nor does the party that adds them.
// It is the cryptographic core of federated queries (several hospitals
// answering one question); the network protocol between nodes and the
// coordinator is built on it.
//
// The scheme is multiparty CKKS from github.com/tuneinsight/lattigo/v6:
//
//  1. Key generation: the hospitals (nodes) run the collective public-key
//     protocol over a common random polynomial. Each keeps its secret share;
//     the collective public key encrypts, and only all shares together
//     could decrypt.
//  2. Each node encrypts its vector of bounded, already noised per-group
//     aggregates (counts, sums, sums of squares) under the collective key.
//  3. The coordinator adds the ciphertexts; it holds no share and cannot
//     decrypt what it adds.
//  4. Each node re-encrypts the sum towards the researcher's public key with
//     a public-key switch share that carries flooding noise; the
//     coordinator combines the shares, and only the researcher's secret key
//     opens the result: the combined total, never a node's own.
//
// CKKS is approximate: a decrypted total differs from the exact sum by far
// less than the differential-privacy noise already in it (about 1e-4
// absolute at these parameters; the tests bound it).
package he

import (
	"fmt"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/multiparty"
	"github.com/tuneinsight/lattigo/v6/ring"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"
	"github.com/tuneinsight/lattigo/v6/utils/sampling"
)

// Params are the CKKS parameters: ring degree 2^13 (4096 slots per
// ciphertext), a 155-bit modulus and a 45-bit scale, about 128-bit security
// for these sizes.
func Params() (ckks.Parameters, error) {
	p, err := ckks.NewParametersFromLiteral(ckks.ParametersLiteral{
		LogN:            13,
		LogQ:            []int{55, 45},
		LogP:            []int{55},
		LogDefaultScale: 45,
	})
	if err != nil {
		return ckks.Parameters{}, fmt.Errorf("ckks parameters: %w", err)
	}
	return p, nil
}

// floodingSigma is the standard deviation of the noise each node adds to
// its key-switch share, which hides its secret share in the output.
const floodingSigma = 1 << 30

// Node is one hospital's part of the protocol: its secret key share.
type Node struct {
	params ckks.Parameters
	sk     *rlwe.SecretKey
}

// NewNode draws a node's secret key share.
func NewNode(params ckks.Parameters) *Node {
	return &Node{params: params, sk: rlwe.NewKeyGenerator(params).GenSecretKeyNew()}
}

// KeyGen runs the collective public-key generation over a common random
// polynomial derived from seed, which all nodes must share.
type KeyGen struct {
	params ckks.Parameters
	ckg    multiparty.PublicKeyGenProtocol
	crp    multiparty.PublicKeyGenCRP
}

// NewKeyGen prepares a key generation round from a shared seed.
func NewKeyGen(params ckks.Parameters, seed []byte) (*KeyGen, error) {
	crs, err := sampling.NewKeyedPRNG(seed)
	if err != nil {
		return nil, fmt.Errorf("common reference string: %w", err)
	}
	ckg := multiparty.NewPublicKeyGenProtocol(params)
	return &KeyGen{params: params, ckg: ckg, crp: ckg.SampleCRP(crs)}, nil
}

// Share is a node's contribution to the collective public key.
func (k *KeyGen) Share(n *Node) multiparty.PublicKeyGenShare {
	s := k.ckg.AllocateShare()
	k.ckg.GenShare(n.sk, k.crp, &s)
	return s
}

// PublicKey combines every node's share into the collective public key.
func (k *KeyGen) PublicKey(shares []multiparty.PublicKeyGenShare) *rlwe.PublicKey {
	sum := k.ckg.AllocateShare()
	for _, s := range shares {
		k.ckg.AggregateShares(s, sum, &sum)
	}
	pk := rlwe.NewPublicKey(k.params)
	k.ckg.GenPublicKey(sum, k.crp, pk)
	return pk
}

// Encrypt encrypts values (a node's per-group aggregates) under the
// collective public key, 4096 values per ciphertext.
func Encrypt(params ckks.Parameters, pk *rlwe.PublicKey, values []float64) ([]*rlwe.Ciphertext, error) {
	enc := ckks.NewEncoder(params)
	encryptor := rlwe.NewEncryptor(params, pk)
	slots := params.MaxSlots()
	var out []*rlwe.Ciphertext
	for start := 0; start < len(values) || start == 0; start += slots {
		end := min(start+slots, len(values))
		pt := ckks.NewPlaintext(params, params.MaxLevel())
		if err := enc.Encode(values[start:end], pt); err != nil {
			return nil, fmt.Errorf("encode: %w", err)
		}
		ct, err := encryptor.EncryptNew(pt)
		if err != nil {
			return nil, fmt.Errorf("encrypt: %w", err)
		}
		out = append(out, ct)
		if end == len(values) {
			break
		}
	}
	return out, nil
}

// Sum adds the nodes' encrypted vectors, as the coordinator does.
func Sum(params ckks.Parameters, parts [][]*rlwe.Ciphertext) ([]*rlwe.Ciphertext, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("nothing to add")
	}
	eval := ckks.NewEvaluator(params, nil)
	out := make([]*rlwe.Ciphertext, len(parts[0]))
	for i := range out {
		out[i] = parts[0][i].CopyNew()
		for _, p := range parts[1:] {
			if len(p) != len(out) {
				return nil, fmt.Errorf("nodes sent vectors of different lengths")
			}
			if err := eval.Add(out[i], p[i], out[i]); err != nil {
				return nil, fmt.Errorf("add: %w", err)
			}
		}
	}
	return out, nil
}

func switchProtocol(params ckks.Parameters) (multiparty.PublicKeySwitchProtocol, error) {
	return multiparty.NewPublicKeySwitchProtocol(params, ring.DiscreteGaussian{Sigma: floodingSigma, Bound: 6 * floodingSigma})
}

// SwitchShares is a node's share of re-encrypting the sum towards target,
// the researcher's public key: one share per ciphertext.
func (n *Node) SwitchShares(sum []*rlwe.Ciphertext, target *rlwe.PublicKey) ([]multiparty.PublicKeySwitchShare, error) {
	pcks, err := switchProtocol(n.params)
	if err != nil {
		return nil, fmt.Errorf("key switch protocol: %w", err)
	}
	out := make([]multiparty.PublicKeySwitchShare, len(sum))
	for i, ct := range sum {
		out[i] = pcks.AllocateShare(ct.Level())
		pcks.GenShare(n.sk, target, ct, &out[i])
	}
	return out, nil
}

// Switch combines every node's shares and re-encrypts the sum under the
// researcher's key. Missing any node's shares leaves a ciphertext that
// decrypts to noise.
func Switch(params ckks.Parameters, sum []*rlwe.Ciphertext, shares [][]multiparty.PublicKeySwitchShare) ([]*rlwe.Ciphertext, error) {
	pcks, err := switchProtocol(params)
	if err != nil {
		return nil, fmt.Errorf("key switch protocol: %w", err)
	}
	out := make([]*rlwe.Ciphertext, len(sum))
	for i, ct := range sum {
		combined := pcks.AllocateShare(ct.Level())
		for _, node := range shares {
			if len(node) != len(sum) {
				return nil, fmt.Errorf("a node sent %d shares for %d ciphertexts", len(node), len(sum))
			}
			if err := pcks.AggregateShares(node[i], combined, &combined); err != nil {
				return nil, fmt.Errorf("combine shares: %w", err)
			}
		}
		out[i] = ckks.NewCiphertext(params, 1, ct.Level())
		pcks.KeySwitch(ct, combined, out[i])
	}
	return out, nil
}

// Decrypt opens n values with a secret key (the researcher's).
func Decrypt(params ckks.Parameters, sk *rlwe.SecretKey, cts []*rlwe.Ciphertext, n int) ([]float64, error) {
	dec := rlwe.NewDecryptor(params, sk)
	enc := ckks.NewEncoder(params)
	var out []float64
	for _, ct := range cts {
		pt := dec.DecryptNew(ct)
		vals := make([]float64, params.MaxSlots())
		if err := enc.Decode(pt, vals); err != nil {
			return nil, fmt.Errorf("decode: %w", err)
		}
		out = append(out, vals...)
	}
	if n > len(out) {
		return nil, fmt.Errorf("asked for %d values, %d decrypted", n, len(out))
	}
	return out[:n], nil
}

// Size is the wire size of ciphertexts in bytes.
func Size(cts []*rlwe.Ciphertext) int {
	total := 0
	for _, ct := range cts {
		total += ct.BinarySize()
	}
	return total
}
