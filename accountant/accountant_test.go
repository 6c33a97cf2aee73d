package accountant

import (
	"math"
	"testing"
)

// TestEpsilonKnownValues checks the conversion against values from the
// bisection of Canonne, Kamath and Steinke's own code (cdp2adp: delta at
// the best order, then epsilon by bisection on delta), and against the
// simple bound, which it must beat.
func TestEpsilonKnownValues(t *testing.T) {
	for _, c := range []struct{ rho, delta, eps float64 }{
		{0.5, 1e-6, 5.221534444530169},
		{1.0, 1e-5, 7.0771966958063395},
		{0.1, 1e-6, 2.141938928385474},
		{0.01, 1e-8, 0.752325885458362},
		{0.005, 5e-6, 0.39244611687108316},
		{2.0, 1e-9, 14.150147553874598},
	} {
		got := Epsilon(c.rho, c.delta)
		if math.Abs(got-c.eps) > 1e-9*c.eps {
			t.Errorf("Epsilon(%g, %g) = %.15g, want %.15g", c.rho, c.delta, got, c.eps)
		}
		if simple := SimpleEpsilon(c.rho, c.delta); got >= simple {
			t.Errorf("Epsilon(%g, %g) = %g, not below the simple bound %g", c.rho, c.delta, got, simple)
		}
	}
}

// TestEpsilonAgainstDeltaAndGaussian checks, over a range of rho and
// delta, that the conversion is valid and tight: its dual Delta at the
// epsilon found is delta; it is never above the simple bound; and it is
// never below the exact epsilon of the Gaussian mechanism, which is
// exactly rho-zCDP for sigma = 1/sqrt(2 rho) (Balle and Wang 2018), so no
// valid conversion can be smaller.
func TestEpsilonAgainstDeltaAndGaussian(t *testing.T) {
	for _, rho := range []float64{1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.2, 1, 5, 20} {
		for _, delta := range []float64{1e-12, 1e-9, 1e-6, 5e-6, 1e-3} {
			eps := Epsilon(rho, delta)
			if simple := SimpleEpsilon(rho, delta); eps > simple {
				t.Errorf("rho %g delta %g: epsilon %g above the simple bound %g", rho, delta, eps, simple)
			}
			if d := Delta(rho, eps); d > delta*(1+1e-6) || d < delta*(1-1e-3) {
				t.Errorf("rho %g delta %g: epsilon %g gives delta %g", rho, delta, eps, d)
			}
			sigma := 1 / math.Sqrt(2*rho)
			if d := gaussianDelta(sigma, eps); d > delta*(1+1e-9) {
				t.Errorf("rho %g delta %g: epsilon %g is below the Gaussian mechanism's own (its delta there is %g)", rho, delta, eps, d)
			}
			if exact := gaussianEpsilon(sigma, delta); eps > exact*1.25+0.01 {
				t.Errorf("rho %g delta %g: epsilon %g far above the Gaussian mechanism's exact %g", rho, delta, eps, exact)
			}
		}
	}
}

// gaussianDelta is the exact privacy profile of the Gaussian mechanism of
// sensitivity 1 and standard deviation sigma (Balle and Wang 2018).
func gaussianDelta(sigma, eps float64) float64 {
	phi := func(x float64) float64 { return 0.5 * math.Erfc(-x/math.Sqrt2) }
	return phi(-eps*sigma+1/(2*sigma)) - math.Exp(eps)*phi(-eps*sigma-1/(2*sigma))
}

