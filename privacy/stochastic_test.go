package privacy

import (
	"math"
	"testing"
)

// The distribution check, in the manner of a DP stochastic tester: draw a
// mechanism's output many times on two neighbouring inputs, histogram both,
// and check in every bucket that P(out in B | x) <= e^eps P(out in B | x') +
// delta, with each estimate given a Hoeffding margin
// t = sqrt(ln(2/beta) / 2n). With beta = 1e-10 per estimate and at most 40
// buckets and 2 directions, a correct mechanism fails with probability
// below 2 * 2 * 40 * 1e-10 < 1e-7 per check: the documented false-failure
// rate. The check has power against gross violations only (noise several
// times too small, or none), which is what it is for; the exact
// calibration is checked by the sensitivity tester and the scale tests.

const (
	draws = 40000
	beta  = 1e-10
)

// releasedCount releases SELECT sex, count(*) over per-patient rows with
// F = f, and returns F's released count, or -1 when it is suppressed.
func releasedCount(t *testing.T, p *Plan, f int64) int64 {
	a, err := p.Release(sexResult(f, 5000))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range a.Rows {
		if r[0] == "F" {
			return r[1].(int64)
		}
	}
	return -1
}

// histogram buckets outputs: one bucket per value within width of centre,
// one below, one above, and one for suppression.
func histogram(out []int64, centre int64, width int64) map[int64]float64 {
	h := map[int64]float64{}
	for _, v := range out {
		switch {
		case v < 0:
			v = -1 << 40
		case v < centre-width:
			v = centre - width - 1
		case v > centre+width:
			v = centre + width + 1
		}
		h[v]++
	}
	for k := range h {
		h[k] /= float64(len(out))
	}
	return h
}

// violations counts buckets where a and b are, beyond the margins, not
// (eps, delta)-close in either direction.
func violations(a, b map[int64]float64, eps, delta float64) int {
	tm := math.Sqrt(math.Log(2/beta) / (2 * draws))
	bad := 0
	for _, pair := range [][2]map[int64]float64{{a, b}, {b, a}} {
		x, y := pair[0], pair[1]
		for k, px := range x {
			if px-tm > math.Exp(eps)*(y[k]+tm)+delta {
				bad++
			}
		}
	}
	return bad
}

func TestLaplaceCountIsDP(t *testing.T) {
	const eps = 2.0 // large, so that a violation would stand out
	p, err := NewPlan(countBySex(), Cost{Epsilon: eps}, Limits{MaxEpsilon: eps})
	if err != nil {
		t.Fatal(err)
	}
	sample := func(f int64, scale float64) []int64 {
		out := make([]int64, draws)
		for i := range out {
			if scale == 1 {
				out[i] = releasedCount(t, p, f)
			} else {
				// A broken mechanism, for the check's power: a tenth of
				// the noise.
				out[i] = f + int64(math.Round((float64(releasedCount(t, p, f))-float64(f))*scale))
			}
		}
		return out
	}
	x, y := histogram(sample(1000, 1), 1000, 8), histogram(sample(1001, 1), 1000, 8)
	if n := violations(x, y, eps, p.Cost.Delta); n > 0 {
		t.Errorf("the released count is not %g-DP in %d buckets: %v vs %v", eps, n, x, y)
	}
	xb, yb := histogram(sample(1000, 0.1), 1000, 8), histogram(sample(1001, 0.1), 1000, 8)
	if violations(xb, yb, eps, p.Cost.Delta) == 0 {
		t.Errorf("the check does not see a mechanism with a tenth of the noise")
	}
}

// TestNoisyKRule: a group of exactly k patients, whose neighbour of k-1 is
// always suppressed, is released with probability at most delta (so never
// in the draws); a group far above k always is.
func TestNoisyKRule(t *testing.T) {
	p, err := NewPlan(countBySex(), Cost{Epsilon: 1}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	k := int64(p.K)
	at, far := 0, 0
	for range draws / 4 {
		if releasedCount(t, p, k) >= 0 {
			at++
		}
		if releasedCount(t, p, k+200) >= 0 {
			far++
		}
		if releasedCount(t, p, k-1) >= 0 {
			t.Fatalf("a group under k was released")
		}
	}
	if tm := math.Sqrt(math.Log(2/beta) / (2 * draws / 4)); float64(at)/(draws/4) > p.Cost.Delta+tm {
		t.Errorf("a group of exactly k released %d times in %d", at, draws/4)
	}
	if far != draws/4 {
		t.Errorf("a group of k+200 released %d times in %d", far, draws/4)
	}
}
