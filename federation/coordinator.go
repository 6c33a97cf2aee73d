package federation

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/multiparty"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"

	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/federation/he"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/sandbox"
)

// openAPI describes the coordinator's API.
//
//go:embed openapi.json
var openAPI []byte

// Member is a node as the coordinator reaches it.
type Member struct {
	Name string `yaml:"name" json:"name"`
	URL  string `yaml:"url" json:"url"` // https://host:port of its federation endpoint
}

// Researcher is a person who may ask the coordinator; ID is the person's id
// at every hospital, whose own grants decide what they may ask there.
type Researcher struct {
	ID string `yaml:"id"`
	// TokenSM3 is the SM3 hash (hex) of the researcher's bearer token.
	TokenSM3 string `yaml:"token_sm3"`
}

// CoordinatorConfig configures a coordinator.
type CoordinatorConfig struct {
	Identity    *Identity
	Nodes       []Member
	Researchers []Researcher
	// Parser is a DuckDB used only to parse SQL; it holds no data.
	Parser sandbox.Parser
	Limits privacy.Limits
	// Timeout bounds one federated query, every node's part included.
	Timeout time.Duration
	Log     *slog.Logger
}

// Coordinator accepts researchers' federated queries, checks them once,
// asks every node for its share and combines the shares. It holds no key
// share: it can add ciphertexts but open only what every node has agreed
// to re-encrypt, the sum.
type Coordinator struct {
	cfg    CoordinatorConfig
	client *http.Client
	params ckks.Parameters
	tokens map[string]string // SM3 of token -> researcher id

	mu    sync.Mutex
	round string
	// keyMu lets one key round run at a time.
	keyMu sync.Mutex
}

