package privacy

import (
	"math"

	"github.com/hospital/gateway/sandbox"
)

// Quantiles are read off a noisy tree over the column's declared range, as in
// Google's bounded quantiles: DuckDB counts rows per leaf (4096 equal-width
// leaves), Go sums leaves into a tree of branching 16 and height 3, noises
// every node it reads (each row adds to one node per level, so each level
// spends a third of the quantile's epsilon), and the quantile is found by
// descending from the root, at each node choosing the child where the noisy
// cumulative count reaches the wanted share. Noise on empty ranges then only distorts
// the choice among 16 siblings, not the whole range, which is what makes a
// flat noisy histogram useless for skewed data. The interval of a quantile
// comes from the same noisy tree (see interval).
const (
	treeBranching = 16
	treeLevels    = 3
	treeLeaves    = 4096 // treeBranching ^ treeLevels
)

// tree holds exact counts per level (level 0 has 16 nodes, level 2 has
// 4096) and noises a node the first time the descent reads it. Drawing each
// node's independent noise when it is first read gives the released
// quantile exactly the distribution it has when every node is noised up
// front, but a descent reads 48 nodes, not 4368, and the secure noise of
// the DP library is the costly part of a quantile's release.
type tree struct {
	exact [treeLevels][]float64
	noisy [treeLevels][]float64
	drawn [treeLevels][]bool
	noise func(l, i int) float64
}

func newTree(leaves map[int]float64, noisy func(float64) float64) *tree {
	t := &tree{}
	exact := make([]float64, treeLeaves)
	for k, v := range leaves {
		if k >= 0 && k < treeLeaves {
			exact[k] = v
		}
	}
	for l := treeLevels - 1; l >= 0; l-- {
		n := int(math.Pow(treeBranching, float64(l+1)))
		if l < treeLevels-1 {
			sums := make([]float64, n)
			for i, v := range exact {
				sums[i/treeBranching] += v
			}
			exact = sums
		}
		t.exact[l] = exact
	}
	t.noise = func(l, i int) float64 { return noisy(t.exact[l][i]) }
	return t
}

// node is the noisy count of node i of level l.
func (t *tree) node(l, i int) float64 {
	if t.drawn[l] == nil {
		t.drawn[l] = make([]bool, len(t.exact[l]))
		t.noisy[l] = make([]float64, len(t.exact[l]))
	}
	if !t.drawn[l][i] {
		t.noisy[l][i] = t.noise(l, i)
		t.drawn[l][i] = true
	}
	return t.noisy[l][i]
}

// quantile descends the tree to a's quantile.
func (t *tree) quantile(a sandbox.Agg) float64 {
	q := a.Q
	lo, width := 0, treeLeaves
	node := 0
	for l := 0; l < treeLevels; l++ {
		var children [treeBranching]float64
		total := 0.0
		for i := range children {
			children[i] = t.node(l, node*treeBranching+i)
			total += math.Max(0, children[i])
		}
		width /= treeBranching
		if total <= 0 {
			// Nothing left to go on: interpolate across this node's range.
			return clamp(a.Min+(float64(lo)+q*float64(width*treeBranching))/treeLeaves*(a.Max-a.Min), a.Min, a.Max)
		}
		target := q * total
		cum := 0.0
		pick := treeBranching - 1
		for i, c := range children {
			c = math.Max(0, c)
			if cum+c >= target && c > 0 {
				pick = i
				break
			}
			cum += c
		}
		c := math.Max(0, children[pick])
		q = 0.5
		if c > 0 {
			q = clamp((target-cum)/c, 0, 1)
		}
		node = node*treeBranching + pick
		lo += pick * width
	}
	frac := q
	if a.Disc {
		frac = 0.5
	}
	return clamp(a.Min+(float64(lo)+frac)/treeLeaves*(a.Max-a.Min), a.Min, a.Max)
}

