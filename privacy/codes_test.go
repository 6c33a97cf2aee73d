package privacy_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/sandbox"
)

// TestCodedGroupsAnswerAsStrings: a GROUP BY on a column with a public
// list runs on its code column once the engine has built it, and the plan's
// result is the one grouped on the strings, row for row: the same
// categories in the same key columns, the same partial aggregates. Only
// the groups an answer can release are compared: values outside a public
// list (which registration refuses) and NULL are one NULL key when coded,
// and never released either way. A list that changed since the codes were
// built is grouped on the strings.
func TestCodedGroupsAnswerAsStrings(t *testing.T) {
	ctx := context.Background()
	e := engineWith(t, engine.Config{MemoryLimit: "512MB", Threads: 1},
		"CREATE SCHEMA s",
		// Several visits per patient, in several departments and wards;
		// dept holds listed values, an unlisted one and NULL; ward is
		// listed too.
		`CREATE TABLE s.visits AS SELECT (i % 67)::BIGINT AS patient_id,
			(['A', 'B', 'C', 'Z', NULL])[i % 5 + 1] AS dept,
			(['w1', 'w2'])[i % 2 + 1] AS ward,
			((i * 37) % 500)::DOUBLE AS cost
		FROM range(400) t(i)`,
		// The same with each patient in one department and one ward: a
		// plan that picks among a patient's groups by a salted hash picks
		// nothing here, so its results can be compared.
		`CREATE TABLE s.single AS SELECT (i % 70)::BIGINT AS patient_id,
			(['A', 'B', 'C', 'Z', NULL])[i % 5 + 1] AS dept,
			((i * 37) % 500)::DOUBLE AS cost
		FROM range(400) t(i)`,
		`CREATE TABLE s.people AS SELECT i::BIGINT AS patient_id, (['F', 'M'])[i % 2 + 1] AS sex FROM range(70) t(i)`)
	f := func(v float64) *float64 { return &v }
	pol := policy.Policy{Tables: []policy.Table{
		{Name: "visits", Columns: []policy.Column{
			{Name: "patient_id", Role: policy.Unit},
			{Name: "dept", Role: policy.Attribute, Public: []string{"A", "B", "C"}},
			{Name: "ward", Role: policy.Attribute, Public: []string{"w1", "w2"}},
			{Name: "cost", Role: policy.Attribute, Min: f(0), Max: f(300), DomainMin: f(0), DomainMax: f(1000)},
		}},
		{Name: "single", Columns: []policy.Column{
			{Name: "patient_id", Role: policy.Unit},
			{Name: "dept", Role: policy.Attribute, Public: []string{"A", "B", "C"}},
			{Name: "cost", Role: policy.Attribute, Min: f(0), Max: f(300), DomainMin: f(0), DomainMax: f(1000)},
		}},
		{Name: "people", OneRowPerUnit: true, Columns: []policy.Column{
			{Name: "patient_id", Role: policy.Unit},
			{Name: "sex", Role: policy.Attribute, Public: []string{"F", "M"}},
		}},
	}, Contribution: policy.Contribution{MaxGroups: 2, MaxRows: 3}, K: 2, SpecialK: 2, SpecialShare: 1}
	e.RankTables("s", pol)
	if err := e.WaitTables(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	scope := func(withCodes bool, p policy.Policy) sandbox.Scope {
		var sc sandbox.Scope
		for _, tb := range p.Tables {
			src := sandbox.Source{Dataset: "s", Grade: policy.General, Table: tb, Policy: p}
			if withCodes {
				src.Codes = e.Codes("s", tb.Name)
			}
			sc.Sources = append(sc.Sources, src)
		}
		return sc
	}
	if got := e.Codes("s", "visits"); len(got["dept"]) != 3 || len(got["ward"]) != 2 {
		t.Fatalf("codes built: %v", got)
	}
	changed := pol.Clone()
	changed.Tables[0].Columns[1].Public = []string{"A", "B", "C", "D"}
	cases := []struct {
		name, sql string
		p         policy.Policy
		coded     bool
		cost      privacy.Cost
	}{
		{"count and mean, bounded by rank", "SELECT dept, count(*) AS n, avg(cost) AS c FROM visits GROUP BY dept", pol, true, privacy.Cost{Epsilon: 1}},
		{"two keys, the second coded", "SELECT CASE WHEN cost > 100 THEN 'hi' ELSE 'lo' END AS band, ward, count(*) AS n FROM visits GROUP BY band, ward", pol, true, privacy.Cost{Epsilon: 1}},
		{"a filter and a sum", "SELECT ward, dept, sum(cost) AS s FROM visits WHERE cost > 50 GROUP BY ward, dept", pol, true, privacy.Cost{Epsilon: 1}},
		{"Gaussian, per (patient, group)", "SELECT dept, count(*) AS n, sum(cost) AS s FROM single GROUP BY dept", pol, true, privacy.Cost{Epsilon: 1, Delta: 1e-6}},
		{"Gaussian, keys whose lists make at most max_groups groups", "SELECT ward, count(*) AS n, avg(cost) AS c FROM visits GROUP BY ward", pol, true, privacy.Cost{Epsilon: 1, Delta: 1e-6}},
		{"patients by listed keys", "SELECT ward, count(DISTINCT patient_id) AS n FROM visits GROUP BY ward", pol, true, privacy.Cost{Epsilon: 1}},
		{"a table of one row per patient", "SELECT sex, count(*) AS n FROM people GROUP BY sex", pol, true, privacy.Cost{Epsilon: 1}},
		{"a join", "SELECT p.sex, v.dept, count(*) AS n FROM visits v JOIN people p ON v.patient_id = p.patient_id GROUP BY p.sex, v.dept", pol, true, privacy.Cost{Epsilon: 1}},
		{"a list changed since", "SELECT dept, count(*) AS n FROM visits GROUP BY dept", changed, false, privacy.Cost{Epsilon: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			plain := planMax(t, e, tc.sql, scope(false, tc.p), tc.cost)
			coded := planMax(t, e, tc.sql, scope(true, tc.p), tc.cost)
			if got := strings.Contains(coded.SQL, policy.CodePrefix); got != tc.coded {
				t.Fatalf("grouped on codes: %v, want %v\n%s", got, tc.coded, coded.SQL)
			}
			if strings.Contains(plain.SQL, policy.CodePrefix) {
				t.Fatalf("codes used without the engine's lists:\n%s", plain.SQL)
			}
			want, _ := run(t, e, plain)
			got, _ := run(t, e, coded)
			if len(want.Columns) != len(got.Columns) {
				t.Fatalf("columns %v, want %v", got.Columns, want.Columns)
			}
			for i := range want.Columns {
				if want.Columns[i].Name != got.Columns[i].Name {
					t.Fatalf("column %d is %s, want %s", i, got.Columns[i].Name, want.Columns[i].Name)
				}
			}
			keys := len(coded.Query.Groups)
			releasable := func(rows [][]any) [][]any {
				var out [][]any
			row:
				for _, r := range rows {
					for i, g := range coded.Query.Groups {
						if v, ok := r[i].(string); g.Public != nil && (!ok || !slices.Contains(g.Public, v)) {
							continue row
						}
					}
					out = append(out, r)
				}
				return out
			}
			wantRows, gotRows := releasable(want.Rows), releasable(got.Rows)
			if len(wantRows) == 0 || len(gotRows) != len(wantRows) {
				t.Fatalf("%d releasable rows, want %d (> 0)", len(gotRows), len(wantRows))
			}
			index := map[string][]any{}
			for _, r := range wantRows {
				index[rowKey(r[:keys])] = r
			}
			for _, r := range gotRows {
				w, ok := index[rowKey(r[:keys])]
				if !ok {
					t.Fatalf("group %v only in the coded plan", r[:keys])
				}
				if rowKey(r) != rowKey(w) {
					t.Errorf("group %v: %v, grouped on strings %v", r[:keys], r, w)
				}
			}
		})
	}
}

// planMax plans sql at cost and keeps the policy's maximum bound, so that
// two plans of it differ only in SQL.
func planMax(t *testing.T, e *engine.Engine, sql string, scope sandbox.Scope, cost privacy.Cost) *privacy.Plan {
	t.Helper()
	p := planFor(t, e, sql, scope, cost)
	p.KeepMax()
	return p
}

// rowKey is a result row as text, its floats to 9 digits (sums added in
// another order may differ in the last bits).
func rowKey(r []any) string {
	var b strings.Builder
	for _, v := range r {
		if x, ok := v.(float64); ok {
			fmt.Fprintf(&b, "%.9g|", x)
		} else {
			fmt.Fprintf(&b, "%v|", v)
		}
	}
	return b.String()
}
