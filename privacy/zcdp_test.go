package privacy_test

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/hospital/gateway/accountant"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/sandbox"
)

// zcdpCases are query shapes whose quantities differ: the k rule on its
// own count or on the released one, sums, means, variances, quantiles,
// bias estimates (a requested bound below the maximum) and a bound chosen
// from a noisy histogram.
var zcdpCases = []struct {
	name string
	sql  string
	opt  privacy.Options
}{
	{"count", "SELECT dept, count(*) AS n FROM visits GROUP BY dept", privacy.Options{}},
	{"distinct patients", "SELECT dept, count(DISTINCT patient_id) AS n FROM visits GROUP BY dept", privacy.Options{}},
	{"count with bias", "SELECT dept, count(*) AS n, sum(cost) AS s FROM visits GROUP BY dept", privacy.Options{Bound: 1}},
	{"moments and median", "SELECT dept, avg(cost) AS a, var_samp(cost) AS v, median(cost) AS m FROM visits GROUP BY dept", privacy.Options{}},
	{"chosen bound", "SELECT count(*) AS n, sum(cost) AS s, avg(cost) AS a FROM visits", privacy.Options{Choose: true}},
	{"chosen bound by dept", "SELECT dept, count(*) AS n FROM visits GROUP BY dept", privacy.Options{Choose: true}},
}

