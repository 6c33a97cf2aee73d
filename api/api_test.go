package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hospital/gateway/api/apitest"
)

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

type answer struct {
	QueryID string `json:"query_id"`
	GrantID string `json:"grant_id"`
	Columns []struct {
		Name string `json:"name"`
		Type string `json:"type"`
	} `json:"columns"`
	Rows    [][]any `json:"rows"`
	Cached  bool    `json:"cached"`
	Privacy struct {
		Mechanism          string  `json:"mechanism"`
		Epsilon            float64 `json:"epsilon"`
		Delta              float64 `json:"delta"`
		K                  int     `json:"k"`
		SuppressedGroups   int     `json:"suppressed_groups"`
		PartitionSelection bool    `json:"partition_selection"`
		Columns            map[string]struct {
			NoiseScale float64 `json:"noise_scale"`
			CI95       float64 `json:"ci95"`
		} `json:"columns"`
	} `json:"privacy"`
	Budget struct {
		EpsilonSpent     float64 `json:"epsilon_spent"`
		EpsilonRemaining float64 `json:"epsilon_remaining"`
	} `json:"budget"`
}

func query(t *testing.T, env *apitest.Env, who, sql string, eps float64) (int, answer, errorBody) {
	t.Helper()
	var raw map[string]any
	body := map[string]any{"sql": sql}
	if eps > 0 {
		body["epsilon"] = eps
	}
	var a answer
	var e errorBody
	status, err := env.Do("POST", "/v1/queries", who, body, &raw)
	if err != nil {
		t.Fatal(err)
	}
	if status == http.StatusOK {
		mustRemarshal(t, raw, &a)
	} else {
		mustRemarshal(t, raw, &e)
	}
	return status, a, e
}

func mustRemarshal(t *testing.T, in, out any) {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
}

// eachStore runs fn against the SQLite store and, when GATEWAY_TEST_POSTGRES
// names a database, against PostgreSQL too.
func eachStore(t *testing.T, fn func(t *testing.T, metadata func(t *testing.T) string)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, func(*testing.T) string { return "" }) })
	if dsn := os.Getenv("GATEWAY_TEST_POSTGRES"); dsn != "" {
		t.Run("postgres", func(t *testing.T) { fn(t, func(t *testing.T) string { return apitest.PostgresSchema(t, dsn) }) })
	}
}

func TestQueryEndToEnd(t *testing.T) {
	eachStore(t, testQueryEndToEnd)
}

func testQueryEndToEnd(t *testing.T, metadata func(*testing.T) string) {
	env := apitest.New(t, apitest.Options{Patients: 3000, Metadata: metadata(t)})
	status, a, e := query(t, env, "researcher_internal", "SELECT sex, count(*) AS n FROM patients GROUP BY sex", 0.1)
	if status != http.StatusOK {
		t.Fatalf("status %d: %+v", status, e)
	}
	if len(a.Rows) != 2 || a.Rows[0][0] != "F" || a.Rows[1][0] != "M" {
		t.Fatalf("rows %v", a.Rows)
	}
	total := a.Rows[0][1].(float64) + a.Rows[1][1].(float64)
	if math.Abs(total-3000) > 200 { // noise scale 10 per cell; 200 is 14 scales
		t.Errorf("noisy total %v is far from 3000", total)
	}
	if a.Columns[1].Name != "n" || a.Columns[1].Type != "BIGINT" || a.Privacy.Mechanism != "laplace" || a.Privacy.K != 10 {
		t.Errorf("answer %+v", a)
	}
	if c := a.Privacy.Columns["n"]; c.NoiseScale != 10 || math.Abs(c.CI95-29.96) > 0.01 {
		t.Errorf("noise %+v", c)
	}
	if math.Abs(a.Budget.EpsilonSpent-0.1) > 1e-9 || math.Abs(a.Budget.EpsilonRemaining-2.9) > 1e-9 {
		t.Errorf("budget %+v", a.Budget)
	}

	// The identical question is answered from storage at no cost.
	_, again, _ := query(t, env, "researcher_internal", "select SEX, COUNT(*) as n from patients group by sex", 0.1)
	if !again.Cached || fmt.Sprint(again.Rows) != fmt.Sprint(a.Rows) || math.Abs(again.Budget.EpsilonSpent-0.1) > 1e-9 {
		t.Errorf("repeat: cached %v rows %v spent %v", again.Cached, again.Rows, again.Budget.EpsilonSpent)
	}
}

