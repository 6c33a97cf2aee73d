package federation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/multiparty"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"

	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/federation/he"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/release"
)

// Querier is the hospital's own gateway, which answers a node's part of a
// query under its own governance (release.Service).
type Querier interface {
	Share(ctx context.Context, q release.FederatedQuery) (*release.FederatedShare, error)
	Datasets(ctx context.Context) ([]catalog.Dataset, error)
}

// NodeConfig configures a node.
type NodeConfig struct {
	Identity *Identity
	// Members names every node of the federation, this one included. A
	// node takes part only in rounds and queries over exactly this set,
	// which fixes the noise each share carries.
	Members []string
	// Coordinator is the only client name the node answers.
	Coordinator string
	Querier     Querier
	Log         *slog.Logger
}

// Node is one hospital's federation endpoint.
type Node struct {
	cfg    NodeConfig
	params ckks.Parameters

	mu      sync.Mutex
	pending map[string]*pendingRound
	round   string
	key     *he.Node
	pk      *rlwe.PublicKey
	queries map[string]*sentShare
}

type pendingRound struct {
	key   *he.Node
	kg    *he.KeyGen
	share []byte
	at    time.Time
}

// sentShare is what the node remembers of an encrypted share it sent: its
// digest, so that it re-encrypts only a sum that contains it, and whether
// it has done so already.
type sentShare struct {
	round    string
	digest   [32]byte
	switched bool
	at       time.Time
}

// queryMemory is how long a node keeps a query's share for the switch.
const queryMemory = 10 * time.Minute

// NewNode builds a node.
func NewNode(cfg NodeConfig) (*Node, error) {
	if cfg.Identity == nil || cfg.Querier == nil || cfg.Coordinator == "" {
		return nil, fmt.Errorf("node: identity, querier and coordinator are required")
	}
	if !slices.Contains(cfg.Members, cfg.Identity.Name) {
		return nil, fmt.Errorf("node %s is not among the members %v", cfg.Identity.Name, cfg.Members)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	params, err := he.Params()
	if err != nil {
		return nil, err
	}
	cfg.Members = sorted(cfg.Members)
	return &Node{cfg: cfg, params: params, pending: map[string]*pendingRound{}, queries: map[string]*sentShare{}}, nil
}

func sorted(names []string) []string {
	out := slices.Clone(names)
	slices.Sort(out)
	return slices.Compact(out)
}

// Handler serves the node's endpoints; it must sit behind ServerTLS.
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /federation/v1/status", n.status)
	mux.HandleFunc("GET /federation/v1/datasets", n.datasets)
	mux.HandleFunc("POST /federation/v1/keygen", handle(n.keygen))
	mux.HandleFunc("POST /federation/v1/keygen/finish", handle(n.keygenFinish))
	mux.HandleFunc("POST /federation/v1/queries", handle(n.share))
	mux.HandleFunc("POST /federation/v1/switch", handle(n.keySwitch))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != n.cfg.Coordinator {
			writeError(w, fault.E(fault.Forbidden, "only the coordinator %s may call this node", n.cfg.Coordinator))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxMessage)
		mux.ServeHTTP(w, r)
	})
}

// handle decodes a request body into In, runs f, and answers its result or
// its error.
func handle[In any](f func(ctx context.Context, in In) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in In
		if err := readJSON(r, &in); err != nil {
			writeError(w, err)
			return
		}
		out, err := f(r.Context(), in)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

func (n *Node) checkMembers(members []string) error {
	if !slices.Equal(sorted(members), n.cfg.Members) || len(members) != len(n.cfg.Members) {
		return fault.E(fault.Forbidden, "node %s takes part only with the members %v, not %v", n.cfg.Identity.Name, n.cfg.Members, members)
	}
	return nil
}

func (n *Node) status(w http.ResponseWriter, r *http.Request) {
	n.mu.Lock()
	defer n.mu.Unlock()
	writeJSON(w, http.StatusOK, nodeStatus{Node: n.cfg.Identity.Name, Round: n.round, Members: n.cfg.Members})
}

func (n *Node) datasets(w http.ResponseWriter, r *http.Request) {
	ds, err := n.cfg.Querier.Datasets(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ds)
}

// keygen draws a fresh secret share for a round and answers the node's
// signed public-key share.
func (n *Node) keygen(ctx context.Context, req keygenRequest) (any, error) {
	if err := n.checkMembers(req.Members); err != nil {
		return nil, err
	}
	if req.Round == "" || len(req.Seed) < 16 {
		return nil, fault.E(fault.Invalid, "a key round needs a name and a seed of at least 16 bytes")
	}
	kg, err := he.NewKeyGen(n.params, req.Seed)
	if err != nil {
		return nil, err
	}
	key := he.NewNode(n.params)
	share := kg.Share(key)
	b, err := share.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode key share: %w", err)
	}
	signed, err := n.cfg.Identity.Sign("keygen", req.Round, [][]byte{b})
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	for r, p := range n.pending {
		if time.Since(p.at) > queryMemory { // an abandoned round
			delete(n.pending, r)
		}
	}
	n.pending[req.Round] = &pendingRound{key: key, kg: kg, share: b, at: time.Now()}
	n.mu.Unlock()
	return signed, nil
}

