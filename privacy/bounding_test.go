package privacy_test

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/sandbox"
)

// visits: patient 1 is a heavy user with 50 visits in each of 6
// departments costing 100 each; patients 2..101 have one visit in "A"
// costing 10.
func loadVisits(t *testing.T) *engine.Engine {
	t.Helper()
	ctx := context.Background()
	e, err := engine.Open(ctx, engine.Config{MemoryLimit: "512MB", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "patient_id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "dept", Type: arrow.BinaryTypes.String},
		{Name: "cost", Type: arrow.PrimitiveTypes.Float64},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	add := func(pid int64, dept string, cost float64) {
		b.Field(0).(*array.Int64Builder).Append(pid)
		b.Field(1).(*array.StringBuilder).Append(dept)
		b.Field(2).(*array.Float64Builder).Append(cost)
	}
	for _, d := range []string{"A", "B", "C", "D", "E", "F"} {
		for i := 0; i < 50; i++ {
			add(1, d, 100)
		}
	}
	for p := int64(2); p <= 101; p++ {
		add(p, "A", 10)
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	if err := e.CreateTable(ctx, "h", "visits", schema); err != nil {
		t.Fatal(err)
	}
	l, err := e.NewLoader(ctx, "h", "visits")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Append(rec); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return e
}

func visitsScope() sandbox.Scope {
	lo, hi := 0.0, 1000.0
	pol := policy.Policy{
		Tables: []policy.Table{{Name: "visits", Columns: []policy.Column{
			{Name: "patient_id", Role: policy.Unit},
			{Name: "dept", Role: policy.Attribute, MaxDistinct: 10},
			{Name: "cost", Role: policy.Attribute, Min: &lo, Max: &hi},
		}}},
		Contribution: policy.Contribution{MaxGroups: 2, MaxRows: 3}, K: 2, SpecialK: 2, SpecialShare: 1,
	}
	return sandbox.Scope{Sources: []sandbox.Source{{Dataset: "h", Grade: policy.General, Table: pol.Tables[0], Policy: pol}}}
}

// TestContributionBounds runs the planned SQL (before noise) and checks that
// the heavy patient adds at most MaxRows rows to a group and appears in at
// most MaxGroups groups, whichever plan shape is used.
func TestContributionBounds(t *testing.T) {
	e := loadVisits(t)
	cases := []struct {
		name, sql string
	}{
		{"partial aggregation", "SELECT dept, count(*) AS n, sum(cost) AS s FROM visits GROUP BY dept"},
		{"row sampling for quantiles", "SELECT dept, count(*) AS n, sum(cost) AS s, median(cost) AS m FROM visits GROUP BY dept"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Gaussian noise over several groups per patient keeps the
			// per-group shapes (Laplace would bound by rank).
			plan := planFor(t, e, tc.sql, visitsScope(), privacy.Cost{Epsilon: 1, Delta: 1e-6})
			res, col := run(t, e, plan)
			heavyGroups := 0
			for _, r := range res.Rows {
				dept := r[col["__g0"]].(string)
				n := r[col["__c0"]].(int64)
				sum := r[col["__s1"]].(float64)
				if sum > 3*1000*float64(n) {
					t.Errorf("%s: sum %g is more than %d rows at the bound", dept, sum, n)
				}
				heavy := n
				if dept == "A" {
					heavy = n - 100 // the 100 light patients
					// The light patients add 1000; the heavy one at most
					// MaxRows times the upper bound.
					if heavySum := sum - 1000; heavySum < 0 || heavySum > 3*1000 {
						t.Errorf("A: the heavy patient adds %g to the sum, outside [0, 3000]", heavySum)
					}
				}
				if heavy > 3 {
					t.Errorf("%s: the heavy patient adds %d rows, more than MaxRows 3", dept, heavy)
				}
				if heavy > 0 {
					heavyGroups++
				}
			}
			if heavyGroups > 2 || heavyGroups == 0 {
				t.Errorf("the heavy patient appears in %d groups, want 1 or 2 (MaxGroups 2)", heavyGroups)
			}
		})
	}
}

// TestMeasureUnits checks that the Article 11 measure returned with the
// answer names exactly the patients whose rows were aggregated.
func TestMeasureUnits(t *testing.T) {
	e := loadVisits(t)
	for _, sql := range []string{
		"SELECT dept, count(*) AS n FROM visits GROUP BY dept",
		"SELECT dept, median(cost) AS m FROM visits GROUP BY dept",
		"SELECT count(*) AS n FROM visits WHERE cost < 50",
	} {
		plan := planFor(t, e, sql, visitsScope(), privacy.Cost{Epsilon: 1})
		plan.MeasureUnits(1, 101)
		res, _ := run(t, e, plan)
		last := len(res.Columns) - 1
		bits, _ := res.Rows[0][last].(string)
		ones := strings.Count(bits, "1")
		want := 101 // every patient has a visit in some kept group
		if strings.Contains(sql, "cost < 50") {
			want = 100 // the heavy patient's visits cost 100
		}
		if res.Columns[last].Name != "__units" || len(bits) != 101 || ones != want {
			t.Errorf("%s: %d units measured in %d bits, want %d", sql, ones, len(bits), want)
		}
		for _, r := range res.Rows[1:] {
			if r[last] != nil {
				t.Errorf("units repeated on later rows")
			}
		}
	}
}

// TestRowBoundWithoutGroups: for quantiles without groups, the heavy
// patient's 300 rows count as MaxRows (3), the 100 light patients' rows as
// they are.
func TestRowBoundWithoutGroups(t *testing.T) {
	e := loadVisits(t)
	plan := planFor(t, e, "SELECT count(*) AS n, median(cost) AS m FROM visits", visitsScope(), privacy.Cost{Epsilon: 1})
	res, col := run(t, e, plan)
	if n := res.Rows[0][col["__c0"]].(int64); n != 103 {
		t.Errorf("count %d, want 103 (100 light rows and 3 of the heavy patient's)", n)
	}
	if u := res.Rows[0][col["__users"]].(int64); u != 101 {
		t.Errorf("patients %d, want 101", u)
	}
}

// TestHeavyPatientsKeepTheirMean: patients with 50 visits each costing
// about 5000 (bounds 0 to 100000, midpoint 50000) must leave the average
// near 5000 whichever way rows are bounded. Clamping a heavy patient's
// mid-centred sum to MaxRows times the half-width, while their count is
// cut to MaxRows, used to pull each of them to the lower bound.
func TestHeavyPatientsKeepTheirMean(t *testing.T) {
	e := loadVisits(t)
	ctx := context.Background()
	if _, err := e.Query(ctx, `CREATE TABLE h.stays AS SELECT p AS patient_id, chr(65 + (p % 3)::INTEGER) AS dept,
		4900 + (i % 3) * 100 AS cost FROM range(1, 21) a(p), range(50) b(i)`, 1); err != nil {
		t.Fatal(err)
	}
	const trueMean = (17*4900 + 17*5000 + 16*5100) / 50.0
	lo, hi := 0.0, 100000.0
	table := func(public []string) policy.Table {
		return policy.Table{Name: "stays", Columns: []policy.Column{
			{Name: "patient_id", Role: policy.Unit},
			{Name: "dept", Role: policy.Attribute, Public: public, MaxDistinct: 10},
			{Name: "cost", Role: policy.Attribute, Min: &lo, Max: &hi},
		}}
	}
	cases := []struct {
		name   string
		public []string
	}{
		// Non-public groups: per (patient, group) partial aggregates.
		{"per-group bounds", nil},
		// Public groups, or none: the rank bound.
		{"rank bound", []string{"A", "B", "C"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pol := policy.Policy{Tables: []policy.Table{table(tc.public)},
				Contribution: policy.Contribution{MaxGroups: 2, MaxRows: 3}, K: 2, SpecialK: 2, SpecialShare: 1}
			scope := sandbox.Scope{Sources: []sandbox.Source{{Dataset: "h", Grade: policy.General, Table: pol.Tables[0], Policy: pol}}}
			for _, sql := range []string{"SELECT dept, avg(cost) AS a, stddev_pop(cost) AS sd FROM stays GROUP BY dept", "SELECT avg(cost) AS a, stddev_pop(cost) AS sd FROM stays"} {
				plan := planFor(t, e, sql, scope, privacy.Cost{Epsilon: 1})
				res, col := run(t, e, plan)
				// Per group, each patient's own mean is kept exactly.
				// Bounded by rank, a patient's kept rows are a random
				// few of their costs, all between 4900 and 5100, so
				// the mean of the kept rows is in that range (a few
				// 5100s alone give 5100, 102 above the true mean); the
				// old clamping put it at 0.
				rank := strings.Contains(plan.SQL, "__rk <=")
				for _, r := range res.Rows {
					n := float64(r[col["__c0"]].(int64))
					mean := 50000 + r[col["__s0"]].(float64)/n
					if !rank && math.Abs(mean-trueMean) > 1e-6 {
						t.Errorf("%s: %v: mean %g before noise, want %g", sql, r[0], mean, trueMean)
					}
					if rank && (mean < 4900-1e-6 || mean > 5100+1e-6) {
						t.Errorf("%s: %v: mean %g before noise, want within the costs 4900 to 5100", sql, r[0], mean)
					}
					// The spread of one patient's costs is about 82; the
					// mid-centred sum of squares must keep it.
					sd := math.Sqrt(r[col["__q1"]].(float64)/float64(r[col["__c1"]].(int64)) - math.Pow(r[col["__s1"]].(float64)/float64(r[col["__c1"]].(int64)), 2))
					if sd > 200 {
						t.Errorf("%s: %v: standard deviation %g before noise, want about 82", sql, r[0], sd)
					}
				}
			}
		})
	}
}

// engineWith opens an engine, closed when t ends, and runs stmts on it:
// the small hospitals the tests build.
func engineWith(t *testing.T, cfg engine.Config, stmts ...string) *engine.Engine {
	t.Helper()
	e, err := engine.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	for _, s := range stmts {
		if _, err := e.Query(context.Background(), s, 1); err != nil {
			t.Fatalf("%v\n%s", err, s)
		}
	}
	return e
}

// planFor analyses sql in scope and plans it at cost, over the ranks as
// the release does once they are built.
func planFor(t *testing.T, e *engine.Engine, sql string, scope sandbox.Scope, cost privacy.Cost) *privacy.Plan {
	t.Helper()
	return planRanked(t, e, sql, scope, cost, true)
}

// planRanked is planFor, over the ranks or, as the release plans before
// they are built, without them (per-group bounds, no row counts).
func planRanked(t *testing.T, e *engine.Engine, sql string, scope sandbox.Scope, cost privacy.Cost, ranked bool) *privacy.Plan {
	t.Helper()
	q, err := sandbox.Analyze(context.Background(), e, sql, scope)
	if err != nil {
		t.Fatal(err)
	}
	if ranked {
		rankIfAsked(t, e, q)
	}
	p, err := privacy.NewPlan(q, cost, privacy.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// run runs p's SQL on e and returns the result with each column's index.
func run(t *testing.T, e *engine.Engine, p *privacy.Plan) (*engine.Result, map[string]int) {
	t.Helper()
	res, err := e.Query(context.Background(), p.SQL, 100)
	if err != nil {
		t.Fatalf("%v\n%s", err, p.SQL)
	}
	col := map[string]int{}
	for i, c := range res.Columns {
		col[c.Name] = i
	}
	return res, col
}

// rankIfAsked ranks the table q may bound by rank and switches q to it, as
// the release does.
func rankIfAsked(t *testing.T, e *engine.Engine, q *sandbox.Query) {
	t.Helper()
	if q.Rank == nil {
		return
	}
	if err := e.RankRows(context.Background(), q.Rank.Dataset, q.Rank.Table, q.Rank.Unit); err != nil {
		t.Fatal(err)
	}
	q.UseRank()
}
