package privacy_test

import (
	"testing"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/sandbox"
)

// TestNullValuesAddNothing: a row whose aggregated value is NULL adds
// nothing to a sum or a mean (and is not counted), as in SQL; clamping must
// not turn it into the lower bound.
func TestNullValuesAddNothing(t *testing.T) {
	e := engineWith(t, engine.Config{MemoryLimit: "512MB", Threads: 1},
		"CREATE SCHEMA s",
		// 20 patients aged 50, 10 of unknown age, one visit each of 50
		// yuan or of no recorded cost.
		"CREATE TABLE s.people AS SELECT i::BIGINT AS patient_id, CASE WHEN i < 20 THEN 50 END AS age FROM range(30) t(i)",
		"CREATE TABLE s.visits AS SELECT i::BIGINT AS patient_id, CASE WHEN i < 20 THEN 50.0 END AS cost FROM range(30) t(i)")
	lo, hi := 10.0, 90.0
	pol := policy.Policy{Tables: []policy.Table{
		{Name: "people", OneRowPerUnit: true, Columns: []policy.Column{{Name: "patient_id", Role: policy.Unit}, {Name: "age", Role: policy.Attribute, Min: &lo, Max: &hi}}},
		{Name: "visits", Columns: []policy.Column{{Name: "patient_id", Role: policy.Unit}, {Name: "cost", Role: policy.Attribute, Min: &lo, Max: &hi}}},
	}, Contribution: policy.Contribution{MaxGroups: 1, MaxRows: 2}, K: 2, SpecialK: 2, SpecialShare: 1}
	var scope sandbox.Scope
	for _, tb := range pol.Tables {
		scope.Sources = append(scope.Sources, sandbox.Source{Dataset: "s", Grade: policy.General, Table: tb, Policy: pol})
	}
	for _, sql := range []string{
		"SELECT avg(age) AS a, sum(age) AS s FROM people",
		"SELECT avg(cost) AS a, sum(cost) AS s FROM visits",
	} {
		plan := planFor(t, e, sql, scope, privacy.Cost{Epsilon: 1})
		res, col := run(t, e, plan)
		r := res.Rows[0]
		// The mean's sum is centred on the bounds' middle, 50.
		if n, s := r[col["__c0"]].(int64), r[col["__s0"]].(float64); n != 20 || s != 0 {
			t.Errorf("%s: mean over %d rows, centred sum %g; want 20 rows and 0\n%s", sql, n, s, plan.SQL)
		}
		if s := r[col["__s1"]].(float64); s != 1000 {
			t.Errorf("%s: sum %g, want 1000\n%s", sql, s, plan.SQL)
		}
	}
}