// keygenFinish checks every member's signed share and derives the
// collective public key. A coordinator cannot slip in a key of its own: the
// node adds up only shares signed by each member, its own among them.
func (n *Node) keygenFinish(ctx context.Context, req keygenFinish) (any, error) {
	n.mu.Lock()
	p := n.pending[req.Round]
	n.mu.Unlock()
	if p == nil {
		return nil, fault.E(fault.Conflict, "no key round %q is pending at %s", req.Round, n.cfg.Identity.Name)
	}
	blobs, err := n.verifyAll("keygen", req.Round, req.Shares)
	if err != nil {
		return nil, err
	}
	if string(blobs[n.cfg.Identity.Name][0]) != string(p.share) {
		return nil, fault.E(fault.Forbidden, "the round's share of %s is not the one it sent", n.cfg.Identity.Name)
	}
	var shares []multiparty.PublicKeyGenShare
	for _, m := range n.cfg.Members {
		var s multiparty.PublicKeyGenShare
		if err := s.UnmarshalBinary(blobs[m][0]); err != nil {
			return nil, fault.Wrap(fault.Invalid, err, "key share of %s is unreadable", m)
		}
		shares = append(shares, s)
	}
	pk := p.kg.PublicKey(shares)
	b, err := pk.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	sum := sha256.Sum256(b)
	n.mu.Lock()
	n.round, n.key, n.pk = req.Round, p.key, pk
	delete(n.pending, req.Round)
	n.mu.Unlock()
	n.cfg.Log.Info("federation key round complete", "round", req.Round, "members", len(shares))
	return keygenDone{Node: n.cfg.Identity.Name, PublicKey: hex.EncodeToString(sum[:])}, nil
}

// verifyAll checks that parts hold exactly one validly signed message from
// each member, and returns their blobs by member.
func (n *Node) verifyAll(kind, about string, parts []Signed) (map[string][][]byte, error) {
	out := map[string][][]byte{}
	for _, s := range parts {
		if !slices.Contains(n.cfg.Members, s.Node) {
			return nil, fault.E(fault.Forbidden, "%s is not a member of this federation", s.Node)
		}
		if _, dup := out[s.Node]; dup {
			return nil, fault.E(fault.Forbidden, "%s appears twice", s.Node)
		}
		if err := n.cfg.Identity.Verify(kind, about, s); err != nil {
			return nil, fault.Wrap(fault.Forbidden, err, "refused: %v", err)
		}
		if len(s.Blobs) == 0 {
			return nil, fault.E(fault.Invalid, "%s of %s is empty", kind, s.Node)
		}
		out[s.Node] = s.Blobs
	}
	if len(out) != len(n.cfg.Members) {
		return nil, fault.E(fault.Forbidden, "%d of %d members' %s given; a node adds only complete sets", len(out), len(n.cfg.Members), kind)
	}
	return out, nil
}