func gaussianEpsilon(sigma, delta float64) float64 {
	lo, hi := 0.0, 1.0
	for gaussianDelta(sigma, hi) > delta {
		hi *= 2
	}
	for i := 0; i < 200; i++ {
		mid := (lo + hi) / 2
		if gaussianDelta(sigma, mid) > delta {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

func TestCosts(t *testing.T) {
	if math.Abs(Laplace(0.1)-0.005) > 1e-15 {
		t.Errorf("Laplace(0.1) = %g", Laplace(0.1))
	}
	if g := Gaussian(2, 4); g != 0.125 {
		t.Errorf("Gaussian(2, 4) = %g", g)
	}
	if Epsilon(0, 1e-6) != 0 || !math.IsInf(Epsilon(1, 0), 1) {
		t.Error("edge cases")
	}
}

// TestUnitsAreExact adds decimal epsilons that floats cannot add exactly.
func TestUnitsAreExact(t *testing.T) {
	var s Spent
	for i := 0; i < 29; i++ {
		s = s.Plus(Charge{Epsilon: 0.1, Delta: 1e-8}.Units())
	}
	if got := Figure(s.EpsilonSum, EpsilonScale); got != 2.9 {
		t.Errorf("29 x 0.1 = %v", got)
	}
	if got := Figure(s.DeltaSum, DeltaScale); got != 2.9e-7 {
		t.Errorf("29 x 1e-8 = %v", got)
	}
	if Up(1.0000001e-6, EpsilonScale) != 2 || Up(0.3, EpsilonScale) != 300000 || Up(1e-6/3, DeltaScale) != 333333334 {
		t.Errorf("rounding: %d %d %d", Up(1.0000001e-6, EpsilonScale), Up(0.3, EpsilonScale), Up(1e-6/3, DeltaScale))
	}
}

// TestPositionTakesTheBetterGuarantee: a few queries are cheapest by the
// plain sum, many by zCDP; the delta set aside for the conversion is
// never used by the sum.
func TestPositionTakesTheBetterGuarantee(t *testing.T) {
	b := Budget{Epsilon: 3, Delta: 1e-5}
	one := Pure(0.1, 1e-8).Units()
	var s Spent
	n := 0
	for {
		next := s.Plus(one)
		p := b.Position(next)
		if !p.Fits {
			break
		}
		s, n = next, n+1
		if n == 1 && (p.By != "sum" || p.EpsilonSpent != 0.1 || p.DeltaSpent != 1e-8) {
			t.Errorf("one query: %+v", p)
		}
	}
	if n <= 30 {
		t.Errorf("%d queries of 0.1 fit epsilon 3; the plain sum alone pays for 30", n)
	}
	p := b.Position(s)
	if p.By != "zcdp" || p.EpsilonSpent > 3 || math.Abs(p.DeltaSpent-(5e-6+float64(n)*1e-8)) > 1e-18 {
		t.Errorf("after %d: %+v", n, p)
	}
	t.Logf("Laplace queries of epsilon 0.1 within epsilon 3: %d (the sum: 30)", n)
	// Without delta the sum is the only guarantee.
	if p := (Budget{Epsilon: 3}).Position(Pure(0.1, 0).Units()); !p.Fits || p.By != "sum" {
		t.Errorf("no delta: %+v", p)
	}
	// A query whose delta the grant cannot pay is refused for delta.
	if p := (Budget{Epsilon: 3, Delta: 1e-9}).Position(Pure(0.1, 1e-8).Units()); p.Fits || p.Short != "delta" {
		t.Errorf("delta short: %+v", p)
	}
}

// TestGaussianCostsGrowLikeSqrtK: k Gaussian quantities of the same rho
// cost about sqrt(k) times one's share: quadrupling k doubles the
// epsilon spent (up to the conversion's rho term), where the plain sum
// would quadruple.
func TestGaussianCostsGrowLikeSqrtK(t *testing.T) {
	rho := Gaussian(1, 40) // one count of sensitivity 1 with sigma 40
	delta := 5e-6
	prev := 0.0
	for _, k := range []float64{25, 100, 400, 1600} {
		e := Epsilon(k*rho, delta)
		if prev > 0 {
			if r := e / prev; r < 1.8 || r > 2.2 {
				t.Errorf("k %g: epsilon %g is %g times that of k/4", k, e, r)
			}
		}
		prev = e
	}
}

// TestByReadsWhatPositionChose: the guarantee named from a stored charge
// is the one Position chose, for spends of Laplace and Gaussian queries
// under budgets with and without delta, up to and past exhaustion.
func TestByReadsWhatPositionChose(t *testing.T) {
	gauss := Charge{Epsilon: 0.5, Delta: 1e-7, Rho: Gaussian(1, 4), DeltaPartition: 1e-9}
	for _, tc := range []struct {
		name   string
		budget Budget
		each   Charge
	}{
		{"laplace", Budget{Epsilon: 3, Delta: 1e-5}, Pure(0.1, 1e-8)},
		{"laplace without delta", Budget{Epsilon: 3}, Pure(0.1, 0)},
		{"gaussian", Budget{Epsilon: 5, Delta: 1e-5}, gauss},
		{"gaussian, small delta", Budget{Epsilon: 5, Delta: 2e-7}, gauss},
		{"tiny", Budget{Epsilon: 0.001, Delta: 1e-6}, Pure(1e-6, 1e-12)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s Spent
			seen := map[string]bool{}
			for i := 0; i < 400; i++ {
				p := tc.budget.Position(s)
				if got := tc.budget.By(s, p.EpsilonUnits); p.Fits && got != p.By {
					t.Fatalf("after %d: By says %q, Position chose %q (%+v)", i, got, p.By, p)
				}
				seen[p.By] = true
				s = s.Plus(tc.each.Units())
			}
			t.Logf("guarantees chosen: %v", seen)
		})
	}
}