func TestAggregatesAndJoins(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 5000})
	cases := []struct {
		name, sql string
		cols      int
	}{
		{"join sum avg", "SELECT p.sex, sum(e.cost_yuan) AS cost, avg(e.length_of_stay_days) AS los FROM encounters e JOIN patients p ON e.patient_id = p.patient_id GROUP BY p.sex", 3},
		{"quantiles", "SELECT median(age) AS med, quantile_cont(age, 0.9) AS p90 FROM patients", 2},
		{"department public", "SELECT department, count(*) AS n, count(DISTINCT patient_id) AS patients FROM encounters GROUP BY department ORDER BY n DESC LIMIT 3", 3},
		{"variance", "SELECT var_samp(age) AS v, stddev_pop(age) AS s FROM patients", 2},
		{"non-public key", "SELECT substr(diagnosis_icd10, 1, 1) AS chapter, count(*) AS n FROM encounters GROUP BY chapter", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, a, e := query(t, env, "researcher_internal", tc.sql, 0.05)
			if status != http.StatusOK {
				t.Fatalf("status %d: %+v", status, e)
			}
			if len(a.Columns) != tc.cols {
				t.Fatalf("columns %v", a.Columns)
			}
			for _, r := range a.Rows {
				for _, v := range r {
					if v == nil {
						t.Errorf("null cell in %v", r)
					}
				}
			}
		})
	}
	_, a, _ := query(t, env, "researcher_internal", "SELECT department, count(*) AS n FROM encounters GROUP BY department ORDER BY n DESC LIMIT 3", 0.3)
	if len(a.Rows) != 3 || a.Rows[0][1].(float64) < a.Rows[1][1].(float64) {
		t.Errorf("order and limit not applied: %v", a.Rows)
	}
	// Protected statistics land near the true ones (computed here with
	// raw DuckDB, which only tests may do).
	truth, err := env.Engine.Query(context.Background(), "SELECT median(age), avg(age), stddev_samp(age) FROM demo_hospital.patients", 1)
	if err != nil {
		t.Fatal(err)
	}
	// Per-encounter counts after contribution bounding add up to what the
	// bound keeps, computed here from the hidden rank: with a bound of 10
	// rows per patient, each patient's first 10 encounters. The
	// noise of twelve counts adds up to a few of its scales. This catches
	// a plan that loses or invents rows.
	kept, err := env.Engine.Query(context.Background(), "SELECT department, count(*) FROM demo_hospital.encounters WHERE __rank <= 10 GROUP BY department", 100)
	if err != nil {
		t.Fatal(err)
	}
	keptBy := map[any]float64{}
	for _, r := range kept.Rows {
		keptBy[r[0]] = number(r[1])
	}
	var d answer
	if status, err := env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{
		"sql": "SELECT department, count(*) AS n FROM encounters GROUP BY department", "epsilon": 0.9, "contribution_bound": 10}, &d); err != nil || status != 200 {
		t.Fatalf("bounded counts: %d %v", status, err)
	}
	total, want := 0.0, 0.0
	for _, r := range d.Rows {
		total += r[1].(float64)
		want += keptBy[r[0]]
	}
	// The sum of len(d.Rows) Laplace draws of this scale has a standard
	// deviation of scale*sqrt(2*rows); allow four of them.
	slack := 4 * d.Privacy.Columns["n"].NoiseScale * math.Sqrt(2*float64(len(d.Rows)))
	if len(d.Rows) < 10 || math.Abs(total-want) > slack {
		t.Errorf("%d bounded department counts add up to %.0f, the bound keeps %.0f of their rows, noise allowance %.0f", len(d.Rows), total, want, slack)
	}
	st, m, me := query(t, env, "researcher_internal", "SELECT median(age) AS med, avg(age) AS mean, stddev(age) AS sd FROM patients", 0.9)
	if st != 200 || len(m.Rows) != 1 {
		t.Fatalf("moments: %d %+v %+v", st, me, m)
	}
	// Within a few years, or within the column's own 95% interval when
	// the noise makes that wider (a miss then has a chance of 5%, not more).
	for i, tol := range []float64{3, 1, 1} {
		got, want := m.Rows[0][i].(float64), truth.Rows[0][i].(float64)
		tol = math.Max(tol, 1.5*m.Privacy.Columns[m.Columns[i].Name].CI95)
		if math.Abs(got-want) > tol {
			t.Errorf("%s: protected %.2f, true %.2f, allowed %.2f", m.Columns[i].Name, got, want, tol)
		}
	}
}

