package privacy

import (
	"math"
	"sort"
	"testing"

	"github.com/google/differential-privacy/go/v3/noise"

	"github.com/hospital/gateway/sandbox"
)

// TestTreeIntervalHoldsTheQuantile draws noisy trees over data of known
// shape, from noise far below the counts to noise that swamps them, and
// checks that the interval holds the exact quantile of the leaves in at
// least 93% of draws (95% less twice the standard error over this many),
// and that it is narrow when the noise is small.
func TestTreeIntervalHoldsTheQuantile(t *testing.T) {
	skewed := map[int]float64{} // 10,000 rows in the lowest 1% of the range
	for i := 0; i < 40; i++ {
		skewed[i] = 250
	}
	uniform := map[int]float64{} // 40,960 rows over the whole range
	for i := 0; i < treeLeaves; i++ {
		uniform[i] = 10
	}
	twoPeaks := map[int]float64{} // 3,000 rows in two clusters
	for i := 0; i < 10; i++ {
		twoPeaks[500+i] = 100
		twoPeaks[3000+i] = 200
	}
	lap := noise.Laplace()
	for _, tc := range []struct {
		name   string
		leaves map[int]float64
		q      float64
		scale  float64 // Laplace scale of each node's noise
		narrow float64 // most mean width expected, as a share of the range
	}{
		{"skewed median, small noise", skewed, 0.5, 3, 0.01},
		{"skewed median, noise near the counts", skewed, 0.5, 300, 1},
		{"uniform p10, small noise", uniform, 0.1, 10, 0.02},
		{"uniform p90, large noise", uniform, 0.9, 3000, 1},
		{"two peaks median, small noise", twoPeaks, 0.5, 2, 0.7},
		{"two peaks p25, noise swamping the counts", twoPeaks, 0.25, 5000, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := sandbox.Agg{Kind: sandbox.Quantile, Min: 0, Max: 4096, Q: tc.q}
			truth := exactQuantile(tc.leaves, tc.q)
			const trials = 300
			held, width := 0, 0.0
			for range trials {
				tr := newTree(tc.leaves, func(x float64) float64 {
					v, err := lap.AddNoiseFloat64(x, 1, tc.scale, 1, 0)
					if err != nil {
						t.Fatal(err)
					}
					return v
				})
				lo, hi := tr.interval(a, 2*tc.scale*tc.scale, 0, quantileZ)
				if lo <= truth && truth <= hi {
					held++
				}
				width += (hi - lo) / (a.Max - a.Min)
			}
			share := float64(held) / trials
			if share < 0.93 {
				t.Errorf("interval held the exact quantile %g in %.1f%% of draws, want at least 93%%", truth, 100*share)
			}
			if w := width / trials; w > tc.narrow {
				t.Errorf("mean width %.4f of the range, want at most %g", w, tc.narrow)
			}
		})
	}
}

// exactQuantile is the value at share q of the rows of leaves, each leaf
// one unit of value wide, its rows spread evenly within it.
func exactQuantile(leaves map[int]float64, q float64) float64 {
	keys := make([]int, 0, len(leaves))
	total := 0.0
	for k, v := range leaves {
		keys = append(keys, k)
		total += v
	}
	sort.Ints(keys)
	cum := 0.0
	for _, k := range keys {
		if cum+leaves[k] >= q*total {
			return float64(k) + (q*total-cum)/leaves[k]
		}
		cum += leaves[k]
	}
	return math.NaN()
}

// TestTreeIntervalInterpolates: quantile_cont interpolates between the
// values either side of position q*(N-1), so across a gap its exact
// answer lies between them, and so must the interval, even without noise.
func TestTreeIntervalInterpolates(t *testing.T) {
	leaves := map[int]float64{4000: 1}
	for i := 1; i <= 9; i++ {
		leaves[i] = 1
	}
	exact := func(x float64) float64 { return x }
	for _, tc := range []struct {
		q, truth float64 // DuckDB's quantile_cont over the values 1..9, 4000
	}{{0.95, 2204.05}, {0.05, 1.45}, {0.5, 5.5}} {
		a := sandbox.Agg{Kind: sandbox.Quantile, Min: 0, Max: 4096, Q: tc.q}
		lo, hi := newTree(leaves, exact).interval(a, 0, 0, quantileZ)
		if tc.truth < lo || tc.truth > hi {
			t.Errorf("q %g: interval [%g, %g] misses %g", tc.q, lo, hi, tc.truth)
		}
	}
}

// TestTreeIntervalWithoutAFiniteCut: a count of cut rows, or a variance,
// that is not a finite number bounds nothing, so the interval is the
// whole range instead of a point the comparisons with NaN would give.
func TestTreeIntervalWithoutAFiniteCut(t *testing.T) {
	leaves := map[int]float64{}
	for i := 0; i < 100; i++ {
		leaves[i*40] = 3
	}
	exact := func(x float64) float64 { return x }
	a := sandbox.Agg{Kind: sandbox.Quantile, Min: 0, Max: 4096, Q: 0.5}
	for _, tc := range []struct {
		name          string
		variance, cut float64
	}{
		{"cut NaN", 1, math.NaN()},
		{"cut infinite", 1, math.Inf(1)},
		{"variance NaN", math.NaN(), 0},
		{"variance infinite", math.Inf(1), 5},
	} {
		lo, hi := newTree(leaves, exact).interval(a, tc.variance, tc.cut, quantileZWithCut)
		if lo != a.Min || hi != a.Max {
			t.Errorf("%s: interval [%g, %g], want the whole range [%g, %g]", tc.name, lo, hi, a.Min, a.Max)
		}
	}
	// A finite cut still narrows it.
	if lo, hi := newTree(leaves, exact).interval(a, 1, 3, quantileZWithCut); lo == a.Min && hi == a.Max {
		t.Errorf("finite cut: interval [%g, %g] is the whole range", lo, hi)
	}
}
