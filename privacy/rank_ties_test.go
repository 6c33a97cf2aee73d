package privacy_test

import (
	"context"
	"testing"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/sandbox"
)

// TestFilteredRankKeepsRankedRows: a filtered query keeps, of each
// patient, the rows the filter lets through among their first m in rank
// order. Ranks are capped at engine.MaxRank, so a patient with more rows
// shares the cap among the rest; m is always below it, so what the patient
// keeps is a function of their rows and the key, the same on every run and
// with or without other patients, never DuckDB's choice among ties.
func TestFilteredRankKeepsRankedRows(t *testing.T) {
	ctx := context.Background()
	e := engineWith(t, engine.Config{MemoryLimit: "1GB", Threads: 2},
		"CREATE SCHEMA s",
		// Patient 1 has 70,000 visits, 1,000 of them flagged, some ranked
		// at the cap; 19,998 others have 5 flagged visits each.
		"CREATE TABLE s.visits AS SELECT 1::BIGINT AS patient_id, i::DOUBLE AS cost, i % 70 = 0 AS flag FROM range(70000) t(i) UNION ALL SELECT p, i, true FROM range(2, 20000) a(p), range(5) b(i)")
	if err := e.RankRows(ctx, "s", "visits", "patient_id"); err != nil {
		t.Fatal(err)
	}
	lo, hi := 0.0, 100000.0
	pol := policy.Policy{Tables: []policy.Table{{Name: "visits", Columns: []policy.Column{
		{Name: "patient_id", Role: policy.Unit},
		{Name: "cost", Role: policy.Attribute, Min: &lo, Max: &hi},
		{Name: "flag", Type: "BOOLEAN", Role: policy.Attribute},
	}}}, Contribution: policy.Contribution{MaxGroups: 1, MaxRows: 950}, K: 2, SpecialK: 2, SpecialShare: 1}
	scope := sandbox.Scope{Sources: []sandbox.Source{{Dataset: "s", Grade: policy.General, Table: pol.Tables[0], Policy: pol}}}
	q, err := sandbox.Analyze(ctx, e, "SELECT count(*) AS n, sum(cost) AS s FROM visits WHERE flag", scope)
	if err != nil {
		t.Fatal(err)
	}
	rankIfAsked(t, e, q)
	plan, err := privacy.NewPlan(q, privacy.Cost{Epsilon: 1}, privacy.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !boundedByRank(plan.SQL) {
		t.Fatalf("not bounded by rank:\n%s", plan.SQL)
	}
	// Patient 1 keeps their flagged rows among their first 950, and none
	// of the tied ones.
	want, err := e.Query(ctx, "SELECT count(*), sum(cost) FROM s.visits WHERE flag AND __rank <= 950", 1)
	if err != nil {
		t.Fatal(err)
	}
	for range 6 {
		res, col := run(t, e, plan)
		n, sum := res.Rows[0][col["__c0"]].(int64), res.Rows[0][col["__s1"]].(float64)
		if n != want.Rows[0][0].(int64) || sum != want.Rows[0][1].(float64) {
			t.Fatalf("kept %d rows summing to %g, want the %v flagged rows of rank at most 950 summing to %v", n, sum, want.Rows[0][0], want.Rows[0][1])
		}
	}
}