func TestRefusalsKeepServing(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 1000, Timeout: 2 * time.Second})
	cases := []struct {
		name, who, sql string
		status         int
		code           string
	}{
		{"no token", "", "SELECT count(*) FROM patients", 401, "unauthenticated"},
		{"bad token", "gw_nope", "SELECT count(*) FROM patients", 401, "unauthenticated"},
		{"steward has no data rights", "steward", "SELECT count(*) FROM patients", 403, "forbidden"},
		{"admin has no data rights", "admin", "SELECT count(*) FROM patients", 403, "forbidden"},
		{"overseas on core data", "researcher_overseas", "SELECT count(*) FROM patients", 403, "forbidden"},
		{"file read", "researcher", "SELECT count(*) FROM read_csv('/etc/passwd')", 400, "query_rejected"},
		{"copy", "researcher", "COPY patients TO '/tmp/out.csv'", 400, "query_rejected"},
		{"identifier", "researcher", "SELECT phone, count(*) FROM patients GROUP BY phone", 400, "query_rejected"},
		{"raw rows", "researcher", "SELECT age FROM patients", 400, "query_rejected"},
		{"unknown column", "researcher", "SELECT count(*) FROM patients WHERE nope = 1", 400, "query_rejected"},
		{"type error", "researcher", "SELECT count(*) FROM patients WHERE year(sex) = 2020", 400, "query_rejected"},
		{"epsilon over the cap", "researcher", "SELECT count(*) FROM patients", 400, "query_rejected"},
		{"self join of a multi-row table", "researcher_internal", "SELECT count(*) FROM encounters a JOIN encounters b ON a.patient_id = b.patient_id JOIN encounters c ON b.patient_id = c.patient_id JOIN encounters d ON c.patient_id = d.patient_id JOIN encounters f ON d.patient_id = f.patient_id", 400, "query_rejected"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eps := 0.01
			if tc.name == "epsilon over the cap" {
				eps = 50
			}
			status, _, e := query(t, env, tc.who, tc.sql, eps)
			if status != tc.status || e.Error.Code != tc.code || e.Error.Message == "" {
				t.Fatalf("got %d %+v, want %d %s", status, e, tc.status, tc.code)
			}
		})
	}
	var bad errorBody
	status, _ := env.Do("POST", "/v1/queries", "researcher", "not an object", &bad)
	if status != 400 || bad.Error.Code != "invalid_request" {
		t.Errorf("malformed body: %d %+v", status, bad)
	}
	big := map[string]any{"sql": "SELECT count(*) FROM patients WHERE province = '" + strings.Repeat("x", 2<<20) + "'"}
	status, _ = env.Do("POST", "/v1/queries", "researcher", big, &bad)
	if status != 413 || bad.Error.Code != "request_too_large" {
		t.Errorf("oversized body: %d %+v", status, bad)
	}
	// Still serving, and no budget was spent on any refusal.
	status, a, e := query(t, env, "researcher_internal", "SELECT count(*) AS n FROM patients", 0.1)
	if status != 200 {
		t.Fatalf("after refusals: %d %+v", status, e)
	}
	if math.Abs(a.Budget.EpsilonSpent-0.1) > 1e-9 {
		t.Errorf("spent %v, want 0.1 (refusals spend nothing)", a.Budget.EpsilonSpent)
	}
}

