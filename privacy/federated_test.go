package privacy

import (
	"math"
	"testing"

	"github.com/google/differential-privacy/go/v3/noise"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/sandbox"
)

// TestFederatedPlanRefuses lists what a federation cannot answer.
func TestFederatedPlanRefuses(t *testing.T) {
	private := countBySex()
	private.Groups[0].Public = nil
	quantile := countBySex()
	quantile.Aggs[0] = sandbox.Agg{Name: "n", Kind: sandbox.Quantile, Min: 0, Max: 10, Q: 0.5}
	cases := []struct {
		name string
		q    *sandbox.Query
		agg  Aggregation
		want fault.Kind
	}{
		{"group key without a public list", private, Homomorphic, fault.QueryRejected},
		{"quantile", quantile, Plaintext, fault.QueryRejected},
		{"unknown aggregation", countBySex(), "secret-sharing", fault.Invalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewFederatedPlan(c.q, Cost{Epsilon: 1}, Limits{}, 3, c.agg)
			if fault.KindOf(err) != c.want {
				t.Fatalf("err %v, want %s", err, c.want.Code())
			}
		})
	}
}

// TestFederatedDefaultDelta: without a delta, a federated query spends
// FederatedDelta and is Gaussian.
func TestFederatedDefaultDelta(t *testing.T) {
	p, err := NewFederatedPlan(countBySex(), Cost{Epsilon: 1}, Limits{}, 3, Homomorphic)
	if err != nil {
		t.Fatal(err)
	}
	if p.Cost.Delta != FederatedDelta || p.Mechanism != Gaussian {
		t.Errorf("cost %+v mechanism %s, want delta %g and gaussian", p.Cost, p.Mechanism, FederatedDelta)
	}
}

// TestGaussianSigmaIsLinear is what share noise rests on: asking the
// library for sensitivity linf/d draws noise of sigma/d.
func TestGaussianSigmaIsLinear(t *testing.T) {
	for _, d := range []float64{math.Sqrt(3), math.Sqrt(8)} {
		whole := noise.SigmaForGaussian(4, 5, 0.3, 1e-7)
		part := noise.SigmaForGaussian(4, 5/d, 0.3, 1e-7)
		if math.Abs(whole/d-part)/part > 1e-6 {
			t.Errorf("d=%g: sigma %g / d = %g, sigma of linf/d %g", d, whole, whole/d, part)
		}
	}
}

// TestFederatedShares adds up three nodes' shares many times and checks
// that the pooled noise has the variance the plan declares: sigma^2 under
// encryption (each node adds sigma^2/3), 3 sigma^2 in the clear. With 3000
// sums the sample variance has a relative standard error of about
// sqrt(2/3000) = 2.6%; the test allows 5 of them (failure rate below 1e-6).
func TestFederatedShares(t *testing.T) {
	const nodes, draws = 3, 3000
	for _, agg := range []Aggregation{Homomorphic, Plaintext} {
		t.Run(string(agg), func(t *testing.T) {
			p, err := NewFederatedPlan(countBySex(), Cost{Epsilon: 0.5, Delta: 1e-6}, Limits{}, nodes, agg)
			if err != nil {
				t.Fatal(err)
			}
			if p.Width() != 2*2 {
				t.Fatalf("width %d, want 2 groups x (users, count)", p.Width())
			}
			// Node results: only F at node 0, only M at node 1, both at 2.
			results := []*engine.Result{sexRows([]any{"F", int64(100), int64(100)}), sexRows([]any{"M", int64(50), int64(50)}), sexResult(20, 30)}
			var sumF, sumSqF float64
			for i := 0; i < draws; i++ {
				total := make([]float64, p.Width())
				for _, r := range results {
					share, err := p.Share(r)
					if err != nil {
						t.Fatal(err)
					}
					for j, v := range share {
						total[j] += v
					}
				}
				dev := total[1] - 120 // F's count: 100 + 0 + 20
				sumF += dev
				sumSqF += dev * dev
			}
			variance := sumSqF/draws - (sumF/draws)*(sumF/draws)
			sigma := p.sigma(1)
			want := sigma * sigma
			if agg == Plaintext {
				want *= nodes
			}
			if math.Abs(variance-want)/want > 5*math.Sqrt(2.0/draws) {
				t.Errorf("pooled variance %g, want %g", variance, want)
			}
			a, err := p.Combine(make([]float64, p.Width()))
			if err != nil {
				t.Fatal(err)
			}
			if a.Privacy.SuppressedGroups != 2 || len(a.Rows) != 0 {
				t.Errorf("an all-zero sum must suppress both groups: %+v", a)
			}
			if got := a.Privacy.Columns["n"].NoiseScale; math.Abs(got-math.Sqrt(want)) > 1e-9*got {
				t.Errorf("reported noise scale %g, want %g", got, math.Sqrt(want))
			}
		})
	}
}

// TestCombine checks that a sum is turned into the answer: groups under k
// suppressed, averages derived from count and centred sum.
func TestCombine(t *testing.T) {
	q := countBySex()
	q.Aggs = append(q.Aggs, sandbox.Agg{Name: "mean_age", Kind: sandbox.Avg, Min: 0, Max: 100})
	q.Outputs = append(q.Outputs, sandbox.Output{Name: "mean_age", Group: -1, Agg: 1})
	p, err := NewFederatedPlan(q, Cost{Epsilon: 1, Delta: 1e-6}, Limits{}, 3, Homomorphic)
	if err != nil {
		t.Fatal(err)
	}
	// Per group: users, count, n, centred sum. F: 500 patients aged 40 on
	// average (centred: -10 each); M: 5 patients, under k = 10.
	sum := []float64{500, 500, 500, -5000, 5, 5, 5, 0}
	a, err := p.Combine(sum)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Rows) != 1 || a.Privacy.SuppressedGroups != 1 {
		t.Fatalf("rows %v suppressed %d", a.Rows, a.Privacy.SuppressedGroups)
	}
	if a.Rows[0][0] != "F" || a.Rows[0][1] != int64(500) || math.Abs(a.Rows[0][2].(float64)-40) > 1e-9 {
		t.Errorf("row %v, want [F 500 40]", a.Rows[0])
	}
	if a.Privacy.Mechanism != Gaussian || a.Privacy.Delta != 1e-6 {
		t.Errorf("report %+v", a.Privacy)
	}
	if _, err := p.Combine(sum[:4]); err == nil {
		t.Error("a short sum must be refused")
	}
}

func sexRows(rows ...[]any) *engine.Result {
	return &engine.Result{
		Columns: []engine.Column{{Name: "__g0", Type: "VARCHAR"}, {Name: "__users", Type: "BIGINT"}, {Name: "__c0", Type: "BIGINT"}},
		Rows:    rows,
	}
}
