package privacy_test

import (
	"context"
	"strings"
	"testing"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/sandbox"
)

// TestLightPatientsSkipThePartials checks the split of per-group bounding
// (Gaussian noise over several groups per patient): patients with few
// enough rows are summed per group directly, the others through the
// partials. Run before noise, every column must be what the partials alone
// give, the patient count of the k rule excepted, which may only be lower.
// The table has patients of 1 to 9 visits over six departments (a quarter
// of them all in one), three of 80, NULL and out-of-bound costs; MaxRows 3
// and six listed departments make patients of at most 3 visits light.
func TestLightPatientsSkipThePartials(t *testing.T) {
	ctx := context.Background()
	e := engineWith(t, engine.Config{MemoryLimit: "256MB", Threads: 1},
		"CREATE SCHEMA h",
		`CREATE TABLE h.visits AS
		SELECT p AS patient_id, ['A', 'B', 'C', 'D', 'E', 'F'][CASE WHEN p % 4 = 0 THEN 1 ELSE 1 + (p * 7 + v * 5) % 6 END] AS dept,
			CASE WHEN (p + v) % 11 = 0 THEN NULL ELSE ((p * 37 + v * 101) % 1300)::DOUBLE END AS cost
		FROM range(1, 301) AS a(p), range(0, 9) AS b(v) WHERE v <= p % 9
		UNION ALL SELECT 1000 + p, ['A', 'B', 'C', 'D', 'E', 'F'][1 + v % 6], 100 + v FROM range(3) AS a(p), range(80) AS b(v)`)
	if err := e.RankRows(ctx, "h", "visits", "patient_id"); err != nil {
		t.Fatal(err)
	}
	lo, hi, dlo, dhi := 0.0, 1000.0, 0.0, 2000.0
	pol := policy.Policy{
		Tables: []policy.Table{{Name: "visits", Columns: []policy.Column{
			{Name: "patient_id", Role: policy.Unit},
			{Name: "dept", Role: policy.Attribute, Public: []string{"A", "B", "C", "D", "E", "F"}},
			{Name: "cost", Role: policy.Attribute, Min: &lo, Max: &hi, DomainMin: &dlo, DomainMax: &dhi},
		}}},
		Contribution: policy.Contribution{MaxGroups: 6, MaxRows: 3}, K: 2, SpecialK: 2, SpecialShare: 1,
	}
	scope := sandbox.Scope{Sources: []sandbox.Source{{Dataset: "h", Grade: policy.General, Table: pol.Tables[0], Policy: pol}}}
	cost := privacy.Cost{Epsilon: 1, Delta: 1e-6}
	for _, sql := range []string{
		"SELECT dept, count(*) AS n FROM visits GROUP BY dept",
		"SELECT dept, count(cost) AS n, sum(cost) AS s FROM visits GROUP BY dept",
		"SELECT dept, avg(cost) AS a, var_samp(cost) AS v FROM visits GROUP BY dept",
		"SELECT dept, count(*) AS n, stddev(cost) AS sd FROM visits WHERE cost > 200 GROUP BY dept",
	} {
		t.Run(sql, func(t *testing.T) {
			split := planFor(t, e, sql, scope, cost)
			whole := planRanked(t, e, sql, scope, cost, false)
			if !strings.Contains(split.SQL, "__light") || strings.Contains(whole.SQL, "__light") {
				t.Fatalf("want one plan split and one not:\n%s\n%s", split.SQL, whole.SQL)
			}
			a, _ := run(t, e, split)
			b, _ := run(t, e, whole)
			byGroups(a.Rows, 1)
			byGroups(b.Rows, 1)
			if len(a.Rows) != len(b.Rows) || len(a.Rows) == 0 {
				t.Fatalf("%d groups split, %d not", len(a.Rows), len(b.Rows))
			}
			at := map[string]int{}
			for j, c := range a.Columns {
				at[c.Name] = j
			}
			for i := range b.Rows {
				for j, c := range b.Columns {
					got := a.Rows[i][at[c.Name]]
					want := b.Rows[i][j]
					if c.Name == "__users" {
						if got.(int64) > want.(int64) || got.(int64) <= 0 {
							t.Errorf("group %v: %d patients counted split, %d not", b.Rows[i][0], got, want)
						}
						continue
					}
					if !sameCell(got, want) {
						t.Errorf("group %v, %s: %v split, %v not\n%s", b.Rows[i][0], c.Name, got, want, split.SQL)
					}
				}
			}
		})
	}
}

// TestNoLightPatientsBeyondTheLargestCount: the engine counts a patient's
// rows up to engine.MaxRank only, so a policy whose bounds reach it never
// splits, or a patient with more rows would be summed as light, unclamped.
func TestNoLightPatientsBeyondTheLargestCount(t *testing.T) {
	e := loadVisits(t)
	for _, rows := range []int{engine.MaxRank - 1, engine.MaxRank, engine.MaxRank + 10} {
		s := visitsScope()
		pol := s.Sources[0].Policy
		pol.Tables[0].Columns[1].Public = []string{"A", "B", "C", "D", "E", "F"}
		pol.Contribution = policy.Contribution{MaxGroups: 6, MaxRows: rows}
		s.Sources[0].Policy, s.Sources[0].Table = pol, pol.Tables[0]
		p := planFor(t, e, "SELECT dept, count(*) AS n FROM visits GROUP BY dept", s, privacy.Cost{Epsilon: 1, Delta: 1e-6})
		if split := strings.Contains(p.SQL, "__light"); split != (rows < engine.MaxRank) {
			t.Errorf("max_rows %d: split %v", rows, split)
		}
	}
}
