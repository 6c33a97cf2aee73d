package privacy

import (
	"fmt"
	"math"

	"github.com/google/differential-privacy/go/v3/noise"

	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/sandbox"
)

// The shares of a query's noise epsilon that go to choosing its
// contribution bound and to estimating what the bound cut (see the package
// comment). Both are stated in every answer's privacy block.
const (
	// BoundShare is spent on the noisy histogram of rows per patient from
	// which the bound is chosen, when the researcher does not set one.
	BoundShare = 0.1
	// BiasShare is spent, split over the bias quantities, on the per-cell
	// estimates of the rows and values the bound cut, when the bound is
	// below the policy's maximum.
	BiasShare = 0.2
)

// Contribution says how a plan bounds each patient's contribution: the
// bound it used, the policy's maximum, how the bound was chosen and at what
// cost, and the noisy number of patients with more rows than the maximum
// (whose excess no estimate covers).
type Contribution struct {
	// Bound is the rows a patient may add: in all groups together when
	// PerPatient, else in each group.
	Bound      int64 `json:"bound"`
	Max        int64 `json:"max"`
	PerPatient bool  `json:"per_patient"`
	// ChosenBy is "dp_quantile" (from a noisy histogram of rows per
	// patient), "request" (the researcher's contribution_bound) or
	// "policy" (the maximum, when there is nothing to choose).
	ChosenBy string  `json:"chosen_by"`
	Epsilon  float64 `json:"epsilon"`
	// BiasEpsilon is what the per-cell bias estimates spent.
	BiasEpsilon float64 `json:"bias_epsilon"`
	// CutMax is the most rows per patient the bias estimates count: Max,
	// or, when the bound is chosen from a histogram, the top of its
	// highest bin that clearly holds patients (at least the bound).
	CutMax int64 `json:"cut_max"`
	// PatientsOverMax is the noisy count of patients with more rows than
	// CutMax, from the same histogram (nil when no histogram was drawn):
	// their rows beyond it are not in the bias estimates.
	PatientsOverMax *int64 `json:"patients_over_max,omitempty"`
}

// Bounded reports whether the plan reads a table with several rows per
// patient whose bound it may choose, and if so the table whose rows per
// patient it needs counted (Choose's input) and the largest count it uses.
// A plan with a requested bound or nothing to choose needs no counts.
func (p *Plan) Bounded() (ref *sandbox.RankRef, upTo int64, ok bool) {
	if !p.choosing || p.Query.Counted == nil {
		return nil, 0, false
	}
	return p.Query.Counted, p.boundMax + 1, true
}

// Choose sets the plan's contribution bound from the table's rows per rank:
// ranks[r-1] is the number of rows of rank r, which is the number of
// patients with at least r rows, for r = 1 .. upTo (see Bounded). It draws
// a Laplace histogram of patients by their row count in geometric bins
// (each patient is in one bin, so the histogram costs BoundShare of the
// noise epsilon in all) and picks the bound that minimises the estimated
// rows cut per cell plus twice the noise scale it would bring. The exact
// counts are not kept. Choose rewrites the plan's SQL.
func (p *Plan) Choose(ranks []int64) error {
	if !p.choosing {
		return fmt.Errorf("choose bound: the plan has its bound")
	}
	if int64(len(ranks)) < p.boundMax+1 {
		return fmt.Errorf("choose bound: %d rank counts, need %d", len(ranks), p.boundMax+1)
	}
	at := func(r int64) float64 { // patients with at least r rows
		if r-1 < int64(len(ranks)) {
			return float64(ranks[r-1])
		}
		return 0
	}
	bins := boundLadder(p.boundMax)
	lap := noise.Laplace()
	type bin struct {
		lo, hi int64
		n      float64
	}
	var hist []bin
	lo := int64(1)
	for _, hi := range bins {
		n := at(lo) - at(hi+1)
		hist = append(hist, bin{lo, hi, math.Max(0, noisyFloat(lap, n, 1, 1, p.boundEps))})
		lo = hi + 1
	}
	over := math.Max(0, noisyFloat(lap, at(p.boundMax+1), 1, 1, p.boundEps))
	hist = append(hist, bin{p.boundMax + 1, p.boundMax + 1, over})
	// The bias estimates count rows up to the top of the bin after the
	// highest whose noisy count is above one noise scale: their noise
	// grows with that range, and beyond it there are few patients.
	p.cutTop = 1
	for i, b := range hist {
		if b.n >= 1/p.boundEps {
			p.cutTop = min(hist[min(i+1, len(hist)-1)].hi, p.boundMax)
		}
	}

	cells := float64(max(1, min(p.domain, 1000)))
	if p.domain == 0 {
		cells = float64(max(1, min(p.Query.GroupBound, 1000)))
	}
	best, bestCost := p.boundMax, math.Inf(1)
	for _, m := range bins {
		cut := 0.0
		for _, b := range hist {
			rep := float64(b.lo+b.hi) / 2
			if b.lo > p.boundMax {
				rep = float64(p.boundMax)
			}
			cut += b.n * math.Max(0, rep-float64(m))
		}
		p.setBound(m)
		g, c := p.noiseL0Linf()
		cost := cut/cells + 2*noiseFactor(p.Query)*float64(g)*c/p.epsEach
		if cost < bestCost {
			best, bestCost = m, cost
		}
	}
	p.setBound(best)
	beyond := 0.0
	for _, b := range hist {
		if b.lo > p.cutMax() {
			beyond += b.n
		}
	}
	n := int64(math.Round(beyond))
	p.contribution.PatientsOverMax = &n
	p.contribution.ChosenBy = "dp_quantile"
	p.choosing = false
	p.rebuild()
	return nil
}