func TestBudgetExhaustedAndRevocation(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 1000, Epsilon: 0.5})
	for i := 0; i < 5; i++ {
		status, _, e := query(t, env, "researcher_internal", fmt.Sprintf("SELECT count(*) AS n FROM patients WHERE age > %d", i), 0.1)
		if status != 200 {
			t.Fatalf("query %d: %d %+v", i, status, e)
		}
	}
	status, _, e := query(t, env, "researcher_internal", "SELECT count(*) AS n FROM patients WHERE age > 90", 0.1)
	if status != 403 || e.Error.Code != "budget_exhausted" {
		t.Fatalf("sixth query: %d %+v", status, e)
	}
	var budgets struct {
		Budgets []struct {
			GrantID, Researcher, Dataset string
			EpsilonTotal                 float64 `json:"epsilon_total"`
			EpsilonSpent                 float64 `json:"epsilon_spent"`
		} `json:"budgets"`
	}
	if status, err := env.Do("GET", "/v1/budgets", "auditor", nil, &budgets); err != nil || status != 200 || len(budgets.Budgets) != 3 {
		t.Fatalf("auditor budgets: %d %v %+v", status, err, budgets)
	}
	if status, err := env.Do("GET", "/v1/budgets", "researcher", nil, &budgets); err != nil || status != 200 || len(budgets.Budgets) != 1 {
		t.Fatalf("researcher budgets: %d %v %+v", status, err, budgets)
	}
	// Revocation takes effect on the very next request.
	if status, _, e := query(t, env, "researcher", "SELECT count(*) FROM patients WHERE age = 40", 0.1); status != 200 {
		t.Fatalf("before revocation: %d %+v", status, e)
	}
	var mine struct {
		Budgets []struct {
			GrantID string `json:"grant_id"`
		} `json:"budgets"`
	}
	env.Do("GET", "/v1/budgets", "researcher", nil, &mine)
	if status, _ := env.Do("POST", "/v1/grants/"+mine.Budgets[0].GrantID+"/revoke", "steward", nil, nil); status != 200 {
		t.Fatalf("revoke: %d", status)
	}
	status, _, e = query(t, env, "researcher", "SELECT count(*) FROM patients WHERE age = 41", 0.1)
	if status != 403 || e.Error.Code != "forbidden" {
		t.Fatalf("after revocation: %d %+v", status, e)
	}
}

// TestConcurrentQueriesNeverOverspend sends 50 concurrent distinct queries
// against a budget with room for 5.
func TestConcurrentQueriesNeverOverspend(t *testing.T) {
	eachStore(t, testConcurrentQueriesNeverOverspend)
}

func testConcurrentQueriesNeverOverspend(t *testing.T, metadata func(*testing.T) string) {
	env := apitest.New(t, apitest.Options{Patients: 1000, Epsilon: 0.5, Metadata: metadata(t)})
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out map[string]any
			status, err := env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{
				"sql": fmt.Sprintf("SELECT count(*) FROM patients WHERE age > %d", i), "epsilon": 0.1}, &out)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			codes[status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[200] != 5 || codes[403] != 45 {
		t.Fatalf("status counts %v; want 5 answers and 45 budget_exhausted", codes)
	}
}

func TestGovernanceFlow(t *testing.T) {
	eachStore(t, testGovernanceFlow)
}

func testGovernanceFlow(t *testing.T, metadata func(*testing.T) string) {
	env := apitest.New(t, apitest.Options{Patients: 500, Metadata: metadata(t)})
	var created struct{ ID, State string }
	status, err := env.Do("POST", "/v1/access-requests", "researcher", map[string]any{
		"datasets": []string{"demo_hospital"}, "purpose": "diabetes cost study", "epsilon": 1.0,
		"expires_at": time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)}, &created)
	if err != nil || status != 201 || created.State != "pending" {
		t.Fatalf("create: %d %v %+v", status, err, created)
	}
	var e errorBody
	if status, _ := env.Do("POST", "/v1/access-requests/"+created.ID+"/verify", "approver", nil, &e); status != 409 {
		t.Fatalf("verify before approve: %d %+v", status, e)
	}
	if status, _ := env.Do("POST", "/v1/access-requests/"+created.ID+"/approve", "researcher", nil, &e); status != 403 {
		t.Fatalf("researcher approving: %d", status)
	}
	var st struct {
		State   string `json:"state"`
		GrantID string `json:"grant_id"`
	}
	if status, _ := env.Do("POST", "/v1/access-requests/"+created.ID+"/approve", "steward", nil, &st); status != 200 || st.State != "approved" {
		t.Fatalf("approve: %d %+v", status, st)
	}
	if status, _ := env.Do("POST", "/v1/access-requests/"+created.ID+"/verify", "approver", nil, &st); status != 200 || st.State != "granted" || st.GrantID == "" {
		t.Fatalf("verify: %d %+v", status, st)
	}
	// Two live grants now: the query must name one.
	status, _, e = query(t, env, "researcher", "SELECT count(*) FROM patients", 0.1)
	if status != 400 || !strings.Contains(e.Error.Message, "grant_id") {
		t.Fatalf("ambiguous grant: %d %+v", status, e)
	}
	var a map[string]any
	status, _ = env.Do("POST", "/v1/queries", "researcher", map[string]any{"sql": "SELECT count(*) FROM patients WHERE age = 30", "grant_id": st.GrantID, "epsilon": 0.1}, &a)
	if status != 200 || a["grant_id"] != st.GrantID {
		t.Fatalf("named grant: %d %v", status, a)
	}
	var reject struct{ ID, State string }
	env.Do("POST", "/v1/access-requests", "researcher", map[string]any{
		"datasets": []string{"demo_hospital"}, "purpose": "x", "epsilon": 1.0,
		"expires_at": time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)}, &reject)
	if status, _ := env.Do("POST", "/v1/access-requests/"+reject.ID+"/reject", "approver", map[string]string{"reason": "purpose too vague"}, &st); status != 200 || st.State != "rejected" {
		t.Fatalf("reject: %d %+v", status, st)
	}
	var ds struct {
		Datasets []map[string]any `json:"datasets"`
	}
	if status, _ := env.Do("GET", "/v1/datasets", "researcher", nil, &ds); status != 200 || len(ds.Datasets) != 1 || ds.Datasets[0]["grade"] != "core" {
		t.Fatalf("datasets: %d %+v", status, ds)
	}
}

