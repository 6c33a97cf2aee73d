package privacy_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/sandbox"
)

// loadHospital is loadVisits plus people, one row per patient: the heavy
// patient 1 is "M", the light patients alternate "F" and "M".
func loadHospital(t *testing.T) *engine.Engine {
	t.Helper()
	e := loadVisits(t)
	ctx := context.Background()
	for _, s := range []string{
		"CREATE TABLE h.people AS SELECT range AS patient_id, CASE WHEN range = 1 OR range % 2 = 1 THEN 'M' ELSE 'F' END AS sex FROM range(1, 102)",
	} {
		if _, err := e.Query(ctx, s, 1); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// hospitalScope declares dept and sex public, so that the rank bound
// applies (it is not used with partition selection).
func hospitalScope() sandbox.Scope {
	s := visitsScope()
	pol := s.Sources[0].Policy
	pol.Tables[0].Columns[1].Public = []string{"A", "B", "C", "D", "E", "F"}
	pol.Tables = append(pol.Tables, policy.Table{Name: "people", OneRowPerUnit: true, Columns: []policy.Column{
		{Name: "patient_id", Role: policy.Unit},
		{Name: "sex", Role: policy.QuasiIdentifier, Public: []string{"F", "M"}},
	}})
	var out sandbox.Scope
	for _, t := range pol.Tables {
		out.Sources = append(out.Sources, sandbox.Source{Dataset: "h", Grade: policy.General, Table: t, Policy: pol})
	}
	return out
}

// TestRankBounds runs the planned SQL (before noise) and checks what the
// heavy patient (300 visits in 6 departments) adds: bounded by rank, at
// most MaxGroups*MaxRows = 6 rows in all groups together (3 when a patient
// falls in one group), and the patient counts that the k rule reads are
// exact below k*6 rows. With a filter on visits the heavy patient keeps
// the first 6 of the rows it lets through, in rank order.
func TestRankBounds(t *testing.T) {
	e := loadHospital(t)
	cases := []struct {
		name, sql string
		rank      bool
		perUnit   bool // grouped by sex
		maxTotal  int64
		maxGroup  int64
	}{
		{"count and sum by department", "SELECT dept, count(*) AS n, sum(cost) AS s FROM visits GROUP BY dept", true, false, 6, 6},
		{"histogram by department", "SELECT dept, count(*) AS n, sum(cost) AS s, median(cost) AS m FROM visits GROUP BY dept", true, false, 6, 6},
		{"by sex with a join", "SELECT p.sex, count(*) AS n, sum(v.cost) AS s FROM visits v JOIN people p ON v.patient_id = p.patient_id GROUP BY p.sex", true, true, 3, 3},
		{"histogram by sex with a join", "SELECT p.sex, count(*) AS n, sum(v.cost) AS s, median(v.cost) AS m FROM visits v JOIN people p ON v.patient_id = p.patient_id GROUP BY p.sex", true, true, 3, 3},
		{"without groups", "SELECT count(*) AS n, sum(cost) AS s FROM visits", true, true, 3, 3},
		{"filter on visits", "SELECT dept, count(*) AS n, sum(cost) AS s FROM visits WHERE cost > 0 GROUP BY dept", true, false, 6, 6},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			plan := planFor(t, e, tc.sql, hospitalScope(), privacy.Cost{Epsilon: 1})
			if got := boundedByRank(plan.SQL); got != tc.rank {
				t.Fatalf("bounded by rank: %v, want %v\n%s", got, tc.rank, plan.SQL)
			}
			res, col := run(t, e, plan)
			var total int64
			for _, r := range res.Rows {
				key := "all"
				if g, ok := col["__g0"]; ok {
					key = r[g].(string)
				}
				n := r[col["__c0"]].(int64)
				users := r[col["__users"]].(int64)
				sum := r[col["__s1"]].(float64)
				// Light patients: one visit costing 10 each, in A; 50 are
				// M, 50 are F (patient 1, the heavy one, is M).
				light := int64(0)
				switch {
				case key == "all" || key == "A" && !tc.perUnit:
					light = 100
				case tc.perUnit:
					light = 50
				}
				heavy := n - light
				if heavy < 0 || heavy > tc.maxGroup {
					t.Errorf("%s: the heavy patient adds %d rows, outside [0, %d]", key, heavy, tc.maxGroup)
				}
				// Bounded by rank, the kept rows are summed as they are;
				// bounded per group, a patient's sum is clamped to what
				// MaxRows rows at the bound could add.
				if hs := sum - 10*float64(light); hs < 0 || hs > 1000*float64(tc.maxGroup) || (tc.rank && hs != 100*float64(heavy)) {
					t.Errorf("%s: the heavy patient adds %g to the sum for %d rows", key, hs, heavy)
				}
				total += heavy
				// The k rule (k = 2) reads exact patient counts where
				// they are small: the heavy patient alone is one.
				wantUsers := light
				if heavy > 0 {
					wantUsers++
				}
				if light == 0 && users != wantUsers {
					t.Errorf("%s: %d patients counted, want %d", key, users, wantUsers)
				}
				if light > 0 && users < 2 {
					t.Errorf("%s: %d patients counted, want at least 2", key, users)
				}
				if h, ok := col["__hv2"]; ok {
					// Light visits cost 10, the heavy patient's 100: leaves
					// 40 and 409 of 4096 over [0, 1000].
					want := map[int64]int64{40: light, 409: heavy}
					got := map[int64]int64{}
					var leaves int64
					keys := r[col["__hk2"]].([]any)
					for i, c := range r[h].([]any) {
						got[asInt(keys[i])] += asInt(c)
						leaves += asInt(c)
					}
					for k, v := range want {
						if got[k] != v {
							t.Errorf("%s: leaf %d counts %d, want %d (%v)", key, k, got[k], v, got)
						}
					}
					if leaves != n {
						t.Errorf("%s: histogram counts %d rows, the count %d", key, leaves, n)
					}
				}
			}
			if total > tc.maxTotal || total == 0 {
				t.Errorf("the heavy patient adds %d rows in all, want 1 to %d", total, tc.maxTotal)
			}
			if tc.rank && total != tc.maxTotal {
				t.Errorf("bounded by rank, the heavy patient's %d rows are cut to %d, want %d", 300, total, tc.maxTotal)
			}
		})
	}
}