// KeepMax gives up choosing: the plan keeps the policy's maximum bound,
// and the share of epsilon set aside for the choice stays spent.
func (p *Plan) KeepMax() {
	if !p.choosing {
		return
	}
	p.choosing = false
	p.contribution.ChosenBy = "policy"
	p.setBound(p.boundMax)
	p.rebuild()
}

// boundLadder is the candidate bounds up to max: 1, 2, 3, 4, 5, 6, 8, 10,
// 12, 16, ... (about four per doubling), and max itself.
func boundLadder(max int64) []int64 {
	var out []int64
	for _, m := range []int64{1, 2, 3, 4, 5, 6, 8, 10, 12} {
		if m < max {
			out = append(out, m)
		}
	}
	for base := int64(16); base < max; base *= 2 {
		for _, m := range []int64{base, base * 5 / 4, base * 3 / 2, base * 7 / 4} {
			if m < max {
				out = append(out, m)
			}
		}
	}
	return append(out, max)
}

// setBound sets the contribution bound to m (at most the maximum) and the
// noise epsilons that follow: the bias estimates take BiasShare when
// there is something to estimate (m is below the maximum, or clamping cuts
// values of a domain), and nothing otherwise.
func (p *Plan) setBound(m int64) {
	if p.contribution.PerPatient {
		p.rowBound = m
	} else {
		p.rowsPerGroup = m
	}
	p.contribution.Bound = m
	p.contribution.CutMax = p.cutMax()
	valueEps := p.valueEps
	p.biasQuantities, p.epsBias = p.countBiasQuantities(), 0
	if p.biasQuantities > 0 {
		p.epsBias = valueEps * BiasShare / float64(p.biasQuantities)
		valueEps *= 1 - BiasShare
	}
	p.contribution.BiasEpsilon = p.epsBias * float64(p.biasQuantities) * p.epsilonFactor()
	p.epsEach = valueEps / float64(p.quantities)
	if p.deltaTotal > 0 {
		p.deltaEach = p.deltaTotal / float64(p.quantities)
		p.psDelta = p.deltaEach
	}
}

// epsilonFactor converts noise epsilon back to the query's epsilon (the
// special-group share makes them differ).
func (p *Plan) epsilonFactor() float64 {
	if p.noiseEps == 0 {
		return 0
	}
	return p.Cost.Epsilon / p.noiseEps
}

// bounds are the L0 and Linf the value noise of a count is calibrated to
// at the current bound: bounded by rank, a patient adds at most rowBound
// rows in all, so L1 and L2 of counts are both at most rowBound, which is
// (1, rowBound); otherwise MaxGroups groups of the bound's rows each.
func (p *Plan) bounds() (G, C int64) {
	if p.rowBound > 0 {
		return 1, p.rowBound
	}
	return p.groupsPerUnit, p.rowsPerGroup
}

// noiseL0Linf is bounds with the Linf as a float, as the noise takes it.
func (p *Plan) noiseL0Linf() (int64, float64) {
	g, c := p.bounds()
	return g, float64(c)
}

// countBiasQuantities is the number of noised bias quantities per group
// (see biasCols). Quantile queries bounded per (patient, group) get none:
// their rows are kept by a window, which has no rows beyond the bound to
// count.
func (p *Plan) countBiasQuantities() int {
	n := 0
	for _, a := range p.Query.Aggs {
		if a.Kind == sandbox.Quantile && p.rowBound == 0 {
			return 0
		}
	}
	for _, a := range p.Query.Aggs {
		dc, ds := p.biasCols(a)
		if dc {
			n++
		}
		if ds {
			n++
		}
	}
	return n
}

