package federation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/tuneinsight/lattigo/v6/core/rlwe"

	"github.com/hospital/gateway/demo"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/federation"
	"github.com/hospital/gateway/federation/fedtest"
	"github.com/hospital/gateway/federation/he"
	"github.com/hospital/gateway/privacy"
)

type answer struct {
	federation.Answer
	Error struct{ Code, Message string } `json:"error"`
}

func ask(t *testing.T, c *fedtest.Cluster, researcher string, body map[string]any) (int, answer) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", c.URL+"/v1/queries", bytes.NewReader(b))
	if tok, ok := c.Tokens[researcher]; ok {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var a answer
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return resp.StatusCode, a
}

// pooledTruth runs sql on every hospital's own DuckDB and adds up the
// second column per first-column key: the exact answer no one may see.
func pooledTruth(t *testing.T, c *fedtest.Cluster, sql string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, h := range c.Hospitals {
		res, err := h.Engine.Query(context.Background(), sql, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res.Rows {
			out[fmt.Sprint(r[0])] += toFloat(r[1])
		}
	}
	return out
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case int64:
		return float64(x)
	case float64:
		return x
	}
	panic(fmt.Sprintf("%T", v))
}

// TestEncryptedEqualsPlaintext asks three hospitals the same question with
// homomorphic and with plaintext aggregation, and checks both against the
// exact pooled answer within the noise each declares (5 sigma: a correct
// mechanism fails with probability below 1e-5 per value), and that the
// encrypted answer carries sqrt(3) times less noise.
//
// With GATEWAY_TEST_POSTGRES set (CI sets it), the first hospital keeps its
// grants, budgets and audit log in PostgreSQL.
func TestEncryptedEqualsPlaintext(t *testing.T) {
	c := fedtest.Start(t, fedtest.Options{Nodes: 3, Patients: 3000, Postgres: os.Getenv("GATEWAY_TEST_POSTGRES")})
	truth := pooledTruth(t, c, "SELECT sex, count(*) FROM demo_hospital.patients GROUP BY sex")
	sql := "SELECT sex, count(*) AS n FROM patients GROUP BY sex"
	scales := map[privacy.Aggregation]float64{}
	for _, agg := range []privacy.Aggregation{privacy.Homomorphic, privacy.Plaintext} {
		status, a := ask(t, c, "researcher_internal", map[string]any{"sql": sql, "epsilon": 0.5, "aggregation": agg})
		if status != 200 {
			t.Fatalf("%s: %d %+v", agg, status, a.Error)
		}
		sigma := a.Privacy.Columns["n"].NoiseScale
		scales[agg] = sigma
		if len(a.Rows) != 2 || a.Privacy.Mechanism != privacy.Gaussian || a.Privacy.Delta != privacy.FederatedDelta ||
			a.Federation.Aggregation != agg || len(a.Federation.Nodes) != 3 {
			t.Fatalf("%s: answer %+v", agg, a.Answer)
		}
		for _, r := range a.Rows {
			got, want := toFloat(r[1]), truth[r[0].(string)]
			if math.Abs(got-want) > 5*sigma {
				t.Errorf("%s: %v count %g, pooled truth %g, sigma %g", agg, r[0], got, want, sigma)
			}
		}
		for _, n := range a.Federation.Nodes {
			// The plain sum of what the node was charged; the
			// accountant's epsilon_spent is less for Gaussian queries.
			if n.Cost.Epsilon != 0.5 || n.Budget.EpsilonSum < 0.5 || n.Budget.EpsilonSpent <= 0 || n.Budget.EpsilonSpent > n.Budget.EpsilonSum {
				t.Errorf("%s: node %s spent %+v, balance %+v", agg, n.Node, n.Cost, n.Budget)
			}
		}
	}
	if r := scales[privacy.Plaintext] / scales[privacy.Homomorphic]; math.Abs(r-math.Sqrt(3)) > 1e-6 {
		t.Errorf("plaintext noise / encrypted noise = %g, want sqrt(3)", r)
	}

	// Encounters: rows bounded per patient, averages, padded departments.
	status, a := ask(t, c, "researcher_internal", map[string]any{
		"sql": "SELECT department, count(*) AS n, avg(length_of_stay_days) AS los FROM encounters GROUP BY department", "epsilon": 1})
	if status != 200 || len(a.Rows)+a.Privacy.SuppressedGroups != len(demoDepartments(t)) {
		t.Fatalf("departments: %d %+v %+v", status, a.Error, a.Answer)
	}
	for _, r := range a.Rows {
		if los := toFloat(r[2]); los < 0 || los > 60 {
			t.Errorf("average stay %g outside the declared bounds", los)
		}
	}
}

func demoDepartments(t *testing.T) []string {
	for _, tb := range demo.Policy().Tables {
		for _, col := range tb.Columns {
			if col.Name == "department" {
				return col.Public
			}
		}
	}
	t.Fatal("no department column")
	return nil
}

