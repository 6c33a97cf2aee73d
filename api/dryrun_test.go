package api_test

import (
	"fmt"
	"testing"

	"github.com/hospital/gateway/api/apitest"
)

// TestDryRun: a dry run answers the cost and the expected noise of each
// column from the plan alone, with no rows, and spends nothing; the same
// query then spends what the dry run said, with the noise it said.
func TestDryRun(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 500})
	sql := "SELECT sex, count(*) AS n, avg(age) AS a FROM patients GROUP BY sex"
	var est map[string]any
	if status, err := env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": sql, "epsilon": 0.3, "dry_run": true}, &est); err != nil || status != 200 {
		t.Fatalf("%d %v %v", status, err, est)
	}
	if est["dry_run"] != true || est["rows"] != nil {
		t.Fatalf("estimate %v", est)
	}
	cost := est["cost"].(map[string]any)
	cols := est["privacy"].(map[string]any)["columns"].(map[string]any)
	n := cols["n"].(map[string]any)
	if cost["epsilon"] != 0.3 || n["noise_scale"].(float64) <= 0 || n["ci95"].(float64) <= 0 {
		t.Fatalf("cost %v columns %v", cost, cols)
	}
	if b := est["budget"].(map[string]any); b["epsilon_spent"] != 0.0 {
		t.Errorf("a dry run spent %v", b)
	}
	var a map[string]any
	if status, err := env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": sql, "epsilon": 0.3}, &a); err != nil || status != 200 {
		t.Fatalf("%d %v %v", status, err, a)
	}
	got := a["privacy"].(map[string]any)["columns"].(map[string]any)["n"].(map[string]any)
	if got["noise_scale"] != n["noise_scale"] || a["budget"].(map[string]any)["epsilon_spent"] != 0.3 {
		t.Errorf("the answer's noise %v and spend %v differ from the estimate %v", got, a["budget"], n)
	}
	// Refusals are the same as for the query itself, and free.
	if status, _ := env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": "SELECT name, count(*) FROM patients GROUP BY name", "dry_run": true}, &est); status != 400 {
		t.Errorf("a dry run of a refused query answered %d", status)
	}
}

// TestDryRunsLeaveNoTrace: dry runs, accepted and refused, many and fast,
// leave the budgets, the grant's history and the alerts as they were: a
// dry run is not a query, so it is not counted as probing or as a burst.
func TestDryRunsLeaveNoTrace(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 500})
	snapshot := func() (budgets, history, alerts string) {
		var b struct {
			Budgets []map[string]any `json:"budgets"`
		}
		if status, err := env.Do("GET", "/v1/budgets", "auditor", nil, &b); err != nil || status != 200 {
			t.Fatalf("budgets: %d %v", status, err)
		}
		var h, a any
		for _, g := range b.Budgets {
			if g["researcher"] == "researcher_internal" {
				if status, err := env.Do("GET", "/v1/grants/"+g["grant_id"].(string)+"/history", "auditor", nil, &h); err != nil || status != 200 {
					t.Fatalf("history: %d %v", status, err)
				}
			}
		}
		if status, err := env.Do("GET", "/v1/alerts", "auditor", nil, &a); err != nil || status != 200 {
			t.Fatalf("alerts: %d %v", status, err)
		}
		return fmt.Sprint(b.Budgets), fmt.Sprint(h), fmt.Sprint(a)
	}
	b0, h0, a0 := snapshot()
	for i := range 30 {
		sql := fmt.Sprintf("SELECT sex, count(*) AS n FROM patients WHERE age > %d GROUP BY sex", i)
		if i%2 == 1 {
			sql = "SELECT name, count(*) FROM patients GROUP BY name" // refused
		}
		env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": sql, "epsilon": 0.2, "dry_run": true}, nil)
	}
	b1, h1, a1 := snapshot()
	if b0 != b1 {
		t.Errorf("budgets moved:\n%s\n%s", b0, b1)
	}
	if h0 != h1 {
		t.Errorf("history moved:\n%s\n%s", h0, h1)
	}
	if a0 != a1 {
		t.Errorf("alerts moved:\n%s\n%s", a0, a1)
	}
}