// share runs the hospital's part of a query and answers its share.
func (n *Node) share(ctx context.Context, req shareRequest) (any, error) {
	if err := n.checkMembers(req.Members); err != nil {
		return nil, err
	}
	n.mu.Lock()
	round, pk := n.round, n.pk
	_, seen := n.queries[req.QueryID]
	n.mu.Unlock()
	if seen {
		return nil, fault.E(fault.Conflict, "query %s was already answered", req.QueryID)
	}
	if req.Aggregation == privacy.Homomorphic && (round == "" || round != req.Round) {
		// Refused before any budget is spent: the coordinator runs a new
		// key round and asks again.
		return nil, fault.E(fault.Conflict, "this node holds key round %q, not %q", round, req.Round)
	}
	sh, err := n.cfg.Querier.Share(ctx, release.FederatedQuery{
		QueryID: req.QueryID, Coordinator: n.cfg.Coordinator, Researcher: req.Researcher, SQL: req.SQL,
		Epsilon: req.Epsilon, Delta: req.Delta, GrantID: req.GrantID, Nodes: len(n.cfg.Members), Aggregation: req.Aggregation,
	})
	if err != nil {
		return nil, err
	}
	resp := shareResponse{Node: n.cfg.Identity.Name, NodeQueryID: sh.QueryID, GrantID: sh.GrantID, Layout: sh.Layout,
		K: sh.K, Cost: sh.Cost, Budget: sh.Budget}
	if req.Aggregation != privacy.Homomorphic {
		resp.Values = sh.Values
		return resp, nil
	}
	cts, err := he.Encrypt(n.params, pk, sh.Values)
	if err != nil {
		return nil, err
	}
	blobs, err := marshalAll(cts)
	if err != nil {
		return nil, err
	}
	signed, err := n.cfg.Identity.Sign("ciphertexts", req.QueryID, blobs)
	if err != nil {
		return nil, err
	}
	n.remember(req.QueryID, &sentShare{round: round, digest: sha256.Sum256(digest("ciphertexts", req.QueryID, n.cfg.Identity.Name, blobs)), at: time.Now()})
	resp.Encrypted = &signed
	return resp, nil
}

func (n *Node) remember(id string, s *sentShare) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, q := range n.queries {
		if time.Since(q.at) > queryMemory {
			delete(n.queries, k)
		}
	}
	n.queries[id] = s
}

// keySwitch re-encrypts the sum of every member's ciphertexts for a query
// towards the target key, once. The node adds the parts up itself, after
// checking each member's signature and that its own part is the one it
// sent, so that the coordinator can never have one hospital's share
// decrypted on its own.
func (n *Node) keySwitch(ctx context.Context, req switchRequest) (any, error) {
	n.mu.Lock()
	sent, key := n.queries[req.QueryID], n.key
	ready := sent != nil && !sent.switched && sent.round == req.Round && n.round == req.Round
	n.mu.Unlock()
	if !ready {
		return nil, fault.E(fault.Conflict, "no encrypted share of query %s awaits a key switch in round %q", req.QueryID, req.Round)
	}
	blobs, err := n.verifyAll("ciphertexts", req.QueryID, req.Parts)
	if err != nil {
		return nil, err
	}
	if sha256.Sum256(digest("ciphertexts", req.QueryID, n.cfg.Identity.Name, blobs[n.cfg.Identity.Name])) != sent.digest {
		return nil, fault.E(fault.Forbidden, "the part of %s is not the share it sent", n.cfg.Identity.Name)
	}
	n.mu.Lock()
	already := sent.switched
	sent.switched = true // a verified sum is switched once, whatever follows
	n.mu.Unlock()
	if already {
		return nil, fault.E(fault.Conflict, "query %s was already switched", req.QueryID)
	}
	var parts [][]*rlwe.Ciphertext
	for _, m := range n.cfg.Members {
		cts, err := unmarshalCiphertexts(blobs[m])
		if err != nil {
			return nil, fault.Wrap(fault.Invalid, err, "ciphertexts of %s are unreadable", m)
		}
		parts = append(parts, cts)
	}
	sum, err := he.Sum(n.params, parts)
	if err != nil {
		return nil, fault.Wrap(fault.Invalid, err, "cannot add the parts")
	}
	target := rlwe.NewPublicKey(n.params)
	if err := target.UnmarshalBinary(req.Target); err != nil {
		return nil, fault.Wrap(fault.Invalid, err, "the target key is unreadable")
	}
	shares, err := key.SwitchShares(sum, target)
	if err != nil {
		return nil, err
	}
	resp := switchResponse{Node: n.cfg.Identity.Name}
	for _, s := range shares {
		b, err := s.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("encode switch share: %w", err)
		}
		resp.Shares = append(resp.Shares, b)
	}
	return resp, nil
}

func marshalAll(cts []*rlwe.Ciphertext) ([][]byte, error) {
	var out [][]byte
	for _, ct := range cts {
		b, err := ct.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("encode ciphertext: %w", err)
		}
		out = append(out, b)
	}
	return out, nil
}

func unmarshalCiphertexts(blobs [][]byte) ([]*rlwe.Ciphertext, error) {
	var out []*rlwe.Ciphertext
	for _, b := range blobs {
		ct := new(rlwe.Ciphertext)
		if err := ct.UnmarshalBinary(b); err != nil {
			return nil, err
		}
		out = append(out, ct)
	}
	return out, nil
}
