package api_test

import (
	"math"
	"testing"

	"github.com/hospital/gateway/api/apitest"
)

// TestRefusalsAndTheLedger: a refusal decided before any data is read
// (the analysis, a quota line already crossed) spends nothing and writes
// no history line; a release refused by the quota after its data was read
// (it would cross the line) stays charged and is in the history as
// charged_not_released with the refusal's code. The auditor's ledger adds
// up: the history's epsilons sum to the grant's epsilon_sum, its rho to
// rho_spent, and epsilon_spent is what the accountant charges.
func TestRefusalsAndTheLedger(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 2000})
	ask := func(sql string) (int, string) {
		status, _, e := query(t, env, "researcher", sql, 0.1)
		return status, e.Error.Code
	}
	if status, code := ask("SELECT sex, count(*) FROM patients WHERE age < 12 GROUP BY sex"); status != 200 {
		t.Fatalf("first: %d %s", status, code)
	}
	if status, code := ask("SELECT name, count(*) FROM patients GROUP BY name"); code != "query_rejected" {
		t.Fatalf("analysis: %d %s", status, code)
	}
	if status, code := ask("SELECT count(*) FROM patients WHERE age >= 12"); code != "quota_exceeded" {
		t.Fatalf("crossing the line: %d %s", status, code)
	}
	if status, code := ask("SELECT count(*) FROM patients WHERE age = 5"); code != "quota_exceeded" {
		t.Fatalf("after the line: %d %s", status, code)
	}

	var budgets struct {
		Budgets []struct {
			GrantID        string  `json:"grant_id"`
			EpsilonSpent   float64 `json:"epsilon_spent"`
			EpsilonSum     float64 `json:"epsilon_sum"`
			RhoSpent       float64 `json:"rho_spent"`
			DeltaTotal     float64 `json:"delta_total"`
			Accounting     string  `json:"accounting"`
			EpsilonSpentBy string  `json:"epsilon_spent_by"`
		} `json:"budgets"`
	}
	if status, err := env.Do("GET", "/v1/budgets", "researcher", nil, &budgets); status != 200 || err != nil || len(budgets.Budgets) != 1 {
		t.Fatalf("budgets: %d %v %+v", status, err, budgets)
	}
	b := budgets.Budgets[0]
	// Two charges: the first release and the one the quota refused after
	// reading its data; nothing for the two refused before.
	if b.EpsilonSum != 0.2 || b.EpsilonSpent != 0.2 || b.EpsilonSpentBy != "sum" || b.Accounting != "zcdp" || b.DeltaTotal != 2e-5 {
		t.Errorf("budget %+v", b)
	}
	var hist struct {
		EpsilonSpent float64 `json:"epsilon_spent"`
		EpsilonSum   float64 `json:"epsilon_sum"`
		RhoSpent     float64 `json:"rho_spent"`
		Accounting   string  `json:"accounting"`
		Queries      []struct {
			Epsilon           float64 `json:"epsilon"`
			Rho               float64 `json:"rho"`
			DeltaPartition    float64 `json:"delta_partition"`
			Outcome           string  `json:"outcome"`
			Refusal           string  `json:"refusal"`
			EpsilonCumulative float64 `json:"epsilon_cumulative"`
			RhoCumulative     float64 `json:"rho_cumulative"`
			EpsilonSpentAfter float64 `json:"epsilon_spent_after"`
		} `json:"queries"`
	}
	if status, err := env.Do("GET", "/v1/grants/"+b.GrantID+"/history", "auditor", nil, &hist); status != 200 || err != nil {
		t.Fatalf("history: %d %v", status, err)
	}
	if len(hist.Queries) != 2 {
		t.Fatalf("history %+v", hist.Queries)
	}
	if q := hist.Queries[0]; q.Outcome != "ok" || q.Epsilon != 0.1 || q.Rho <= 0 || q.DeltaPartition != 1e-8 {
		t.Errorf("first line %+v", q)
	}
	if q := hist.Queries[1]; q.Outcome != "charged_not_released" || q.Refusal != "quota_exceeded" || q.Epsilon != 0.1 {
		t.Errorf("refused line %+v", q)
	}
	sum, rho := 0.0, 0.0
	for _, q := range hist.Queries {
		sum += q.Epsilon
		rho += q.Rho
	}
	last := hist.Queries[len(hist.Queries)-1]
	if math.Abs(sum-hist.EpsilonSum) > 1e-12 || last.EpsilonCumulative != hist.EpsilonSum || hist.EpsilonSum != b.EpsilonSum ||
		math.Abs(rho-hist.RhoSpent) > 1e-12 || last.RhoCumulative != hist.RhoSpent || last.EpsilonSpentAfter != hist.EpsilonSpent || hist.Accounting != "zcdp" {
		t.Errorf("the ledger does not add up: %+v", hist)
	}
}