// rowsCut reports whether the bound is below the policy's maximum, so that
// rows between them are cut.
func (p *Plan) rowsCut() bool { return p.contribution.Bound < p.cutMax() }

// cutMax is the most rows per patient (per group, in the per-group shape)
// the bias estimates count: the policy's maximum, or the top of the
// histogram's highest bin clearly holding patients (Choose), and never
// below the bound.
func (p *Plan) cutMax() int64 {
	top := p.boundMax
	if p.cutTop > 0 {
		top = min(p.cutTop, p.boundMax)
	}
	return max(top, p.contribution.Bound)
}

// rowShape reports whether the plan aggregates rows directly (one row per
// patient, or rows bounded by rank) rather than per (patient, group).
func (p *Plan) rowShape() bool { return p.Query.PerUnitRows || p.rowBound > 0 }

// biasCols says which bias estimates aggregate a gets: a count of the rows
// the bound cut (__dc, for COUNT and AVG) and the value they and clamping
// to the column's bounds cut, up to its domain (__ds, for SUM and AVG).
// AVG over the per-(patient, group) shape and COUNT(DISTINCT patient) get
// none (see the package comment).
func (p *Plan) biasCols(a sandbox.Agg) (dc, ds bool) {
	rows := p.rowsCut()
	switch a.Kind {
	case sandbox.Count:
		return rows, false
	case sandbox.Sum:
		return false, rows || valuesCut(a)
	case sandbox.Avg:
		if p.rowShape() {
			return rows, rows || valuesCut(a)
		}
	case sandbox.Quantile:
		// The rows cut shift the quantile's rank by at most their count
		// (tree.interval); clamping keeps the order of values.
		if p.rowBound > 0 {
			return rows, false
		}
	}
	return false, false
}

// biasEstimated reports whether aggregate a gets a bias estimate.
func (p *Plan) biasEstimated(a sandbox.Agg) bool {
	if p.biasQuantities == 0 {
		return false
	}
	dc, ds := p.biasCols(a)
	return dc || ds
}

// domainOf is the values a's column can hold: its declared domain when it
// holds the clamping bounds, else the clamping bounds.
func domainOf(a sandbox.Agg) (lo, hi float64) {
	if a.DomainMin > a.Min || a.DomainMax < a.Max || a.DomainMin >= a.DomainMax {
		return a.Min, a.Max
	}
	return a.DomainMin, a.DomainMax
}

// valuesCut reports whether clamping a's values to its bounds may cut
// values of its domain.
func valuesCut(a sandbox.Agg) bool {
	lo, hi := domainOf(a)
	return lo < a.Min || hi > a.Max
}

// biasSens is the Linf, per group, of aggregate a's bias columns: what
// one patient can change the rows cut (dc) and the value cut (ds) by. Rows
// up to the maximum beyond the bound each add a value of the domain; rows
// kept each add at most the width clamping cuts from a value.
func (p *Plan) biasSens(a sandbox.Agg) (dc, ds float64) {
	cut := float64(p.cutMax() - p.contribution.Bound)
	C := float64(p.contribution.Bound)
	dlo, dhi := domainOf(a)
	big := math.Max(math.Abs(dlo), math.Abs(dhi))
	clampCut := math.Max(dhi-a.Max, a.Min-dlo)
	switch a.Kind {
	case sandbox.Count, sandbox.Quantile:
		return cut, 0
	case sandbox.Sum:
		if !p.rowShape() && valuesCut(a) {
			// A (patient, group)'s sum up to the maximum over the domain,
			// less its clamped sum up to the bound.
			M := float64(p.cutMax())
			return 0, math.Max(M*math.Max(dhi, 0)-C*math.Min(a.Min, 0), C*math.Max(a.Max, 0)-M*math.Min(dlo, 0))
		}
		return 0, cut*big + C*clampCut
	case sandbox.Avg:
		mid := (a.Min + a.Max) / 2
		return cut, cut*math.Max(math.Abs(dhi-mid), math.Abs(dlo-mid)) + C*clampCut
	}
	return 0, 0
}

