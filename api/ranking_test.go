package api_test

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/hospital/gateway/api/apitest"
	"github.com/hospital/gateway/demo"
)

// TestFirstQueryDoesNotWaitForRanks: on a gateway whose encounters are not
// ranked yet (just loaded, the ranking under way), a query that bounds
// them is answered at once, by the plan that needs no rank, with the
// policy's maximum bound and the noise that goes with it, close to the
// truth; once the ranks exist, queries use them and choose the bound.
func TestFirstQueryDoesNotWaitForRanks(t *testing.T) {
	// Enough patients that the per-group plan at the policy's maximum (a
	// patient in up to 12 departments) releases every department.
	env := apitest.New(t, apitest.Options{Patients: 20000, Epsilon: 100, Unranked: true})
	ctx := context.Background()
	const sql = "SELECT department, count(*) AS n FROM encounters GROUP BY department"
	ask := func(eps float64) map[string]any {
		t.Helper()
		var out map[string]any
		status, err := env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": sql, "epsilon": eps}, &out)
		if err != nil || status != 200 {
			t.Fatalf("query: %d %v %v", status, err, out)
		}
		return out
	}
	contribution := func(a map[string]any) map[string]any {
		c, _ := a["privacy"].(map[string]any)["contribution"].(map[string]any)
		return c
	}

	first := ask(0.9)
	c := contribution(first)
	if c["chosen_by"] != "policy" || c["bound"] != c["max"] {
		t.Errorf("first query, before the ranks: contribution %v, want the policy's maximum", c)
	}
	truth := map[string]float64{}
	exact, err := env.Engine.Query(ctx, "SELECT department, count(*) FROM demo_hospital.encounters GROUP BY department", 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range exact.Rows {
		truth[fmt.Sprint(r[0])] = float64(r[1].(int64))
	}
	ci := first["privacy"].(map[string]any)["columns"].(map[string]any)["n"].(map[string]any)["ci95"].(float64)
	rows := first["rows"].([]any)
	if len(rows) == 0 {
		t.Fatal("the first answer released no group")
	}
	for _, r := range rows {
		r := r.([]any)
		// A patient adds at most the bound to a group, and no patient of
		// the demo has more encounters than the maximum: the answer is
		// the truth plus noise, well within 3 times its 95% interval.
		if got, want := r[1].(float64), truth[fmt.Sprint(r[0])]; math.Abs(got-want) > 3*ci {
			t.Errorf("%v: released %.0f, true %.0f, ci95 %.1f", r[0], got, want, ci)
		}
	}

	// The first query started the ranking; once done, queries use it.
	if err := env.Engine.RankRows(ctx, demo.Dataset, "encounters", "patient_id"); err != nil {
		t.Fatal(err)
	}
	if c := contribution(ask(0.91)); c["chosen_by"] != "dp_quantile" {
		t.Errorf("after the ranks: contribution %v, want the bound chosen from the ranked counts", c)
	}
}
