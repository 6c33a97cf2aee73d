package api_test

import (
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