// requestBound checks a researcher's contribution bound against the
// policy's maximum.
func requestBound(bound, max int64, perPatient bool) error {
	if bound < 0 {
		return fault.E(fault.Invalid, "contribution_bound must be a positive number of rows")
	}
	if bound > max {
		per := "in each group"
		if perPatient {
			per = "in all groups together"
		}
		return fault.E(fault.QueryRejected, "contribution_bound %d is above the policy's maximum for this query, %d rows per patient %s; ask for at most %d", bound, max, per, max)
	}
	return nil
}

// withBias adds to c, a released cell of aggregate a from result row r,
// the noisy estimate of what the contribution bound and clamping cut (the
// __dc and __ds columns, Laplace noise at epsBias, calibrated to biasSens)
// and an interval for the exact answer that covers both the value's noise
// and the cut. Parts are the noised quantities of the value (noiseAgg).
// Everything here is post-processing of noisy values.
func (p *Plan) withBias(m mech, sim *simulator, a sandbox.Agg, ac aggCols, r []any, c cell, parts []float64) cell {
	if r == nil || !p.biasEstimated(a) {
		return c
	}
	G, C := p.noiseL0Linf()
	sdc, sds := p.biasSens(a)
	noisy := func(col int, linf float64) (float64, float64) { return p.noisyBias(r[col], linf) }
	dlo, dhi := domainOf(a)
	switch a.Kind {
	case sandbox.Count:
		v := parts[0]
		hv := m.ciAt(v, G, C, p.epsEach, 0.025)
		d, hd := noisy(ac.dc, sdc)
		c.lo, c.hi, c.own = v-hv+math.Max(0, d-hd), v+hv+math.Max(0, d+hd), true
		c.bias = int64(math.Max(0, math.Round(d)))
	case sandbox.Sum:
		big := math.Max(math.Abs(a.Min), math.Abs(a.Max))
		v := parts[0]
		hv := m.ciAt(v, G, C*big, p.epsEach, 0.025)
		d, hd := noisy(ac.ds, sds)
		lo, hi := d-hd, d+hd
		// What is cut has the sign of the domain when clamping cuts on
		// one side only.
		if dlo >= 0 && dlo == a.Min {
			d, lo, hi = math.Max(0, d), math.Max(0, lo), math.Max(0, hi)
		}
		if dhi <= 0 && dhi == a.Max {
			d, lo, hi = math.Min(0, d), math.Min(0, lo), math.Min(0, hi)
		}
		c.lo, c.hi, c.own = v-hv+lo, v+hv+hi, true
		c.bias = d
	case sandbox.Avg:
		mid, half := (a.Min+a.Max)/2, (a.Max-a.Min)/2
		hasDC, _ := p.biasCols(a)
		nc, ns := parts[0], parts[1]
		dc, bc := 0.0, 0.0
		if hasDC {
			dc, _ = noisy(ac.dc, sdc)
			bc = sdc * float64(G) / p.epsBias
		}
		ds, _ := noisy(ac.ds, sds)
		mean := func(nc, ns, dc, ds float64) float64 {
			return clamp(mid+(ns+ds)/math.Max(1, nc+math.Max(0, dc)), dlo, dhi)
		}
		est := mean(nc, ns, dc, ds)
		gauss := p.Mechanism == Gaussian
		sc, ss := p.scale(G, C), p.scale(G, C*half)
		bs := sds * float64(G) / p.epsBias
		hw := sim.spread(func() float64 {
			d := 0.0
			if hasDC {
				d = dc + sim.draw(false, bc)
			}
			return mean(nc+sim.draw(gauss, sc), ns+sim.draw(gauss, ss), d, ds+sim.draw(false, bs))
		})
		c.lo, c.hi, c.own = est-hw, est+hw, true
		c.bias = est - toFloat(c.v)
	}
	return c
}

// noisyBias is a bias column's value x noised at the bias estimates'
// epsilon (Laplace, per group Linf linf) and the half-width of its 97.5%
// interval.
func (p *Plan) noisyBias(x any, linf float64) (float64, float64) {
	lap := mech{n: noise.Laplace()}
	G, _ := p.noiseL0Linf()
	d := noisyFloat(lap.n, toFloat(x), G, linf, p.epsBias)
	return d, lap.ciAt(d, G, linf, p.epsBias, 0.025)
}

// noiseFactor is how much more a query's answer moves with its noise scale
// than a count does, for the bound's choice: a quantile's rank is read
// from up to 16 nodes a level, each level at a third of the epsilon.
func noiseFactor(q *sandbox.Query) float64 {
	for _, a := range q.Aggs {
		if a.Kind == sandbox.Quantile {
			return treeLevels * math.Sqrt(treeBranching)
		}
	}
	return 1
}