// NewCoordinator builds a coordinator.
func NewCoordinator(cfg CoordinatorConfig) (*Coordinator, error) {
	if cfg.Identity == nil || cfg.Parser == nil || len(cfg.Nodes) == 0 {
		return nil, fmt.Errorf("coordinator: identity, parser and nodes are required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	params, err := he.Params()
	if err != nil {
		return nil, err
	}
	c := &Coordinator{cfg: cfg, params: params, tokens: map[string]string{},
		client: &http.Client{Transport: &http.Transport{TLSClientConfig: cfg.Identity.ClientTLS(), MaxIdleConnsPerHost: 8}}}
	for _, r := range cfg.Researchers {
		c.tokens[strings.ToLower(r.TokenSM3)] = r.ID
	}
	return c, nil
}

// Close releases idle connections.
func (c *Coordinator) Close() { c.client.CloseIdleConnections() }

func (c *Coordinator) members() []string {
	var out []string
	for _, n := range c.cfg.Nodes {
		out = append(out, n.Name)
	}
	return sorted(out)
}

// fanOut calls every node at once and waits for all; the first error (in
// node order) wins.
func fanOut[T any](ctx context.Context, c *Coordinator, path string, in func(Member) any, traffic *Traffic) ([]T, error) {
	out := make([]T, len(c.cfg.Nodes))
	errs := make([]error, len(c.cfg.Nodes))
	sent := make([]int, len(c.cfg.Nodes))
	recv := make([]int, len(c.cfg.Nodes))
	var wg sync.WaitGroup
	for i, m := range c.cfg.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var body any
			if in != nil {
				body = in(m)
			}
			sent[i], recv[i], errs[i] = call(ctx, c.client, m.Name, m.URL+path, body, &out[i])
		}()
	}
	wg.Wait()
	if traffic != nil {
		for i := range c.cfg.Nodes {
			traffic.Sent += int64(sent[i])
			traffic.Received += int64(recv[i])
		}
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Traffic counts the bytes of a query's messages, both ways.
type Traffic struct {
	Sent     int64 `json:"bytes_to_nodes"`
	Received int64 `json:"bytes_from_nodes"`
}

// KeyGen runs a collective key generation round: every node draws a secret
// share and signs its public-key share; every node then checks every
// member's signature and derives the same collective public key.
func (c *Coordinator) KeyGen(ctx context.Context) (string, error) {
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		return "", fmt.Errorf("key round seed: %w", err)
	}
	round := catalog.NewID("round")
	members := c.members()
	shares, err := fanOut[Signed](ctx, c, "/federation/v1/keygen", func(Member) any {
		return keygenRequest{Round: round, Seed: seed, Members: members}
	}, nil)
	if err != nil {
		return "", err
	}
	done, err := fanOut[keygenDone](ctx, c, "/federation/v1/keygen/finish", func(Member) any {
		return keygenFinish{Round: round, Shares: shares}
	}, nil)
	if err != nil {
		return "", err
	}
	for _, d := range done[1:] {
		if d.PublicKey != done[0].PublicKey {
			return "", fmt.Errorf("key round %s: nodes derived different public keys", round)
		}
	}
	c.mu.Lock()
	c.round = round
	c.mu.Unlock()
	c.cfg.Log.Info("federation key round complete", "round", round, "nodes", len(done))
	return round, nil
}

// ensureKeys makes sure every node holds the coordinator's key round (a
// node that restarted has lost its share), running a new round if not.
func (c *Coordinator) ensureKeys(ctx context.Context) (string, error) {
	c.mu.Lock()
	round := c.round
	c.mu.Unlock()
	if round != "" {
		st, err := fanOut[nodeStatus](ctx, c, "/federation/v1/status", nil, nil)
		if err != nil {
			return "", err
		}
		if !slices.ContainsFunc(st, func(s nodeStatus) bool { return s.Round != round }) {
			return round, nil
		}
	}
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	c.mu.Lock()
	latest := c.round
	c.mu.Unlock()
	if latest != round { // another query ran a round meanwhile
		return latest, nil
	}
	return c.KeyGen(ctx)
}

// scope fetches every node's datasets and keeps those that every node holds
// under the same column policy; the grade is the highest any node gives.
func (c *Coordinator) scope(ctx context.Context) (sandbox.Scope, error) {
	all, err := fanOut[[]catalog.Dataset](ctx, c, "/federation/v1/datasets", nil, nil)
	if err != nil {
		return sandbox.Scope{}, err
	}
	var scope sandbox.Scope
	for _, d := range all[0] {
		pol, _ := json.Marshal(d.Policy)
		grade, everywhere := d.Grade, true
		for _, other := range all[1:] {
			i := slices.IndexFunc(other, func(o catalog.Dataset) bool { return o.Name == d.Name })
			if i < 0 {
				everywhere = false
				break
			}
			p, _ := json.Marshal(other[i].Policy)
			if string(p) != string(pol) {
				everywhere = false
				break
			}
			grade = policy.Highest(grade, other[i].Grade)
		}
		if !everywhere {
			continue
		}
		for _, t := range d.Policy.Tables {
			scope.Sources = append(scope.Sources, sandbox.Source{Dataset: d.Name, Grade: grade, Table: t, Policy: d.Policy})
		}
	}
	return scope, nil
}

// QueryRequest is a researcher's federated query.
type QueryRequest struct {
	SQL     string   `json:"sql"`
	Epsilon *float64 `json:"epsilon"`
	Delta   float64  `json:"delta"`
	GrantID string   `json:"grant_id"`
	// Aggregation is "homomorphic" (the default) or "plaintext".
	Aggregation privacy.Aggregation `json:"aggregation"`
}

// NodeReport is what one node spent and reported.
type NodeReport struct {
	Node        string          `json:"node"`
	NodeQueryID string          `json:"node_query_id"`
	GrantID     string          `json:"grant_id"`
	Cost        privacy.Cost    `json:"cost"`
	Budget      catalog.Balance `json:"budget"`
}

// FederationReport says how an answer was put together.
type FederationReport struct {
	Aggregation privacy.Aggregation `json:"aggregation"`
	Round       string              `json:"key_round,omitempty"`
	Nodes       []NodeReport        `json:"nodes"`
	Traffic     Traffic             `json:"traffic"`
	// CiphertextBytes is the size of one node's encrypted share.
	CiphertextBytes int `json:"ciphertext_bytes_per_node,omitempty"`
}

// Answer is a federated query's protected answer.
type Answer struct {
	QueryID string       `json:"query_id"`
	Grade   policy.Grade `json:"grade"`
	// The protected columns, rows and privacy report, as on one gateway.
	privacy.Answer
	Federation FederationReport `json:"federation"`
}

// Query answers req for researcher: one analysis here, one governed share
// from every node, the sum opened only as a whole. Any node's refusal or
// failure fails the whole query with that node's reason: no partial total
// is ever released. Budgets that other nodes had already reserved stay
// spent (fail closed), as on a single gateway.
func (c *Coordinator) Query(ctx context.Context, researcher string, req QueryRequest) (*Answer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	if req.Aggregation == "" {
		req.Aggregation = privacy.Homomorphic
	}
	scope, err := c.scope(ctx)
	if err != nil {
		return nil, err
	}
	q, err := sandbox.Analyze(ctx, c.cfg.Parser, req.SQL, scope)
	if err != nil {
		return nil, err
	}
	// The coordinator's plan lays out and combines the shares; each node
	// makes the same plan under its own rules (epsilon caps, k) and says
	// which k it applies. A query no federation can answer is refused here,
	// before any node spends budget.
	limits := c.cfg.Limits
	limits.MaxEpsilon = math.MaxFloat64 // each node applies its own cap
	probe := privacy.Cost{Epsilon: 1, Delta: req.Delta}
	if req.Epsilon != nil {
		probe.Epsilon = *req.Epsilon
	}
	members := c.members()
	if _, err := privacy.NewFederatedPlan(q, probe, limits, len(members), req.Aggregation); err != nil {
		return nil, err
	}
	var round string
	if req.Aggregation == privacy.Homomorphic {
		if round, err = c.ensureKeys(ctx); err != nil {
			return nil, err
		}
	}
	ans := &Answer{QueryID: catalog.NewID("fqry"), Grade: q.Grade,
		Federation: FederationReport{Aggregation: req.Aggregation, Round: round}}
	shares, err := fanOut[shareResponse](ctx, c, "/federation/v1/queries", func(Member) any {
		return shareRequest{QueryID: ans.QueryID, Researcher: researcher, SQL: req.SQL, Epsilon: req.Epsilon, Delta: req.Delta,
			GrantID: req.GrantID, Aggregation: req.Aggregation, Members: members, Round: round}
	}, &ans.Federation.Traffic)
	if err != nil {
		return nil, err
	}
	// The nodes used their grants' defaults when no epsilon was given; they
	// agree, or the layouts below differ.
	plan, err := privacy.NewFederatedPlan(q, shares[0].Cost, limits, len(members), req.Aggregation)
	if err != nil {
		return nil, err
	}
	for _, s := range shares {
		if s.Layout != plan.Layout() {
			return nil, fault.E(fault.Conflict, "node %s planned the query differently (its policy, rules or the grant's default epsilon differ); no answer is released", s.Node)
		}
		plan.K = max(plan.K, s.K)
		ans.Federation.Nodes = append(ans.Federation.Nodes, NodeReport{Node: s.Node, NodeQueryID: s.NodeQueryID, GrantID: s.GrantID, Cost: s.Cost, Budget: s.Budget})
	}

	var sum []float64
	if req.Aggregation == privacy.Plaintext {
		sum = make([]float64, plan.Width())
		for _, s := range shares {
			if len(s.Values) != len(sum) {
				return nil, fault.E(fault.Unavailable, "node %s sent %d values, want %d", s.Node, len(s.Values), len(sum))
			}
			for i, v := range s.Values {
				sum[i] += v
			}
		}
	} else {
		parts := make([]Signed, len(shares))
		for i, s := range shares {
			if s.Encrypted == nil {
				return nil, fault.E(fault.Unavailable, "node %s sent no ciphertexts", s.Node)
			}
			parts[i] = *s.Encrypted
		}
		if sum, err = c.openSum(ctx, ans.QueryID, round, parts, plan.Width(), &ans.Federation); err != nil {
			return nil, err
		}
	}
	a, err := plan.Combine(sum)
	if err != nil {
		return nil, err
	}
	ans.Answer = *a
	c.cfg.Log.Info("federated query answered", "query_id", ans.QueryID, "researcher", researcher, "aggregation", req.Aggregation,
		"nodes", len(shares), "groups", len(ans.Rows), "suppressed", ans.Privacy.SuppressedGroups)
	return ans, nil
}

// openSum adds the nodes' ciphertexts, has every node re-encrypt the sum
// towards a key pair that lives only in this call, and decrypts it. Before
// the nodes' switch shares are combined, nothing the coordinator holds can
// be opened with that key.
func (c *Coordinator) openSum(ctx context.Context, queryID, round string, parts []Signed, width int, rep *FederationReport) ([]float64, error) {
	var cts [][]*rlwe.Ciphertext
	for _, p := range parts {
		ct, err := unmarshalCiphertexts(p.Blobs)
		if err != nil {
			return nil, fault.Wrap(fault.Unavailable, err, "ciphertexts of %s are unreadable", p.Node)
		}
		cts = append(cts, ct)
		rep.CiphertextBytes = he.Size(ct)
	}
	sum, err := he.Sum(c.params, cts)
	if err != nil {
		return nil, fault.Wrap(fault.Unavailable, err, "cannot add the nodes' ciphertexts")
	}
	sk, pk := rlwe.NewKeyGenerator(c.params).GenKeyPairNew()
	target, err := pk.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode session key: %w", err)
	}
	resp, err := fanOut[switchResponse](ctx, c, "/federation/v1/switch", func(Member) any {
		return switchRequest{QueryID: queryID, Round: round, Target: target, Parts: parts}
	}, &rep.Traffic)
	if err != nil {
		return nil, err
	}
	var shares [][]multiparty.PublicKeySwitchShare
	for _, r := range resp {
		var node []multiparty.PublicKeySwitchShare
		for _, b := range r.Shares {
			var s multiparty.PublicKeySwitchShare
			if err := s.UnmarshalBinary(b); err != nil {
				return nil, fault.Wrap(fault.Unavailable, err, "switch share of %s is unreadable", r.Node)
			}
			node = append(node, s)
		}
		shares = append(shares, node)
	}
	switched, err := he.Switch(c.params, sum, shares)
	if err != nil {
		return nil, fault.Wrap(fault.Unavailable, err, "cannot combine the switch shares")
	}
	return he.Decrypt(c.params, sk, switched, width)
}