// TestRefusals: what the coordinator or a node refuses, each with its code,
// and the federation keeps answering.
func TestRefusals(t *testing.T) {
	c := fedtest.Start(t, fedtest.Options{Nodes: 3, Patients: 1500})
	cases := []struct {
		name       string
		researcher string
		body       map[string]any
		status     int
		code       string
		mention    string
	}{
		{"no token", "", map[string]any{"sql": "SELECT sex, count(*) FROM patients GROUP BY sex"}, 401, "unauthenticated", ""},
		{"identifier", "researcher_internal", map[string]any{"sql": "SELECT name, count(*) FROM patients GROUP BY name"}, 400, "query_rejected", "identifier"},
		{"group key without public list", "researcher_internal", map[string]any{"sql": "SELECT diagnosis_icd10, count(*) FROM encounters GROUP BY diagnosis_icd10"}, 400, "query_rejected", "public category list"},
		{"quantile", "researcher_internal", map[string]any{"sql": "SELECT sex, median(age) FROM patients GROUP BY sex"}, 400, "query_rejected", "quantiles"},
		{"file read", "researcher_internal", map[string]any{"sql": "SELECT count(*) FROM read_csv('/etc/passwd')"}, 400, "query_rejected", ""},
		{"epsilon above a node's cap", "researcher_internal", map[string]any{"sql": "SELECT sex, count(*) FROM patients GROUP BY sex", "epsilon": 50}, 400, "query_rejected", "hospital-1"},
		{"the hospitals' Article 11 line", "researcher", map[string]any{"sql": "SELECT sex, count(*) FROM patients GROUP BY sex"}, 403, "quota_exceeded", "node hospital-"},
		{"unknown aggregation", "researcher_internal", map[string]any{"sql": "SELECT sex, count(*) FROM patients GROUP BY sex", "aggregation": "secret"}, 400, "invalid_request", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, a := ask(t, c, tc.researcher, tc.body)
			if status != tc.status || a.Error.Code != tc.code || !strings.Contains(a.Error.Message, tc.mention) {
				t.Fatalf("got %d %+v, want %d %s mentioning %q", status, a.Error, tc.status, tc.code, tc.mention)
			}
		})
	}
	// The coordinator describes its API.
	resp, err := http.Get(c.URL + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Paths map[string]any }
	json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	for _, p := range []string{"/v1/queries", "/v1/federation"} {
		if doc.Paths[p] == nil {
			t.Errorf("openapi.json lacks %s", p)
		}
	}

	// Nothing refused above reached a node's budget.
	for i, h := range c.Hospitals {
		g, err := h.Store.Grants(context.Background(), "researcher_internal")
		if err != nil || len(g) != 1 || g[0].EpsilonSpent != 0 {
			t.Errorf("hospital %d: grants %+v, err %v: a refused query spent budget", i+1, g, err)
		}
	}

	// A hospital revokes the grant: its refusal fails the whole query.
	g, _ := c.Hospitals[1].Store.Grants(context.Background(), "researcher_internal")
	if _, err := c.Hospitals[1].Store.Revoke(context.Background(), g[0].ID, nil); err != nil {
		t.Fatal(err)
	}
	status, a := ask(t, c, "researcher_internal", map[string]any{"sql": "SELECT sex, count(*) FROM patients GROUP BY sex"})
	if status != 403 || a.Error.Code != "forbidden" || !strings.Contains(a.Error.Message, "hospital-2") {
		t.Fatalf("revoked at hospital-2: %d %+v", status, a.Error)
	}
}

// TestNodeDown: a hospital that goes down before or in the middle of a
// query fails it with node_unavailable naming the hospital; no total is
// released, and once it is back the federation answers again.
func TestNodeDown(t *testing.T) {
	c := fedtest.Start(t, fedtest.Options{Nodes: 3, Patients: 1500})
	q := map[string]any{"sql": "SELECT province, count(*) AS n FROM patients GROUP BY province", "epsilon": 0.2}
	if status, a := ask(t, c, "researcher_internal", q); status != 200 {
		t.Fatalf("%d %+v", status, a.Error)
	}
	for _, path := range []string{"*", "/federation/v1/queries", "/federation/v1/switch"} {
		c.Drop(2, path)
		status, a := ask(t, c, "researcher_internal", q)
		if status != 503 || a.Error.Code != "node_unavailable" || !strings.Contains(a.Error.Message, "hospital-3") || a.Rows != nil {
			t.Errorf("hospital-3 dropping %s: %d %+v rows %v", path, status, a.Error, a.Rows)
		}
		c.Drop(2, "")
	}
	if status, a := ask(t, c, "researcher_internal", q); status != 200 || len(a.Rows) == 0 {
		t.Fatalf("after recovery: %d %+v", status, a.Error)
	}
}

