package privacy

import (
	"math"
	"testing"

	"github.com/google/differential-privacy/go/v3/noise"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/sandbox"
)

func testPolicy() policy.Policy {
	return policy.Policy{Contribution: policy.Contribution{MaxGroups: 4, MaxRows: 10}, K: 10, SpecialK: 20, SpecialShare: 0.5}
}

// countBySex is SELECT sex, count(*) AS n FROM patients GROUP BY sex.
func countBySex() *sandbox.Query {
	return &sandbox.Query{
		Base:        "SELECT 1",
		Groups:      []sandbox.Group{{Name: "sex", Public: []string{"F", "M"}, PerUnit: true, Bound: 3}},
		GroupBound:  3,
		Aggs:        []sandbox.Agg{{Name: "n", Kind: sandbox.Count, Star: true}},
		Outputs:     []sandbox.Output{{Name: "sex", Group: 0, Agg: -1}, {Name: "n", Group: -1, Agg: 0}},
		Limit:       -1,
		PerUnitRows: true,
		Policy:      testPolicy(),
		Grade:       policy.Core,
	}
}

func sexResult(f, m int64) *engine.Result {
	return &engine.Result{
		Columns: []engine.Column{{Name: "__g0", Type: "VARCHAR"}, {Name: "__users", Type: "BIGINT"}, {Name: "__c0", Type: "BIGINT"}},
		Rows:    [][]any{{"F", f, f}, {"M", m, m}},
	}
}

// TestContractExample checks the figures of the contract's example answer:
// epsilon 0.1 on a per-patient count gives Laplace scale 10 and a 95%
// interval of 29.96.
func TestContractExample(t *testing.T) {
	p, err := NewPlan(countBySex(), Cost{Epsilon: 0.1}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := p.Release(sexResult(50123, 49870))
	if err != nil {
		t.Fatal(err)
	}
	c := a.Privacy.Columns["n"]
	if math.Abs(c.NoiseScale-10) > 1e-9 {
		t.Errorf("noise scale %g, want 10", c.NoiseScale)
	}
	if math.Abs(c.CI95-29.957) > 0.01 {
		t.Errorf("ci95 %g, want 29.96", c.CI95)
	}
	// The count is the k rule's noisy patient count too: no share of
	// epsilon goes to the k rule, only its delta.
	if a.Privacy.Mechanism != Laplace || a.Privacy.Delta != DefaultLimits.PartitionDelta || a.Privacy.K != 10 || a.Privacy.SuppressedGroups != 0 {
		t.Errorf("report %+v", a.Privacy)
	}
	if len(a.Rows) != 2 || a.Rows[0][0] != "F" || a.Columns[1].Type != "BIGINT" {
		t.Errorf("rows %v columns %v", a.Rows, a.Columns)
	}
}

// TestNoiseScale draws n released counts and checks that the empirical
// variance matches the declared scale: 2b² for Laplace, σ² for Gaussian.
// The sample variance of n=4000 draws has a relative standard error of
// about sqrt((kurtosis-1)/n) (3.5% for Laplace, 2.2% for Gaussian); the
// test allows 5 standard errors, so a correct mechanism fails it with
// probability below 1e-6.
func TestNoiseScale(t *testing.T) {
	const n = 4000
	cases := []struct {
		name     string
		cost     Cost
		q        func() *sandbox.Query
		relError float64
	}{
		{"laplace per-patient count", Cost{Epsilon: 0.5}, countBySex, 5 * 0.035},
		{"gaussian per-patient count", Cost{Epsilon: 0.5, Delta: 1e-6}, countBySex, 5 * 0.022},
		{"laplace encounter count, bounded rows", Cost{Epsilon: 1}, func() *sandbox.Query {
			q := countBySex()
			q.PerUnitRows = false
			q.Groups[0].PerUnit = false
			return q
		}, 5 * 0.035},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPlan(tc.q(), tc.cost, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			const truth = 100000
			var sum, sumSq float64
			var scale float64
			for i := 0; i < n; i++ {
				a, err := p.Release(sexResult(truth, truth))
				if err != nil {
					t.Fatal(err)
				}
				v := float64(a.Rows[0][1].(int64)) - truth
				sum += v
				sumSq += v * v
				scale = a.Privacy.Columns["n"].NoiseScale
			}
			mean := sum / n
			variance := sumSq/n - mean*mean
			want := scale * scale
			if p.Mechanism == Laplace {
				want = 2 * scale * scale
			}
			if rel := math.Abs(variance-want) / want; rel > tc.relError {
				t.Errorf("variance %.1f, declared %.1f (relative error %.3f > %.3f)", variance, want, rel, tc.relError)
			}
			if math.Abs(mean) > 5*math.Sqrt(want/n) {
				t.Errorf("noise mean %.2f is biased", mean)
			}
		})
	}
}