// Intervals of a tree quantile invert a test on ranks rather than
// simulating the descent around the released tree. Redrawing noise around
// released nodes assumes they are the truth, which fails exactly where
// intervals matter: when noise rivals a group's count, the descent is
// drawn towards the middle of the range and so is every redrawn descent,
// and the interval held the exact median in about 40% of groups.
//
// For a leaf boundary b, the noisy count of values below b is the sum of
// the fewest nodes covering [0, b) (whole nodes of level 0, then of level 1
// within the next level-0 node, then leaves), and the noisy total is the
// sum of level 0. D(b) = below(b) - q*total is then unbiased for the exact
// difference, whatever the data, with variance v*((1-q)^2*k0 + q^2*(16-k0)
// + k1 + k2) for k0, k1, k2 nodes of each level below b and v each node's
// noise variance. The exact quantile's leaf starts at the last boundary b*
// whose exact difference is at most 0. The lower end is found level by
// level: at level 0, the first node whose end is not confidently below the
// quantile (D + z*sd >= 0); within it, the first level-1 node likewise;
// then the first leaf. It can pass b* only if the one boundary after b* at
// some level is rejected while its exact difference is positive: at most
// three one-sided tests, so each takes alpha/3. The upper end is the
// mirror, counting from the right. Only nodes of the searched ranges are
// read, most of them already read by the descent: at most 30 more a side,
// noised like the rest (the release already accounts for every node of
// the tree), so the interval is post-processing of the noisy tree.

// Each of the three tests of an interval's end errs on one side with
// probability at most 2.5%/3, so that with both ends the interval misses
// the exact quantile of the bounded, clamped rows with probability at most
// 5%; with rows cut by the contribution bound, the tests take 1.25%/3 each
// and the count of rows cut (its 97.5% upper end) the rest. The z values
// are the normal quantiles for those (2.39 and 2.64), rounded up for the
// tails of Laplace sums, heavier than normal for a handful of terms: every
// difference sums at least the 16 level-0 nodes.
const (
	quantileZ        = 2.5
	quantileZWithCut = 2.75
)

// A patient's rows cut by the bound (rank above it) would have been among
// the rows counted: with at most cut of them in the group, the exact
// quantile of all rows has a difference D in the bounded rows between
// -(1-q)*cut and q*cut, so each end's test allows that much more.

// interval is the range of values that holds a's exact quantile with
// probability at least 95%, given the variance of each node's noise and
// an upper end for the rows the bound cut from the group (0 when it cut
// none; z is quantileZ then, else quantileZWithCut).
//
// A cut that is not a finite number (noise that overflowed) bounds
// nothing: the interval is then the whole range.
func (t *tree) interval(a sandbox.Agg, variance, cut, z float64) (lo, hi float64) {
	if math.IsNaN(cut) || math.IsInf(cut, 0) || math.IsNaN(variance) || math.IsInf(variance, 0) {
		return a.Min, a.Max
	}
	total := 0.0
	for i := range treeBranching {
		total += t.node(0, i)
	}
	leaf := (a.Max - a.Min) / treeLeaves
	// quantile_disc (and median over an odd count) is the value of rank
	// q*N; quantile_cont interpolates at position q*(N-1), which can lie
	// up to q rows below that rank (1-q above it, seen from the right).
	rows := total
	if !a.Disc {
		rows = total - 1
	}
	lo = a.Min + float64(t.lowerEnd(rows, a.Q, variance, cut, z, false))*leaf
	hi = a.Max - float64(t.lowerEnd(rows, 1-a.Q, variance, cut, z, true))*leaf
	return lo, hi
}

// lowerEnd is the first leaf of the interval's lower end for quantile q of
// rows (the noisy total, less one for interpolation; see interval).
// Mirrored, it reads the tree from the right: the lower end of quantile
// 1-q from the right is the upper end of q, as a count of leaves from the
// right end. The count below a boundary is summed from the level's start
// (from its end, mirrored), so each side reads only the nodes up to the
// one it picks at each level.
func (t *tree) lowerEnd(rows, q, variance, cut, z float64, mirror bool) int {
	at := func(l, i int) float64 {
		if mirror {
			i = len(t.exact[l]) - 1 - i
		}
		return t.node(l, i)
	}
	// sd is the standard deviation of below(b) - q*total, b summed from
	// its fewest nodes.
	sd := func(b int) float64 {
		k0 := b / (treeLeaves / treeBranching)
		k1 := b / treeBranching % treeBranching
		k2 := b % treeBranching
		n := (1-q)*(1-q)*float64(k0) + q*q*float64(treeBranching-k0) + float64(k1+k2)
		return math.Sqrt(n * variance)
	}
	start, below, width := 0, 0.0, treeLeaves
	for l := 0; l < treeLevels; l++ {
		width /= treeBranching
		first := start / width
		// The first child whose end is not confidently below the
		// quantile; the last child ends where its parent, picked at the
		// level above, does.
		pick := treeBranching - 1
		for j := 0; j < treeBranching-1; j++ {
			c := at(l, first+j)
			if below+c-q*rows+z*sd(start+(j+1)*width)+(1-q)*cut >= 0 {
				pick = j
				break
			}
			below += c
		}
		start += pick * width
	}
	return start
}
