package he_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/multiparty"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"

	"github.com/hospital/gateway/federation/he"
)

type federation struct {
	params     ckks.Parameters
	nodes      []*he.Node
	pk         *rlwe.PublicKey
	researcher *rlwe.SecretKey
	target     *rlwe.PublicKey
}

func setup(t testing.TB, nodes int) federation {
	t.Helper()
	params, err := he.Params()
	if err != nil {
		t.Fatal(err)
	}
	f := federation{params: params}
	kg, err := he.NewKeyGen(params, []byte("federated study 2026-001"))
	if err != nil {
		t.Fatal(err)
	}
	var shares []multiparty.PublicKeyGenShare
	for i := 0; i < nodes; i++ {
		n := he.NewNode(params)
		f.nodes = append(f.nodes, n)
		shares = append(shares, kg.Share(n))
	}
	f.pk = kg.PublicKey(shares)
	f.researcher, f.target = rlwe.NewKeyGenerator(params).GenKeyPairNew()
	return f
}

// values gives each node per-group counts, sums and sums of squares of the
// magnitudes a hospital produces.
func values(rng *rand.Rand, groups int) []float64 {
	v := make([]float64, 3*groups)
	for i := range v {
		switch i % 3 {
		case 0:
			v[i] = float64(rng.IntN(100000))
		case 1:
			v[i] = rng.Float64() * 5e9
		default:
			v[i] = rng.Float64() * 1e12
		}
	}
	return v
}

// TestEncryptedSumEqualsPlainSum: three hospitals, the coordinator adds
// their encrypted aggregates, and the researcher decrypts the same totals as
// a plaintext sum, up to CKKS's approximation.
func TestEncryptedSumEqualsPlainSum(t *testing.T) {
	for _, groups := range []int{1, 31, 2000} {
		t.Run(fmt.Sprint(groups, " groups"), func(t *testing.T) {
			f := setup(t, 3)
			rng := rand.New(rand.NewPCG(1, uint64(groups)))
			plain := make([]float64, 3*groups)
			var parts [][]*rlwe.Ciphertext
			for range f.nodes {
				v := values(rng, groups)
				for i := range v {
					plain[i] += v[i]
				}
				ct, err := he.Encrypt(f.params, f.pk, v)
				if err != nil {
					t.Fatal(err)
				}
				parts = append(parts, ct)
			}
			sum, err := he.Sum(f.params, parts)
			if err != nil {
				t.Fatal(err)
			}
			var shares [][]multiparty.PublicKeySwitchShare
			for _, n := range f.nodes {
				s, err := n.SwitchShares(sum, f.target)
				if err != nil {
					t.Fatal(err)
				}
				shares = append(shares, s)
			}
			out, err := he.Switch(f.params, sum, shares)
			if err != nil {
				t.Fatal(err)
			}
			got, err := he.Decrypt(f.params, f.researcher, out, len(plain))
			if err != nil {
				t.Fatal(err)
			}
			for i := range plain {
				// Relative error 1e-6 is far below any DP noise on these totals.
				if math.Abs(got[i]-plain[i]) > 1e-6*math.Max(1, math.Abs(plain[i])) {
					t.Fatalf("value %d: encrypted sum %f, plain sum %f", i, got[i], plain[i])
				}
			}
		})
	}
}

// TestCoordinatorCannotDecrypt: whoever lacks the nodes' shares, the
// coordinator included, learns nothing from the sum: decrypting it with
// any other key, or switching it with one node's share missing, gives noise.
func TestCoordinatorCannotDecrypt(t *testing.T) {
	f := setup(t, 3)
	v := []float64{12345, 67890, 424242}
	ct, err := he.Encrypt(f.params, f.pk, v)
	if err != nil {
		t.Fatal(err)
	}
	sum, _ := he.Sum(f.params, [][]*rlwe.Ciphertext{ct})
	coordinator := rlwe.NewKeyGenerator(f.params).GenSecretKeyNew()
	got, err := he.Decrypt(f.params, coordinator, sum, len(v))
	if err != nil {
		t.Fatal(err)
	}
	if close(got, v) {
		t.Fatal("a key without the nodes' shares decrypted the sum")
	}
	var shares [][]multiparty.PublicKeySwitchShare
	for _, n := range f.nodes[:2] { // the third node does not take part
		s, _ := n.SwitchShares(sum, f.target)
		shares = append(shares, s)
	}
	out, err := he.Switch(f.params, sum, shares)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = he.Decrypt(f.params, f.researcher, out, len(v))
	if close(got, v) {
		t.Fatal("two of three nodes' shares were enough to open the sum")
	}
}

func close(a, b []float64) bool {
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1 {
			return false
		}
	}
	return true
}

// BenchmarkFederatedSum reports, for 3 and 8 nodes and 1 to 1000 groups,
// the time of one encrypted aggregation (every node encrypting, the
// coordinator adding, every node's switch share, the switch, the
// researcher's decryption) and the bytes each node sends; and, for
// comparison, the bytes of the same aggregates sent in the clear.
func BenchmarkFederatedSum(b *testing.B) {
	for _, nodes := range []int{3, 8} {
		b.Run(fmt.Sprintf("nodes=%d/keygen", nodes), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				setup(b, nodes)
			}
		})
		f := setup(b, nodes)
		for _, groups := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("nodes=%d/groups=%d", nodes, groups), func(b *testing.B) {
				rng := rand.New(rand.NewPCG(7, 7))
				vs := make([][]float64, nodes)
				for i := range vs {
					vs[i] = values(rng, groups)
				}
				var sent int
				start := time.Now()
				for i := 0; i < b.N; i++ {
					var parts [][]*rlwe.Ciphertext
					for _, v := range vs {
						ct, err := he.Encrypt(f.params, f.pk, v)
						if err != nil {
							b.Fatal(err)
						}
						parts = append(parts, ct)
					}
					sent = he.Size(parts[0])
					sum, _ := he.Sum(f.params, parts)
					var shares [][]multiparty.PublicKeySwitchShare
					for _, n := range f.nodes {
						s, _ := n.SwitchShares(sum, f.target)
						shares = append(shares, s)
					}
					out, _ := he.Switch(f.params, sum, shares)
					if _, err := he.Decrypt(f.params, f.researcher, out, 3*groups); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(b.N), "ms/query")
				b.ReportMetric(float64(sent), "ciphertext-bytes/node")
				b.ReportMetric(float64(3*groups*8), "plaintext-bytes/node")
			})
		}
	}
}