func TestQuotaMeasured(t *testing.T) {
	eachStore(t, testQuotaMeasured)
}

func testQuotaMeasured(t *testing.T, metadata func(*testing.T) string) {
	env := apitest.New(t, apitest.Options{Patients: 2000, Metadata: metadata(t)})
	// Internal use is recorded but does not count.
	if status, _, e := query(t, env, "researcher_internal", "SELECT count(*) FROM patients", 0.1); status != 200 {
		t.Fatalf("%d %+v", status, e)
	}
	var q struct {
		StaticTotal int64   `json:"static_total"`
		Provided    int64   `json:"provided"`
		Ratio       float64 `json:"ratio"`
		Threshold   float64 `json:"threshold"`
		State       string  `json:"state"`
	}
	env.Do("GET", "/v1/quota?dataset=demo_hospital", "auditor", nil, &q)
	if q.StaticTotal != 2000 || q.Provided != 0 || q.State != "ok" || q.Threshold != 0.3 {
		t.Fatalf("after internal use: %+v", q)
	}
	// 10% of patients (ages 0..) provided to another legal entity.
	if status, _, e := query(t, env, "researcher", "SELECT sex, count(*) FROM patients WHERE age < 12 GROUP BY sex", 0.1); status != 200 {
		t.Fatalf("%d %+v", status, e)
	}
	env.Do("GET", "/v1/quota?dataset=demo_hospital", "auditor", nil, &q)
	if q.Provided == 0 || q.Provided >= 600 {
		t.Fatalf("after external use: %+v", q)
	}
	// A release that would reach 30% is refused, and so is everything after.
	status, _, e := query(t, env, "researcher", "SELECT count(*) FROM patients WHERE age >= 12", 0.1)
	if status != 403 || e.Error.Code != "quota_exceeded" {
		t.Fatalf("over the line: %d %+v", status, e)
	}
	status, _, e = query(t, env, "researcher", "SELECT count(*) FROM patients WHERE age = 5", 0.1)
	if status != 403 || e.Error.Code != "quota_exceeded" {
		t.Fatalf("after the line: %d %+v", status, e)
	}
	env.Do("GET", "/v1/quota?dataset=demo_hospital", "auditor", nil, &q)
	if q.State != "blocked" {
		t.Fatalf("state %+v", q)
	}
	// Internal use goes on.
	if status, _, e := query(t, env, "researcher_internal", "SELECT count(*) FROM patients WHERE age >= 12", 0.1); status != 200 {
		t.Fatalf("internal after the line: %d %+v", status, e)
	}
	// An approved risk assessment raises the line.
	if status, _ := env.Do("POST", "/v1/quota/risk-assessments", "approver", map[string]any{"dataset": "demo_hospital", "threshold": 0.9, "reference": "RA-2026-001"}, &q); status != 200 || q.State == "blocked" {
		t.Fatalf("assessment: %d %+v", status, q)
	}
	if status, _, e := query(t, env, "researcher", "SELECT count(*) FROM patients WHERE age >= 50", 0.1); status != 200 {
		t.Fatalf("after assessment: %d %+v", status, e)
	}
}
