package privacy_test

// A join on privacy units of different types (a VARCHAR unit in a
// one-row-per-patient table, a BIGINT unit in a table of several rows per
// patient) would have DuckDB cast the VARCHAR side, so that '7' and '07'
// (two distinct units of the one-row table, which passes the
// one_row_per_unit check) both join every row of patient 7 of the other
// table: that patient's rows would reach the aggregation twice, under two
// __pu, and move a count by twice the declared Linf. The sandbox refuses
// it, from the types registration records in the policy.

import (
	"context"
	"strings"
	"testing"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/sandbox"
)

func unitTypesHospital(t *testing.T, without bool) *engine.Engine {
	t.Helper()
	ctx := context.Background()
	stmts := []string{
		"CREATE SCHEMA s",
		// people: VARCHAR ids '1'..'30', and '07', a distinct unit string.
		"CREATE TABLE s.people AS SELECT range::VARCHAR AS patient_id, CASE WHEN range % 2 = 0 THEN 'F' ELSE 'M' END AS sex FROM range(1, 31) UNION ALL SELECT '07', 'M'",
		// visits: BIGINT ids, patient 7 has 10 visits, the others 1.
		"CREATE TABLE s.visits AS SELECT range::BIGINT AS patient_id, 100 AS cost FROM range(1, 31) UNION ALL SELECT 7, 100 FROM range(9)",
	}
	if without { // the neighbour: no patient 7 (unit 7 in every table)
		stmts = append(stmts, "DELETE FROM s.visits WHERE patient_id = 7", "DELETE FROM s.people WHERE patient_id = '7'")
	}
	e := engineWith(t, engine.Config{MemoryLimit: "256MB", Threads: 1}, stmts...)
	if err := e.RankRows(ctx, "s", "visits", "patient_id"); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestUnitsOfDifferentTypesAreRefused(t *testing.T) {
	ctx := context.Background()
	lo, hi := 0.0, 1000.0
	pol := policy.Policy{
		Tables: []policy.Table{
			{Name: "people", OneRowPerUnit: true, Columns: []policy.Column{
				{Name: "patient_id", Type: "VARCHAR", Role: policy.Unit},
				{Name: "sex", Role: policy.QuasiIdentifier, Public: []string{"F", "M"}},
			}},
			{Name: "visits", Columns: []policy.Column{
				{Name: "patient_id", Type: "BIGINT", Role: policy.Unit},
				{Name: "cost", Role: policy.Attribute, Min: &lo, Max: &hi},
			}},
		},
		Contribution: policy.Contribution{MaxGroups: 2, MaxRows: 3}, K: 2, SpecialK: 3, SpecialShare: 0.5,
	}
	var scope sandbox.Scope
	for _, tb := range pol.Tables {
		scope.Sources = append(scope.Sources, sandbox.Source{Dataset: "s", Grade: policy.Core, Table: tb, Policy: pol})
	}
	for _, sql := range []string{
		"SELECT count(*) AS n FROM people p JOIN visits v ON p.patient_id = v.patient_id",
		"SELECT count(*) AS n FROM people p JOIN visits v ON p.patient_id = v.patient_id WHERE v.cost > 5",
		"SELECT p.sex, sum(v.cost) AS s FROM people p JOIN visits v ON p.patient_id = v.patient_id GROUP BY p.sex",
	} {
		_, err := sandbox.Analyze(ctx, unitTypesHospital(t, false), sql, scope)
		if fault.KindOf(err) != fault.QueryRejected || !strings.Contains(err.Error(), "different types") {
			t.Errorf("%s: %v, want a refusal naming the units' types", sql, err)
		}
	}
}
