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
// flat noisy histogram useless for skewed data.
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
	// once is set on a resampled tree, read by one descent that reads
	// each node at most once: its nodes are not kept, so simulating an
	// interval allocates nothing per draw.
	once bool
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
	if t.once {
		return t.noise(l, i)
	}
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

// resampled is a tree whose nodes are t's noisy nodes with fresh noise
// added, for simulating the spread of the released quantile with one
// descent.
func (t *tree) resampled(draw func() float64) *tree {
	out := &tree{exact: t.exact, once: true}
	out.noise = func(l, i int) float64 { return t.node(l, i) + draw() }
	return out
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