func planWith(t *testing.T, e *engine.Engine, sql string, cost privacy.Cost, opt privacy.Options) *privacy.Plan {
	t.Helper()
	ctx := context.Background()
	q, err := sandbox.Analyze(ctx, e, sql, visitsScope())
	if err != nil {
		t.Fatal(err)
	}
	if c := q.Counted; c != nil {
		if err := e.RankRows(ctx, c.Dataset, c.Table, c.Unit); err != nil {
			t.Fatal(err)
		}
	}
	rankIfAsked(t, e, q)
	p, err := privacy.NewPlanWith(q, cost, opt, privacy.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// choose chooses a plan's bound from the table's counts, as the release
// does, and reports whether there was one to choose.
func choose(t *testing.T, e *engine.Engine, p *privacy.Plan) bool {
	t.Helper()
	ref, upTo, ok := p.Bounded()
	if !ok {
		return false
	}
	counts, err := e.RankCounts(context.Background(), ref.Dataset, ref.Table, upTo)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Choose(counts); err != nil {
		t.Fatal(err)
	}
	return true
}

// TestLaplacePlanCharge: for Laplace plans every quantity is pure DP, so
// rho is the sum of e_i^2/2 over the quantities and their epsilons add up
// to what the plan charged before zCDP, the bound's histogram (BoundShare)
// and the bias estimates (BiasShare) included. The noise scale each
// answer reports is the one the quantity's epsilon gives.
func TestLaplacePlanCharge(t *testing.T) {
	e := loadVisits(t)
	for _, tc := range zcdpCases {
		for _, special := range []bool{false, true} {
			t.Run(tc.name, func(t *testing.T) {
				p := planWith(t, e, tc.sql, privacy.Cost{Epsilon: 0.8}, tc.opt)
				if special {
					p.Query.Special = true // noise at SpecialShare of epsilon: the charge stays the full epsilon
				}
				before := p.Charge()
				chosen := choose(t, e, p)
				c := p.Charge()
				if c != before {
					t.Errorf("the charge moved when the bound was chosen: %+v, then %+v", before, c)
				}
				qs := p.Quantities()
				sumEps, sumRho := 0.0, 0.0
				names := map[string]float64{}
				for _, q := range qs {
					if q.Mechanism != privacy.Laplace {
						t.Errorf("%s is %s", q.Name, q.Mechanism)
					}
					sumEps += q.Epsilon
					sumRho += q.Epsilon * q.Epsilon / 2
					names[q.Name] += q.Epsilon
				}
				if math.Abs(sumEps-p.Cost.Epsilon) > 1e-12 || c.Epsilon != p.Cost.Epsilon {
					t.Errorf("quantities add up to epsilon %g, the plan charges %g (charge %g)", sumEps, p.Cost.Epsilon, c.Epsilon)
				}
				if chosen {
					if c.Rho < sumRho-1e-15 {
						t.Errorf("rho charged %g below the chosen bound's %g", c.Rho, sumRho)
					}
				} else if math.Abs(c.Rho-sumRho) > 1e-15 {
					t.Errorf("rho %g, want sum of e^2/2 = %g", c.Rho, sumRho)
				}
				if c.Delta != p.Cost.Delta || c.DeltaPartition != p.Cost.Delta || c.DeltaPartition != privacy.DefaultLimits.PartitionDelta {
					t.Errorf("charge %+v, plan cost %+v", c, p.Cost)
				}
				rep := p.Expected()
				if tc.opt.Choose && p.Query.Counted != nil && rep.Contribution != nil {
					if got := names["bound_histogram"]; math.Abs(got-rep.Contribution.Epsilon) > 1e-12 || math.Abs(got-privacy.BoundShare*p.Cost.Epsilon) > 1e-12 {
						t.Errorf("bound histogram charged %g, report says %g", got, rep.Contribution.Epsilon)
					}
				}
				bias := 0.0
				for n, e := range names {
					if strings.HasPrefix(n, "__d") {
						bias += e
					}
				}
				if rep.Contribution != nil && math.Abs(bias-rep.Contribution.BiasEpsilon) > 1e-12 {
					t.Errorf("bias estimates charged %g, report says %g", bias, rep.Contribution.BiasEpsilon)
				}
				if tc.opt.Bound == 1 && bias == 0 {
					t.Error("a bound below the maximum and no bias estimate")
				}
				if rep.Rho != c.Rho || rep.DeltaPartition != c.DeltaPartition || rep.DeltaGaussian != 0 {
					t.Errorf("report rho %g delta_partition %g delta_gaussian %g, charge %+v", rep.Rho, rep.DeltaPartition, rep.DeltaGaussian, c)
				}
				// The noise scale reported for a count is its L1 over the
				// noise's own epsilon.
				sens := p.Sensitivities()
				if col, ok := rep.Columns["n"]; ok && names["__c0"] > 0 {
					f := 1.0
					if special {
						f = p.Query.Policy.SpecialShare
					}
					s := sens["__c0"]
					if want := float64(s.L0) * s.Linf / (names["__c0"] * f); math.Abs(col.NoiseScale-want) > 1e-9*want {
						t.Errorf("count noise scale %g, the quantity's epsilon gives %g", col.NoiseScale, want)
					}
				}
			})
		}
	}
}

// TestGaussianPlanCharge: Gaussian values cost L2^2/(2 sigma^2) with the
// sigma the answer reports; the k rule, the bound's histogram and the
// bias estimates stay Laplace; the delta splits between the k rule and
// the Gaussian noise.
func TestGaussianPlanCharge(t *testing.T) {
	e := loadVisits(t)
	for _, tc := range zcdpCases {
		t.Run(tc.name, func(t *testing.T) {
			p := planWith(t, e, tc.sql, privacy.Cost{Epsilon: 0.8, Delta: 1e-6}, tc.opt)
			choose(t, e, p)
			c := p.Charge()
			rep := p.Expected()
			lap := 0.0
			for _, q := range p.Quantities() {
				switch q.Mechanism {
				case privacy.Gaussian:
					if want := q.L2 * q.L2 / (2 * q.Sigma * q.Sigma); math.Abs(q.Rho-want) > 1e-12*want {
						t.Errorf("%s: rho %g, want %g", q.Name, q.Rho, want)
					}
				case privacy.Laplace:
					lap += q.Rho
				}
			}
			if col, ok := rep.Columns["n"]; ok {
				found := false
				for _, q := range p.Quantities() {
					if q.Name == "__c0" {
						found = math.Abs(q.Sigma-col.NoiseScale) < 1e-9*col.NoiseScale
					}
				}
				if !found {
					t.Errorf("no quantity __c0 with the reported sigma %g", col.NoiseScale)
				}
			}
			if c.Rho <= lap || c.Epsilon != p.Cost.Epsilon {
				t.Errorf("charge %+v, Laplace part %g", c, lap)
			}
			part, gauss := p.DeltaSplit()
			if rep.DeltaPartition != part || rep.DeltaGaussian != gauss || part <= 0 || gauss <= 0 {
				t.Errorf("report delta %g = %g + %g, split %g + %g", rep.Delta, rep.DeltaPartition, rep.DeltaGaussian, part, gauss)
			}
			// Each level of a quantile's tree takes a third of its
			// quantity's delta, so what is drawn is what is stated.
			if math.Abs(part+gauss-p.Cost.Delta) > 1e-15 || c.Delta != p.Cost.Delta {
				t.Errorf("delta %g + %g, plan %g, charge %g", part, gauss, p.Cost.Delta, c.Delta)
			}
		})
	}
}

// TestGaussianQueriesCostSqrtK: k identical Gaussian queries charged
// through the accountant cost about sqrt(k) times a constant, where the
// plain sum grows like k: quadrupling k about doubles the epsilon spent,
// over the range of a grant of a few epsilon (beyond it the conversion's
// linear term, k rho, takes over).
func TestGaussianQueriesCostSqrtK(t *testing.T) {
	e := loadVisits(t)
	p := planWith(t, e, "SELECT dept, sum(cost) AS s FROM visits GROUP BY dept", privacy.Cost{Epsilon: 0.1, Delta: 1e-9}, privacy.Options{})
	one := p.Charge().Units()
	b := accountant.Budget{Epsilon: 1e6, Delta: 1e-5}
	spent := func(k int) float64 {
		var s accountant.Spent
		for i := 0; i < k; i++ {
			s = s.Plus(one)
		}
		return b.Position(s).EpsilonSpent
	}
	for _, k := range []int{4, 16, 64} {
		r := spent(4*k) / spent(k)
		t.Logf("%d queries: epsilon %.3g (plain sum %g); %d: %.3g, ratio %.2f", k, spent(k), 0.1*float64(k), 4*k, spent(4*k), r)
		if r < 1.8 || r > 2.3 {
			t.Errorf("4k queries cost %.2f times k queries; want about 2 (sqrt 4)", r)
		}
	}
}

// TestDefaultDeltaPaysForExpectedQueries: a grant with the default delta
// for 1000 expected queries pays the k rules of 1000 GROUP BY queries on
// a key without a public list (partition selection), within both
// guarantees.
func TestDefaultDeltaPaysForExpectedQueries(t *testing.T) {
	e := loadVisits(t)
	p := planWith(t, e, "SELECT dept, count(*) AS n FROM visits GROUP BY dept", privacy.Cost{Epsilon: 0.001}, privacy.Options{})
	if !p.Expected().PartitionSelection {
		t.Fatal("no partition selection")
	}
	delta := accountant.DeltaFor(privacy.DefaultLimits.PartitionDelta, 1000)
	if delta != 2e-5 {
		t.Errorf("default delta %g, want 2e-5", delta)
	}
	b := accountant.Budget{Epsilon: 3, Delta: delta}
	one := p.Charge().Units()
	var s accountant.Spent
	for i := 0; i < 1000; i++ {
		s = s.Plus(one)
		if pos := b.Position(s); !pos.Fits {
			t.Fatalf("query %d refused: %+v", i+1, pos)
		}
	}
	if pos := b.Position(s); pos.DeltaSpent > delta || pos.EpsilonSpent > 1.0001 {
		t.Errorf("after 1000: %+v", pos)
	}
}