func TestSensitivityFollowsPolicy(t *testing.T) {
	q := countBySex()
	q.PerUnitRows = false
	q.Groups[0].PerUnit = false
	p, err := NewPlan(q, Cost{Epsilon: 1}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := p.Release(sexResult(1000, 1000))
	if err != nil {
		t.Fatal(err)
	}
	// 4 groups per patient, 10 rows per group: L1 = 40, at half of
	// epsilon (a count of rows is not a count of patients, so the k rule
	// needs a noisy patient count of its own).
	if got := a.Privacy.Columns["n"].NoiseScale; math.Abs(got-80) > 1e-9 {
		t.Errorf("scale %g, want 80", got)
	}
	if a.Privacy.MaxGroupsPerPatient != 4 || a.Privacy.MaxRowsPerGroup != 10 {
		t.Errorf("bounds %+v", a.Privacy)
	}
}

func TestSmallGroupsSuppressed(t *testing.T) {
	p, err := NewPlan(countBySex(), Cost{Epsilon: 1}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := p.Release(&engine.Result{
		Columns: []engine.Column{{Name: "__g0"}, {Name: "__users"}, {Name: "__c0"}},
		Rows:    [][]any{{"F", int64(9), int64(9)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// F has 9 < k patients and M is absent: both are suppressed alike.
	if len(a.Rows) != 0 || a.Privacy.SuppressedGroups != 2 {
		t.Errorf("rows %v, suppressed %d", a.Rows, a.Privacy.SuppressedGroups)
	}
}

func TestSpecialGroupsRaiseK(t *testing.T) {
	q := countBySex()
	q.Special = true
	p, err := NewPlan(q, Cost{Epsilon: 0.2}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := p.Release(sexResult(15, 5000))
	if err != nil {
		t.Fatal(err)
	}
	if a.Privacy.K != 20 || len(a.Rows) != 1 || a.Privacy.SuppressedGroups != 1 {
		t.Errorf("k %d rows %v", a.Privacy.K, a.Rows)
	}
	// Half the budget share: noise of epsilon 0.1 while 0.2 is charged.
	if got := a.Privacy.Columns["n"].NoiseScale; math.Abs(got-10) > 1e-9 || a.Privacy.Epsilon != 0.2 {
		t.Errorf("scale %g epsilon %g", got, a.Privacy.Epsilon)
	}
}

func TestPartitionSelection(t *testing.T) {
	q := countBySex()
	q.Groups[0].Public = nil
	p, err := NewPlan(q, Cost{Epsilon: 0.5}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Cost.Delta != DefaultLimits.PartitionDelta {
		t.Errorf("partition selection should charge delta %g, charged %g", DefaultLimits.PartitionDelta, p.Cost.Delta)
	}
	released := 0
	for i := 0; i < 200; i++ {
		a, err := p.Release(sexResult(12, 100000))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range a.Rows {
			if r[0] == "F" {
				released++
			}
		}
		if len(a.Rows) == 0 {
			t.Fatal("a group of 100000 patients was suppressed")
		}
	}
	// F has 12 patients; the threshold is k-1 above a delta=1e-6 threshold
	// for epsilon 0.25, so F appears with probability far below 1e-3.
	if released > 1 {
		t.Errorf("small non-public group released %d times out of 200", released)
	}
}

func TestPlanRejects(t *testing.T) {
	cases := []struct {
		name string
		cost Cost
	}{
		{"zero epsilon", Cost{Epsilon: 0}},
		{"negative epsilon", Cost{Epsilon: -1}},
		{"over the cap", Cost{Epsilon: 5}},
		{"nan", Cost{Epsilon: math.NaN()}},
		{"large delta", Cost{Epsilon: 0.1, Delta: 0.1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewPlan(countBySex(), tc.cost, Limits{}); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestMomentsAndQuantile(t *testing.T) {
	a := sandbox.Agg{Kind: sandbox.Avg, Min: 0, Max: 100}
	// values 40 and 60: normalised sum (40-50)+(60-50) = 0, count 2.
	if got := moment(a, 2, 0, 0); got != 50 {
		t.Errorf("mean %g", got)
	}
	a.Kind = sandbox.VarPop
	if got := moment(a, 2, 0, 200); got != 100 {
		t.Errorf("variance %g", got)
	}
	leaves := map[int]float64{}
	for i := 0; i < treeLeaves; i++ {
		leaves[i] = 10
	}
	exact := func(x float64) float64 { return x }
	q := sandbox.Agg{Kind: sandbox.Quantile, Min: 0, Max: 100, Q: 0.5}
	if got := newTree(leaves, exact).quantile(q); math.Abs(got-50) > 0.1 {
		t.Errorf("median of uniform %g", got)
	}
	// Skewed data with noise: 10000 rows in the lowest 1% of the range;
	// noise of scale 30 on every node must not drag the median upward.
	skew := map[int]float64{}
	for i := 0; i < 40; i++ {
		skew[i] = 250
	}
	p, err := NewPlan(countBySex(), Cost{Epsilon: 0.1}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	m := p.mech()
	tr := newTree(skew, func(x float64) float64 { return m.float(x, 1, 1, 1.0/30) })
	if got := tr.quantile(q); got > 3 {
		t.Errorf("median of data in [0, 1] came out at %g", got)
	}
}

// TestKThresholdWholeDelta: the k rule's exact test and its noisy count
// read the same patient count, which one patient moves in one group only
// (the rank-1 count, or the count over one row per patient), so the
// threshold is set for the plan's whole delta, also when a patient's rows
// reach many groups.
func TestKThresholdWholeDelta(t *testing.T) {
	lap := noise.Laplace()
	for _, tc := range []struct {
		name string
		p    Plan
	}{
		{"rank-1 count, several groups per patient", Plan{groupsPerUnit: 12, rowBound: 40, domain: 12, thresholdL0: 1, epsEach: 0.3, psDelta: 1e-8, K: 10}},
		{"rank-1 count, per-patient keys", Plan{groupsPerUnit: 1, rowBound: 40, domain: 12, thresholdL0: 1, epsEach: 0.3, psDelta: 1e-8, K: 10}},
		{"per (patient, group)", Plan{domain: 12, thresholdL0: 4, epsEach: 0.3, psDelta: 1e-8, K: 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.p.kThreshold()
			if err != nil {
				t.Fatal(err)
			}
			want, err := lap.Threshold(tc.p.thresholdL0, 1, tc.p.epsEach, 0, tc.p.psDelta)
			if err != nil {
				t.Fatal(err)
			}
			if got != want+float64(tc.p.K-1) {
				t.Errorf("threshold %g, want %g", got, want+float64(tc.p.K-1))
			}
		})
	}
}