// TestRankNoise checks the noise and the bounds reported for plans bounded
// by rank: a patient adds at most m = MaxGroups*MaxRows rows in all, so a
// count has Laplace scale m/epsilon, as with per-group bounds, at half of
// epsilon (the other half is the k rule's noisy patient count); Gaussian
// noise over several groups per patient keeps per-group bounds, whose L2
// sensitivity is smaller.
func TestRankNoise(t *testing.T) {
	e := loadHospital(t)
	cases := []struct {
		name, sql string
		cost      privacy.Cost
		rank      bool
		scale     float64 // of the count
		groups    int64
		rowsGroup int64
		rowsInAll int64
	}{
		{"laplace by department", "SELECT dept, count(*) AS n FROM visits GROUP BY dept", privacy.Cost{Epsilon: 1}, true, 12, 6, 6, 6},
		{"laplace by sex", "SELECT p.sex, count(*) AS n FROM visits v JOIN people p ON v.patient_id = p.patient_id GROUP BY p.sex", privacy.Cost{Epsilon: 1}, true, 6, 1, 3, 3},
		{"gaussian by department", "SELECT dept, count(*) AS n FROM visits GROUP BY dept", privacy.Cost{Epsilon: 1, Delta: 1e-6}, false, 0, 2, 3, 0},
		{"count of patients", "SELECT dept, count(DISTINCT patient_id) AS n FROM visits GROUP BY dept", privacy.Cost{Epsilon: 1}, false, 2, 2, 3, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			plan := planFor(t, e, tc.sql, hospitalScope(), tc.cost)
			if got := boundedByRank(plan.SQL); got != tc.rank {
				t.Fatalf("bounded by rank: %v, want %v\n%s", got, tc.rank, plan.SQL)
			}
			res, _ := run(t, e, plan)
			a, err := plan.Release(res)
			if err != nil {
				t.Fatal(err)
			}
			r := a.Privacy
			if tc.scale > 0 && math.Abs(r.Columns["n"].NoiseScale-tc.scale) > 1e-9 {
				t.Errorf("noise scale %g, want %g", r.Columns["n"].NoiseScale, tc.scale)
			}
			if r.MaxGroupsPerPatient != tc.groups || r.MaxRowsPerGroup != tc.rowsGroup || r.MaxRowsPerPatient != tc.rowsInAll {
				t.Errorf("reported bounds %d groups, %d rows per group, %d in all; want %d, %d, %d",
					r.MaxGroupsPerPatient, r.MaxRowsPerGroup, r.MaxRowsPerPatient, tc.groups, tc.rowsGroup, tc.rowsInAll)
			}
		})
	}
}

// TestRankMeasureUnits checks the Article 11 measure of plans bounded by
// rank: every patient has a row of rank 1, so all 101 are measured.
func TestRankMeasureUnits(t *testing.T) {
	e := loadHospital(t)
	for _, sql := range []string{
		"SELECT dept, count(*) AS n FROM visits GROUP BY dept",
		"SELECT p.sex, median(v.cost) AS m FROM visits v JOIN people p ON v.patient_id = p.patient_id GROUP BY p.sex",
	} {
		plan := planFor(t, e, sql, hospitalScope(), privacy.Cost{Epsilon: 1})
		plan.MeasureUnits(1, 101)
		if !strings.Contains(plan.SQL, "__rk <=") {
			t.Fatalf("%s: not bounded by rank", sql)
		}
		res, _ := run(t, e, plan)
		last := len(res.Columns) - 1
		bits, _ := res.Rows[0][last].(string)
		if res.Columns[last].Name != "__units" || len(bits) != 101 || strings.Count(bits, "1") != 101 {
			t.Errorf("%s: %d units measured in %d bits, want 101", sql, strings.Count(bits, "1"), len(bits))
		}
	}
}

func asInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case int32:
		return int64(x)
	case uint64:
		return int64(x)
	}
	panic(fmt.Sprintf("unexpected %T", v))
}

// boundedByRank reports whether a plan's SQL keeps rows by their rank.
func boundedByRank(sql string) bool {
	return strings.Contains(sql, "__rk <=")
}

// TestRankWithPartitionSelection: groups without a public list are bounded
// by rank too, and the k rule still decides on the rank-1 count: the heavy
// patient's groups that no one else has are never released.
func TestRankWithPartitionSelection(t *testing.T) {
	e := loadHospital(t)
	plan := planFor(t, e, "SELECT dept, count(*) AS n FROM visits GROUP BY dept", visitsScope(), privacy.Cost{Epsilon: 1})
	if !boundedByRank(plan.SQL) {
		t.Fatalf("not bounded by rank:\n%s", plan.SQL)
	}
	res, _ := run(t, e, plan)
	a, err := plan.Release(res)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Privacy.PartitionSelection {
		t.Error("no partition selection reported")
	}
	// Only department A has other patients (the 100 light ones), far
	// above the threshold.
	if len(a.Rows) != 1 || a.Rows[0][0] != "A" {
		t.Errorf("released %v, want department A alone", a.Rows)
	}
}