// Handler serves researchers: POST /v1/queries, GET /v1/federation.
func (c *Coordinator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("POST /v1/queries", c.authenticated(func(w http.ResponseWriter, r *http.Request, researcher string) {
		var req QueryRequest
		if err := readJSON(r, &req); err != nil {
			writeError(w, fault.E(fault.Invalid, "the body must be JSON like {\"sql\": \"SELECT ...\", \"epsilon\": 0.5, \"aggregation\": \"homomorphic\"}"))
			return
		}
		ans, err := c.Query(r.Context(), researcher, req)
		if err != nil {
			if fault.KindOf(err) == fault.Internal {
				c.cfg.Log.Error("federated query failed", "researcher", researcher, "err", err)
			}
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, ans)
	}))
	mux.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPI)
	})
	mux.HandleFunc("GET /v1/federation", c.authenticated(func(w http.ResponseWriter, r *http.Request, _ string) {
		c.mu.Lock()
		round := c.round
		c.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"nodes": c.cfg.Nodes, "key_round": round})
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, fault.E(fault.NotFound, "no such endpoint %s %s", r.Method, r.URL.Path))
	})
	return http.MaxBytesHandler(mux, 1<<20)
}

func (c *Coordinator) authenticated(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		id, known := c.tokens[catalog.HashToken(strings.TrimSpace(token))]
		if !ok || !known {
			writeError(w, fault.E(fault.Unauthenticated, "send Authorization: Bearer TOKEN with a coordinator token"))
			return
		}
		h(w, r, id)
	}
}