// TestCoordinatorCannotOpenShares plays a coordinator that tries to read
// what it holds: it cannot decrypt the encrypted shares or their sum with
// any key of its own, and the nodes refuse to re-encrypt anything but the
// complete sum of every member's signed share, once.
func TestCoordinatorCannotOpenShares(t *testing.T) {
	c := fedtest.Start(t, fedtest.Options{Nodes: 3, Patients: 1500})
	ctx := context.Background()
	// A first query runs the key round.
	if status, a := ask(t, c, "researcher_internal", map[string]any{"sql": "SELECT sex, count(*) AS n FROM patients GROUP BY sex"}); status != 200 {
		t.Fatalf("%d %+v", status, a.Error)
	}
	client, round := c.Coordinator.HTTPClient(), c.Coordinator.Round()
	urls := map[string]string{}
	for i, n := range c.Names {
		urls[n] = "https://" + c.Addr(i).String()
	}
	req := federation.ShareRequest{QueryID: "fqry_probe", Researcher: "researcher_internal", SQL: "SELECT sex, count(*) AS n FROM patients GROUP BY sex",
		Aggregation: privacy.Homomorphic, Members: c.Names, Round: round}
	var parts []federation.Signed
	for _, n := range c.Names {
		var resp federation.ShareResponse
		if _, _, err := federation.Call(ctx, client, n, urls[n]+"/federation/v1/queries", req, &resp); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, *resp.Encrypted)
	}
	params, err := he.Params()
	if err != nil {
		t.Fatal(err)
	}
	// Its own keys open nothing: the values decrypt to noise, far from
	// the counts (hundreds) the shares hold.
	cts := make([][]*rlwe.Ciphertext, len(parts))
	for i, p := range parts {
		for _, b := range p.Blobs {
			ct := new(rlwe.Ciphertext)
			if err := ct.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			cts[i] = append(cts[i], ct)
		}
	}
	sum, err := he.Sum(params, cts)
	if err != nil {
		t.Fatal(err)
	}
	sk, pk := rlwe.NewKeyGenerator(params).GenKeyPairNew()
	vals, err := he.Decrypt(params, sk, sum, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vals {
		if math.Abs(v) < 1e6 {
			t.Errorf("the coordinator's key decrypted a plausible value %g", v)
		}
	}

	target, _ := pk.MarshalBinary()
	forged := parts[0]
	forged.Blobs = parts[1].Blobs // hospital-2's ciphertexts passed off as hospital-1's
	refusals := []struct {
		name  string
		parts []federation.Signed
		code  string
	}{
		{"one hospital's share alone", parts[:1], "forbidden"},
		{"a share twice instead of a third", []federation.Signed{parts[0], parts[1], parts[1]}, "forbidden"},
		{"a forged part", []federation.Signed{forged, parts[1], parts[2]}, "forbidden"},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			var out federation.SwitchResponse
			_, _, err := federation.Call(ctx, client, "hospital-3", urls["hospital-3"]+"/federation/v1/switch",
				federation.SwitchRequest{QueryID: req.QueryID, Round: round, Target: target, Parts: r.parts}, &out)
			if fault.KindOf(err).Code() != r.code {
				t.Fatalf("switch of %s: %v, want %s", r.name, err, r.code)
			}
		})
	}
	// The complete sum is switched, once per node and query.
	sw := federation.SwitchRequest{QueryID: req.QueryID, Round: round, Target: target, Parts: parts}
	var out federation.SwitchResponse
	if _, _, err := federation.Call(ctx, client, "hospital-1", urls["hospital-1"]+"/federation/v1/switch", sw, &out); err != nil {
		t.Fatalf("complete sum: %v", err)
	}
	if _, _, err := federation.Call(ctx, client, "hospital-1", urls["hospital-1"]+"/federation/v1/switch", sw, &out); !fault.Is(err, fault.Conflict) {
		t.Fatalf("second switch of the same query: %v, want conflict", err)
	}
	// A member list other than the federation's would change the noise
	// each share carries: refused.
	bad := req
	bad.QueryID, bad.Members = "fqry_small", c.Names[:2]
	var resp federation.ShareResponse
	if _, _, err := federation.Call(ctx, client, "hospital-1", urls["hospital-1"]+"/federation/v1/queries", bad, &resp); !fault.Is(err, fault.Forbidden) {
		t.Fatalf("two-member request: %v, want forbidden", err)
	}
}

// TestConcurrentQueries sends homomorphic queries from several clients at
// once to a federation that has no key yet: one key round serves them all,
// and every query is answered.
func TestConcurrentQueries(t *testing.T) {
	c := fedtest.Start(t, fedtest.Options{Nodes: 3, Patients: 1000})
	const clients = 6
	errs := make(chan error, clients)
	for i := range clients {
		go func() {
			body := map[string]any{"sql": fmt.Sprintf("SELECT sex, count(*) AS n FROM patients WHERE age >= %d GROUP BY sex", i), "epsilon": 0.1}
			b, _ := json.Marshal(body)
			req, _ := http.NewRequest("POST", c.URL+"/v1/queries", bytes.NewReader(b))
			req.Header.Set("Authorization", "Bearer "+c.Tokens["researcher_internal"])
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				raw, _ := io.ReadAll(resp.Body)
				errs <- fmt.Errorf("query %d: %d %s", i, resp.StatusCode, raw)
				return
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
