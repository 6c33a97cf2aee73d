package privacy_test

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/sandbox"
)

// TestFlatPlansAggregateWhatTheCTEDoes checks that the plans written
// without the CTE of the base (sandbox.Flat) read exactly the rows and
// values the CTE form reads: both are run, before any noise, on the same
// table, and every cell of their results must agree. The table has NULLs,
// values outside the bounds and strings that look like the SQL's own
// delimiters, and a query whose constants hold a delimiter must fall back
// to the CTE.
func TestFlatPlansAggregateWhatTheCTEDoes(t *testing.T) {
	ctx := context.Background()
	e := engineWith(t, engine.Config{MemoryLimit: "256MB", Threads: 1},
		"CREATE SCHEMA s",
		`CREATE TABLE s.people AS SELECT range AS patient_id,
			CASE WHEN range % 3 = 0 THEN 'F' WHEN range % 3 = 1 THEN 'M' END AS sex,
			CASE WHEN range % 7 = 0 THEN NULL ELSE (range * 37) % 120 END AS age,
			CASE WHEN range % 5 = 0 THEN ' AS __a0 FROM ' ELSE 'ward ' || (range % 4)::VARCHAR END AS ward,
			(range * 7919) % 5000 AS cost
		FROM range(1, 4001)`)
	lo, hi, clo, chi := 0.0, 100.0, 0.0, 4000.0
	pol := policy.Policy{
		Tables: []policy.Table{{Name: "people", OneRowPerUnit: true, Columns: []policy.Column{
			{Name: "patient_id", Type: "BIGINT", Role: policy.Unit},
			{Name: "sex", Role: policy.QuasiIdentifier, Public: []string{"F", "M"}},
			{Name: "age", Role: policy.Attribute, Min: &lo, Max: &hi},
			{Name: "ward", Role: policy.QuasiIdentifier, MaxDistinct: 8},
			{Name: "cost", Role: policy.Attribute, Min: &clo, Max: &chi},
		}}},
		Contribution: policy.Contribution{MaxGroups: 1, MaxRows: 1}, K: 2, SpecialK: 3, SpecialShare: 0.5,
	}
	scope := sandbox.Scope{Sources: []sandbox.Source{{Dataset: "s", Grade: policy.General, Table: pol.Tables[0], Policy: pol}}}
	cases := []struct {
		sql   string
		exact bool
		flat  bool
	}{
		{sql: "SELECT count(*) AS n FROM people WHERE age > 50", flat: true},
		{sql: "SELECT count(age) AS n, sum(cost) AS c, avg(age) AS a FROM people", flat: true},
		{sql: "SELECT sex, count(*) AS n, avg(cost) AS c, stddev(age) AS sd FROM people WHERE cost < 4500 GROUP BY sex", flat: true},
		{sql: "SELECT ward, count(*) AS n FROM people GROUP BY ward", flat: true},
		{sql: "SELECT sex, count(*) AS n FROM people WHERE ward <> ' AS __a0 FROM ' GROUP BY sex", flat: false},
		// The delimiter is " AS __a0 FROM ", once: a constant after it is
		// the WHERE clause's.
		{sql: "SELECT count(*) AS n FROM people WHERE ward = ' FROM '", flat: true},
		{sql: "SELECT sex, count(*) AS n, sum(age) AS s FROM people WHERE age BETWEEN 10 AND 90 GROUP BY sex", exact: true, flat: true},
		// A constant key: GROUP BY (2) would be a position.
		{sql: "SELECT 2 AS k, count(*) AS n FROM people GROUP BY k", flat: true},
		{sql: "SELECT 3 AS k, sex, count(*) AS n FROM people GROUP BY k, sex", flat: true},
		{sql: "SELECT 0 AS k, ward, sum(age) AS s FROM people GROUP BY k, ward", exact: true, flat: true},
	}
	for _, c := range cases {
		t.Run(c.sql, func(t *testing.T) {
			q, err := sandbox.Analyze(ctx, e, c.sql, scope)
			if err != nil {
				t.Fatal(err)
			}
			plan := func(q *sandbox.Query) *privacy.Plan {
				var p *privacy.Plan
				var err error
				if c.exact {
					p, err = privacy.NewExactPlan(q, privacy.Limits{})
				} else {
					p, err = privacy.NewPlan(q, privacy.Cost{Epsilon: 1, Delta: 1e-6}, privacy.Limits{})
				}
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
			flat := plan(q)
			noFlat := *q
			noFlat.Flat = nil
			cte := plan(&noFlat)
			if got := !strings.Contains(flat.SQL, "WITH __base"); got != c.flat {
				t.Fatalf("flat form used: %v, want %v\n%s", got, c.flat, flat.SQL)
			}
			if !strings.Contains(cte.SQL, "WITH __base") {
				t.Fatalf("the plan without a flat form has no CTE:\n%s", cte.SQL)
			}
			a, _ := run(t, e, flat)
			b, _ := run(t, e, cte)
			if len(a.Rows) != len(b.Rows) || len(a.Rows) == 0 {
				t.Fatalf("%d rows flat, %d with the CTE", len(a.Rows), len(b.Rows))
			}
			byGroups(a.Rows, len(q.Groups))
			byGroups(b.Rows, len(q.Groups))
			for i := range a.Rows {
				for j := range a.Rows[i] {
					if !sameCell(a.Rows[i][j], b.Rows[i][j]) {
						t.Errorf("row %d column %s: %v flat, %v with the CTE\n%s", i, a.Columns[j].Name, a.Rows[i][j], b.Rows[i][j], flat.SQL)
					}
				}
			}
		})
	}
}

// sameCell compares two result cells; DOUBLE sums may differ in their
// last bits with the order DuckDB adds them in.
func sameCell(a, b any) bool {
	x, ok1 := a.(float64)
	y, ok2 := b.(float64)
	if ok1 && ok2 {
		return math.Abs(x-y) <= 1e-9*math.Max(1, math.Abs(y))
	}
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// byGroups orders rows by their group keys, the first n columns.
func byGroups(rows [][]any, n int) {
	sort.Slice(rows, func(i, j int) bool { return fmt.Sprint(rows[i][:n]) < fmt.Sprint(rows[j][:n]) })
}
