package privacy

import (
	"cmp"
	"fmt"
	"math"
	"math/big"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/google/differential-privacy/go/v3/noise"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/sandbox"
)

// ColumnReport says how noisy one output column is.
type ColumnReport struct {
	// NoiseScale is the Laplace scale b or the Gaussian sigma of the noise
	// added to the column's underlying sum or count.
	NoiseScale float64 `json:"noise_scale"`
	// CI95 is the half-width of a 95% interval around a released value due
	// to the noise; for means and variances it is simulated from the
	// released values, for quantiles it is half the width of the interval
	// the noisy tree gives (tree.interval), and it is the largest over
	// groups.
	CI95 float64 `json:"ci95"`
}

// Report is the privacy part of a query response.
type Report struct {
	Mechanism        Mechanism               `json:"mechanism"`
	Epsilon          float64                 `json:"epsilon"`
	Delta            float64                 `json:"delta"`
	K                int                     `json:"k"`
	SuppressedGroups int                     `json:"suppressed_groups"`
	Columns          map[string]ColumnReport `json:"columns"`
	// ContributionBounds are the per-patient bounds applied.
	MaxGroupsPerPatient int64 `json:"max_groups_per_patient"`
	MaxRowsPerGroup     int64 `json:"max_rows_per_group"`
	// MaxRowsPerPatient is set when rows were bounded per patient in all
	// groups together (by rank, see the package comment).
	MaxRowsPerPatient  int64 `json:"max_rows_per_patient,omitempty"`
	PartitionSelection bool  `json:"partition_selection"`
	SpecialGroups      bool  `json:"special_groups"`
	// Contribution is how the contribution bound was set (absent when
	// every table read has one row per patient).
	Contribution *Contribution `json:"contribution,omitempty"`
	// Rho is the query's zCDP cost, and DeltaPartition and DeltaGaussian
	// how its delta splits between the k rule's threshold (partition
	// selection) and the Gaussian noise (see zcdp.go).
	Rho            float64 `json:"rho"`
	DeltaPartition float64 `json:"delta_partition"`
	DeltaGaussian  float64 `json:"delta_gaussian"`
}

// Answer is a protected answer.
type Answer struct {
	Columns []engine.Column `json:"columns"`
	Rows    [][]any         `json:"rows"`
	// Intervals is shaped like Rows: null for a group key, and for each
	// aggregate cell [low, high], a 95% interval for the exact answer: the
	// noise's interval around the released value and, where the
	// contribution bound cut rows, the interval of the value plus the
	// estimated cut (each part at 97.5%, so both hold together at 95% or
	// more), clamped to what the bounds allow. Rows beyond the policy's
	// maximum are not covered (see Contribution.PatientsOverMax).
	Intervals [][]any `json:"intervals"`
	// Bias is shaped like Rows: null for a group key and for a cell whose
	// aggregate gets no estimate, else the noisy estimate of how far the
	// contribution bound moved the value (exact answer minus the bounded
	// one, within the policy's maximum): rows cut for a count, the value
	// cut for a sum, the shift of the mean for an average.
	Bias [][]any `json:"bias"`
	// Flags is shaped like Rows: null, or the notes on a cell:
	// "wide_interval" when its interval is wider than its value.
	Flags   [][]any `json:"flags"`
	Privacy Report  `json:"privacy"`
}

// cell is one released aggregate value, its column report, its interval
// when it is not the noise's alone, and its bias estimate (nil for none).
type cell struct {
	v      any
	cr     ColumnReport
	lo, hi float64
	own    bool // lo and hi are set
	whole  bool // lo and hi are the whole interval, not widening the value's
	bias   any
}

type mech struct {
	n     noise.Noise
	delta float64
	exact bool
}

func (p *Plan) mech() mech {
	switch p.Mechanism {
	case Gaussian:
		return mech{n: noise.Gaussian(), delta: p.deltaEach}
	case None:
		return mech{exact: true}
	}
	return mech{n: noise.Laplace()}
}

// scale is the noise scale for a quantity with the given sensitivities.
func (p *Plan) scale(l0 int64, linf float64) float64 { return p.scaleAt(l0, linf, p.epsEach) }

func (p *Plan) scaleAt(l0 int64, linf, eps float64) float64 {
	if p.Mechanism == None {
		return 0
	}
	if p.Mechanism == Gaussian {
		return noise.SigmaForGaussian(l0, linf, eps, p.deltaEach)
	}
	return float64(l0) * linf / eps
}

// kThreshold is what a group's noisy patient count must reach for the
// group to be released: the Laplace threshold of partition selection for
// the plan's delta, shifted by k-1 (see the package comment).
func (p *Plan) kThreshold() (float64, error) {
	t, err := noise.Laplace().Threshold(p.thresholdL0, 1, p.epsEach, 0, p.psDelta)
	if err != nil {
		return 0, fmt.Errorf("k rule threshold: %w", err)
	}
	return t + float64(p.K-1), nil
}

// levelScale is the noise scale of one level of a quantile's tree, at its
// share of epsilon and (Gaussian) of delta.
func (p *Plan) levelScale(l0 int64, linf, eps float64) float64 {
	if p.Mechanism == Gaussian {
		return noise.SigmaForGaussian(l0, linf, eps, p.deltaEach/treeLevels)
	}
	return p.scaleAt(l0, linf, eps)
}

func (m mech) float(x float64, l0 int64, linf, eps float64) float64 {
	if m.exact {
		return x
	}
	v, err := m.n.AddNoiseFloat64(x, l0, linf, eps, m.delta)
	if err != nil {
		// Parameters are validated by NewPlan; an error here is a bug, and
		// releasing an un-noised value is never an option.
		panic(fmt.Sprintf("add noise: %v", err))
	}
	return v
}

func (m mech) ci(noised float64, l0 int64, linf, eps float64) float64 {
	return m.ciAt(noised, l0, linf, eps, 0.05)
}

// ciAt is the half-width of the noise's interval at confidence 1-alpha.
func (m mech) ciAt(noised float64, l0 int64, linf, eps, alpha float64) float64 {
	if m.exact {
		return 0
	}
	ci, err := m.n.ComputeConfidenceIntervalFloat64(noised, l0, linf, eps, m.delta, alpha)
	if err != nil {
		return math.NaN()
	}
	return (ci.UpperBound - ci.LowerBound) / 2
}

// aggColumns locates each aggregate's columns in the engine result: its
// count, sum, sum of squares, histogram, and the count and sum the
// contribution bound cut.
type aggCols struct{ c, s, q, hk, hv, dc, ds int }

// Release noises res, the result of p.SQL, into the protected answer.
func (p *Plan) Release(res *engine.Result) (*Answer, error) {
	q := p.Query
	idx := map[string]int{}
	for i, c := range res.Columns {
		idx[c.Name] = i
	}
	col := func(name string) int {
		if i, ok := idx[name]; ok {
			return i
		}
		return -1
	}
	ac := make([]aggCols, len(q.Aggs))
	for j := range q.Aggs {
		ac[j] = aggCols{col(fmt.Sprintf("__c%d", j)), col(fmt.Sprintf("__s%d", j)), col(fmt.Sprintf("__q%d", j)), col(fmt.Sprintf("__hk%d", j)), col(fmt.Sprintf("__hv%d", j)),
			col(fmt.Sprintf("__dc%d", j)), col(fmt.Sprintf("__ds%d", j))}
		if dc, ds := p.biasCols(q.Aggs[j]); p.biasQuantities > 0 && ((dc && ac[j].dc < 0) || (ds && ac[j].ds < 0)) {
			return nil, fmt.Errorf("release: result lacks the bias columns of aggregate %d", j)
		}
	}
	usersCol := col("__users")
	if usersCol < 0 {
		return nil, fmt.Errorf("release: result lacks the patient count")
	}

	rows := res.Rows
	if p.public != nil {
		rows = padPublic(rows, p.public, len(res.Columns), usersCol)
	}

	m := p.mech()
	// G and C are the L0 and Linf the noise is calibrated to.
	G, C := p.bounds()
	// The k rule (see the package comment): a group is released when its
	// exact patient count is at least k and a noisy patient count clears
	// the threshold of partition selection shifted by k-1.
	threshold := 0.0
	dp := p.Mechanism != None
	if dp {
		t, err := p.kThreshold()
		if err != nil {
			return nil, err
		}
		threshold = t
	}

	report := p.report()
	sim := newSimulator()
	out := [][]any{}
	for _, r := range rows {
		if !p.releasableKeys(r) {
			continue
		}
		// Every group draws its noisy count, whatever the exact test
		// says, so that the work done does not depend on it.
		var kept map[int]noised
		released := true
		if dp && p.kAgg >= 0 {
			j := p.kAgg
			raw, cr := p.noisyCount(m, q.Aggs[j], ac[j], r, G, C)
			kept = map[int]noised{j: {int64(math.Max(0, math.Round(raw))), cr}}
			released = raw >= threshold
		} else if dp {
			released = noisyFloat(noise.Laplace(), toFloat(r[usersCol]), p.thresholdL0, 1, p.epsEach) >= threshold
		}
		if toFloat(r[usersCol]) < float64(p.K) || !released {
			// Without partition selection the candidates are the public
			// domain (or the one group of a query without GROUP BY), so
			// the count is post-processing of the DP decisions; with it,
			// the number of candidates is itself private and not counted.
			if !p.selectGroups {
				report.SuppressedGroups++
			}
			continue
		}
		out = append(out, p.protectRow(&report, func(g int) any { return jsonValue(r[g]) }, func(j int) cell {
			if k, ok := kept[j]; ok {
				return cell{v: k.v, cr: k.cr}
			}
			c, parts := p.noiseAgg(m, sim, q.Aggs[j], ac[j], r, G, C)
			return p.withBias(m, sim, q.Aggs[j], ac[j], r, c, parts)
		}))
	}
	p.reportUnseen(&report, func(j int) ColumnReport {
		c, _ := p.noiseAgg(m, sim, q.Aggs[j], ac[j], nil, G, C)
		return c.cr
	})
	return p.answer(p.columns(res), out, report), nil
}

// answer orders the protected rows and splits them into the answer's
// arrays.
func (p *Plan) answer(cols []engine.Column, out [][]any, report Report) *Answer {
	a := &Answer{Columns: cols, Privacy: report}
	a.Rows, a.Intervals, a.Bias, a.Flags = p.split(p.arrange(out))
	return a
}

// releasableKeys reports whether a result row's group keys may appear in
// an answer: a key with a public list only takes listed values (NULL and
// anything else never form a group; registration refuses files with other
// values, so the groups stay within the bound computed before reading
// data), and no key is an infinite or NaN number, which JSON cannot carry.
// Both are decided from the key alone.
func (p *Plan) releasableKeys(r []any) bool {
	for i, g := range p.Query.Groups {
		if g.Public != nil {
			if v, ok := r[i].(string); !ok || !slices.Contains(g.Public, v) {
				return false
			}
		}
		switch v := r[i].(type) {
		case float64:
			if math.IsInf(v, 0) || math.IsNaN(v) {
				return false
			}
		case float32:
			if math.IsInf(float64(v), 0) || math.IsNaN(float64(v)) {
				return false
			}
		}
	}
	return true
}

// report is the privacy block of the plan's answers, before any column.
func (p *Plan) report() Report {
	report := Report{
		Mechanism: p.Mechanism, Epsilon: p.Cost.Epsilon, Delta: p.Cost.Delta, K: p.K,
		Columns: map[string]ColumnReport{}, MaxGroupsPerPatient: p.groupsPerUnit, MaxRowsPerGroup: p.rowsPerGroup,
		PartitionSelection: p.selectGroups, SpecialGroups: p.Query.Special,
	}
	if p.rowBound > 0 {
		report.MaxRowsPerPatient = p.rowBound
		if p.groupsPerUnit > 1 {
			report.MaxGroupsPerPatient, report.MaxRowsPerGroup = min(p.rowBound, p.domain), p.rowBound
		}
	}
	if (!p.Query.PerUnitRows || p.biasQuantities > 0) && p.Mechanism != None {
		c := p.contribution
		report.Contribution = &c
	}
	report.withCharge(p)
	return report
}

// Expected is the privacy block a dry run shows: the noise scale of every
// column, and the 95% interval of counts and sums, which the noise alone
// sets. For means, variances and quantiles the interval depends on the
// group's size and values, which a dry run does not read: it is 0 there.
// Nothing here reads data or draws noise that is released.
func (p *Plan) Expected() Report {
	report := p.report()
	m := p.mech()
	G, C := p.bounds()
	for _, o := range p.Query.Outputs {
		if o.Agg < 0 {
			continue
		}
		a := p.Query.Aggs[o.Agg]
		half := (a.Max - a.Min) / 2
		var cr ColumnReport
		switch a.Kind {
		case sandbox.Count, sandbox.CountUnits:
			linf := float64(C)
			if a.Kind == sandbox.CountUnits {
				linf = 1
			}
			cr = ColumnReport{p.scale(G, linf), m.ci(0, G, linf, p.epsEach)}
		case sandbox.Sum:
			linf := float64(C) * math.Max(math.Abs(a.Min), math.Abs(a.Max))
			cr = ColumnReport{p.scale(G, linf), m.ci(0, G, linf, p.epsEach)}
		case sandbox.Quantile:
			cr = ColumnReport{NoiseScale: p.levelScale(G, float64(C), p.epsEach/treeLevels)}
		default:
			cr = ColumnReport{NoiseScale: p.scale(G, float64(C)*half)}
		}
		report.Columns[o.Name] = cr
	}
	return report
}

// protectRow builds one released row: each group key from key, each
// aggregate from agg, keeping the largest interval of each column in report.
// The row's intervals and bias estimates follow its values in the same
// slice, so that ordering the rows orders them too (see split).
func (p *Plan) protectRow(report *Report, key func(group int) any, agg func(j int) cell) []any {
	n := len(p.Query.Outputs)
	row := make([]any, 3*n)
	for oi, o := range p.Query.Outputs {
		if o.Group >= 0 {
			row[oi] = key(o.Group)
			continue
		}
		c := agg(o.Agg)
		row[oi] = c.v
		iv := p.interval(p.Query.Aggs[o.Agg], c.v, c.cr.CI95)
		if c.whole {
			lo, hi := p.clampInterval(p.Query.Aggs[o.Agg], c.lo, c.hi)
			iv = []any{lo, hi}
		} else if c.own {
			lo, hi := p.clampInterval(p.Query.Aggs[o.Agg], c.lo, c.hi)
			iv = []any{math.Min(iv[0].(float64), lo), math.Max(iv[1].(float64), hi)}
		}
		row[n+oi] = iv
		row[2*n+oi] = c.bias
		prev := report.Columns[o.Name]
		report.Columns[o.Name] = ColumnReport{NoiseScale: c.cr.NoiseScale, CI95: math.Max(prev.CI95, c.cr.CI95)}
	}
	return row
}

// interval is the released value plus or minus half, within what the
// aggregate can take (clampInterval).
func (p *Plan) interval(a sandbox.Agg, v any, half float64) []any {
	x := toFloat(v)
	lo, hi := p.clampInterval(a, x-half, x+half)
	return []any{lo, hi}
}

// clampInterval keeps an interval within what the exact aggregate can
// take: counts and sums of non-negative values are not negative, means and
// quantiles lie within the column's domain (values beyond the clamping
// bounds count in the exact answer).
func (p *Plan) clampInterval(a sandbox.Agg, lo, hi float64) (float64, float64) {
	dlo, dhi := domainOf(a)
	switch a.Kind {
	case sandbox.Count, sandbox.CountUnits:
		lo = math.Max(0, lo)
	case sandbox.Avg:
		lo, hi = clamp(lo, dlo, dhi), clamp(hi, dlo, dhi)
	case sandbox.Quantile:
		// Clamping keeps the order of values within the bounds: only a
		// quantile at a bound may lie beyond it.
		lo, hi = clamp(lo, a.Min, a.Max), clamp(hi, a.Min, a.Max)
		if lo <= a.Min {
			lo = dlo
		}
		if hi >= a.Max {
			hi = dhi
		}
	case sandbox.VarSamp, sandbox.VarPop, sandbox.StddevSamp, sandbox.StddevPop:
		lo = math.Max(0, lo)
	case sandbox.Sum:
		if dlo >= 0 {
			lo = math.Max(0, lo)
		}
	}
	return lo, hi
}

// split separates ordered rows from the intervals and bias estimates
// protectRow put after their values, and flags the cells whose interval is
// wider than their value.
func (p *Plan) split(rows [][]any) (values, intervals, bias, flags [][]any) {
	n := len(p.Query.Outputs)
	values, intervals = make([][]any, len(rows)), make([][]any, len(rows))
	bias, flags = make([][]any, len(rows)), make([][]any, len(rows))
	for i, r := range rows {
		values[i], intervals[i], bias[i] = r[:n:n], r[n:2*n:2*n], r[2*n:]
		flags[i] = make([]any, n)
		for oi, iv := range intervals[i] {
			if lh, ok := iv.([]any); ok && lh[1].(float64)-lh[0].(float64) > math.Abs(toFloat(values[i][oi])) {
				flags[i][oi] = []string{"wide_interval"}
			}
		}
	}
	return values, intervals, bias, flags
}

// reportUnseen reports, from agg, the noise of the aggregate columns that no
// released row showed (every group was suppressed).
func (p *Plan) reportUnseen(report *Report, agg func(j int) ColumnReport) {
	for _, o := range p.Query.Outputs {
		if o.Agg >= 0 {
			if _, ok := report.Columns[o.Name]; !ok {
				report.Columns[o.Name] = agg(o.Agg)
			}
		}
	}
}

func noisyFloat(n noise.Noise, x float64, l0 int64, linf, eps float64) float64 {
	v, err := n.AddNoiseFloat64(x, l0, linf, eps, 0)
	if err != nil {
		panic(fmt.Sprintf("add noise: %v", err))
	}
	return v
}

// noiseAgg releases one aggregate of one group. With r nil it only reports
// the column's noise scale (for answers where every group was suppressed).
func (p *Plan) noiseAgg(m mech, sim *simulator, a sandbox.Agg, c aggCols, r []any, G, C int64) (cell, []float64) {
	eps := p.epsEach
	half := (a.Max - a.Min) / 2
	get := func(i int) float64 {
		if r == nil || i < 0 {
			return 0
		}
		return toFloat(r[i])
	}
	switch a.Kind {
	case sandbox.Count, sandbox.CountUnits:
		v, cr := p.noisyCount(m, a, c, r, G, C)
		return cell{v: int64(math.Max(0, math.Round(v))), cr: cr}, []float64{v}
	case sandbox.Sum:
		linf := float64(C) * math.Max(math.Abs(a.Min), math.Abs(a.Max))
		v := m.float(get(c.s), G, linf, eps)
		return cell{v: v, cr: ColumnReport{p.scale(G, linf), m.ci(v, G, linf, eps)}}, []float64{v}
	case sandbox.Avg, sandbox.VarSamp, sandbox.VarPop, sandbox.StddevSamp, sandbox.StddevPop:
		cl, sl, ql := float64(C), float64(C)*half, float64(C)*half*half
		nc := m.float(get(c.c), G, cl, eps)
		ns := m.float(get(c.s), G, sl, eps)
		nq := 0.0
		if a.Kind != sandbox.Avg {
			nq = m.float(get(c.q), G, ql, eps)
		}
		stat := func(nc, ns, nq float64) float64 { return moment(a, nc, ns, nq) }
		v := stat(nc, ns, nq)
		ci := sim.halfWidth(func(draw func(l0 int64, linf float64) float64) float64 {
			return stat(nc+draw(G, cl), ns+draw(G, sl), nq+draw(G, ql))
		}, p)
		return cell{v: v, cr: ColumnReport{p.scale(G, sl), ci}}, []float64{nc, ns, nq}
	case sandbox.Quantile:
		leaves := make(map[int]float64)
		if r != nil && c.hk >= 0 && c.hv >= 0 {
			leaves = toLeaves(r[c.hk], r[c.hv])
		}
		// Each level of the tree takes a third of the quantity's epsilon
		// and, under Gaussian noise, of its delta.
		levelEps, lm := eps/treeLevels, m
		lm.delta = m.delta / treeLevels
		t := newTree(leaves, func(x float64) float64 { return lm.float(x, G, float64(C), levelEps) })
		v := t.quantile(a)
		sc := p.levelScale(G, float64(C), levelEps)
		variance := 2 * sc * sc
		switch {
		case m.exact:
			variance = 0
		case p.Mechanism == Gaussian:
			variance = sc * sc
		}
		cut, z := 0.0, quantileZ
		if r != nil && p.biasEstimated(a) {
			// The rows the bound cut widen the interval (tree.interval);
			// a count of rows is no correction of a value, so the cell
			// shows no bias estimate.
			sdc, _ := p.biasSens(a)
			d, hd := p.noisyBias(r[c.dc], sdc)
			cut, z = math.Max(0, d+hd), quantileZWithCut
		}
		lo, hi := t.interval(a, variance, cut, z)
		lo, hi = math.Min(lo, v), math.Max(hi, v)
		return cell{v: v, cr: ColumnReport{sc, (hi - lo) / 2}, lo: lo, hi: hi, own: true, whole: true}, nil
	}
	return cell{}, nil
}

// noised is a released aggregate value and its report.
type noised struct {
	v  any
	cr ColumnReport
}

// noisyCount is a count aggregate with its noise, before rounding.
func (p *Plan) noisyCount(m mech, a sandbox.Agg, c aggCols, r []any, G, C int64) (float64, ColumnReport) {
	linf := float64(C)
	if a.Kind == sandbox.CountUnits {
		linf = 1
	}
	x := 0.0
	if r != nil && c.c >= 0 {
		x = toFloat(r[c.c])
	}
	v := m.float(x, G, linf, p.epsEach)
	return v, ColumnReport{p.scale(G, linf), m.ci(v, G, linf, p.epsEach)}
}

// moment derives a mean, variance or standard deviation from noisy count,
// normalised sum (values minus the bounds' midpoint) and normalised sum of
// squares, clamped to what the bounds allow.
func moment(a sandbox.Agg, nc, ns, nq float64) float64 {
	mid, half := (a.Min+a.Max)/2, (a.Max-a.Min)/2
	n := math.Max(1, nc)
	mean := ns / n
	if a.Kind == sandbox.Avg {
		return clamp(mid+mean, a.Min, a.Max)
	}
	v := clamp(nq/n-mean*mean, 0, half*half)
	if (a.Kind == sandbox.VarSamp || a.Kind == sandbox.StddevSamp) && n > 1 {
		v = v * n / (n - 1)
	}
	if a.Kind == sandbox.StddevSamp || a.Kind == sandbox.StddevPop {
		return math.Sqrt(v)
	}
	return v
}

func clamp(v, lo, hi float64) float64 { return math.Min(hi, math.Max(lo, v)) }

// simulator estimates intervals of derived statistics by redrawing the
// mechanism's noise around the released values: post-processing of what is
// released, so it costs no budget.
type simulator struct{ rng *mrand.Rand }

func newSimulator() *simulator {
	return &simulator{rng: mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), uint64(randomSalt())))}
}

// simDraws is the number of simulated releases an interval is read from:
// enough that the 2.5% and 97.5% points are estimated within a fraction of
// a percent (they are rounded outward).
const simDraws = 400

// halfWidth is spread for a statistic of noisy quantities, each drawn
// with the plan's scale for its sensitivities. The scales are worked out
// once per quantity, not per draw: a Gaussian scale is a binary search of
// about a microsecond, which simDraws draws of a few quantities in every
// group made most of a Gaussian answer's time.
func (s *simulator) halfWidth(stat func(draw func(l0 int64, linf float64) float64) float64, p *Plan) float64 {
	type sens struct {
		l0   int64
		linf float64
	}
	scales := map[sens]float64{}
	draw := func(l0 int64, linf float64) float64 {
		sc, ok := scales[sens{l0, linf}]
		if !ok {
			sc = p.scale(l0, linf)
			scales[sens{l0, linf}] = sc
		}
		return s.draw(p.Mechanism == Gaussian, sc)
	}
	return s.spread(func() float64 { return stat(draw) })
}

// draw is one simulated noise draw of the given scale.
func (s *simulator) draw(gaussian bool, scale float64) float64 {
	if gaussian {
		return s.rng.NormFloat64() * scale
	}
	return s.rng.ExpFloat64() * scale * float64(1-2*s.rng.IntN(2))
}

// spread is half the width of the central 95% of simDraws values of stat,
// its ends rounded outward.
func (s *simulator) spread(stat func() float64) float64 {
	vals := make([]float64, simDraws)
	for i := range vals {
		vals[i] = stat()
	}
	slices.Sort(vals)
	return (vals[simDraws*975/1000] - vals[simDraws*25/1000-1]) / 2
}

// padPublic adds an empty row for every public category combination missing
// from rows, so that an absent category is answered like a small one.
func padPublic(rows [][]any, domains [][]string, width, usersCol int) [][]any {
	have := map[string]bool{}
	for _, r := range rows {
		have[keyOf(r[:len(domains)])] = true
	}
	var out [][]any
	for _, r := range rows {
		if inDomain(r[:len(domains)], domains) {
			out = append(out, r)
		}
	}
	combo := make([]any, len(domains))
	var walk func(d int)
	walk = func(d int) {
		if d == len(domains) {
			if !have[keyOf(combo)] {
				r := make([]any, width)
				copy(r, combo)
				r[usersCol] = int64(0)
				out = append(out, r)
			}
			return
		}
		for _, v := range domains[d] {
			combo[d] = v
			walk(d + 1)
		}
	}
	walk(0)
	return out
}

func inDomain(keys []any, domains [][]string) bool {
	for i, k := range keys {
		s, ok := k.(string)
		if !ok || !slices.Contains(domains[i], s) {
			return false
		}
	}
	return true
}

func keyOf(keys []any) string {
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%v\x00", k)
	}
	return b.String()
}

func (p *Plan) columns(res *engine.Result) []engine.Column {
	var cols []engine.Column
	for _, o := range p.Query.Outputs {
		c := engine.Column{Name: o.Name, Type: "DOUBLE"}
		if o.Group >= 0 {
			c.Type = res.Columns[o.Group].Type
		} else if k := p.Query.Aggs[o.Agg].Kind; k == sandbox.Count || k == sandbox.CountUnits {
			c.Type = "BIGINT"
		}
		cols = append(cols, c)
	}
	return cols
}

// arrange applies ORDER BY, OFFSET and LIMIT to the protected rows.
func (p *Plan) arrange(rows [][]any) [][]any {
	p.order(rows)
	if p.Query.Offset > 0 {
		rows = rows[min(p.Query.Offset, len(rows)):]
	}
	if p.Query.Limit >= 0 && p.Query.Limit < len(rows) {
		rows = rows[:p.Query.Limit]
	}
	return rows
}

// order sorts the protected rows by the ORDER BY keys; without
// ORDER BY, rows are sorted by their group keys so that the order carries no
// information about the data.
func (p *Plan) order(rows [][]any) {
	q := p.Query
	keys := q.Order
	if len(keys) == 0 {
		for i, o := range q.Outputs {
			if o.Group >= 0 {
				keys = append(keys, sandbox.Order{Output: i})
			}
		}
	}
	slices.SortStableFunc(rows, func(a, b []any) int {
		for _, k := range keys {
			c := compare(a[k.Output], b[k.Output])
			if k.Desc {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return 0
	})
}

func compare(a, b any) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	fa, aok := num64(a)
	fb, bok := num64(b)
	if aok && bok {
		return cmp.Compare(fa, fb)
	}
	return cmp.Compare(fmt.Sprint(a), fmt.Sprint(b))
}

func num64(v any) (float64, bool) {
	switch t := v.(type) {
	case int64:
		return float64(t), true
	case int32:
		return float64(t), true
	case int:
		return float64(t), true
	case float64:
		return t, true
	case float32:
		return float64(t), true
	}
	return 0, false
}

func toFloat(v any) float64 {
	switch t := v.(type) {
	case nil:
		return 0
	case int64:
		return float64(t)
	case int32:
		return float64(t)
	case int:
		return float64(t)
	case uint64:
		return float64(t)
	case float64:
		return t
	case float32:
		return float64(t)
	case *big.Int:
		f, _ := new(big.Float).SetInt(t).Float64()
		return f
	}
	panic(fmt.Sprintf("release: unexpected aggregate type %T", v)) // a plan bug; never release a made-up zero
}

// toLeaves reads a histogram returned as its keys and its counts, two
// DuckDB lists (NULL when the group has no value).
func toLeaves(keys, counts any) map[int]float64 {
	out := map[int]float64{}
	ks, _ := keys.([]any)
	ns, _ := counts.([]any)
	if len(ks) != len(ns) {
		panic(fmt.Sprintf("release: histogram with %d keys and %d counts", len(ks), len(ns))) // a plan bug
	}
	for i, k := range ks {
		out[int(toFloat(k))] = toFloat(ns[i])
	}
	return out
}

// jsonValue makes a group key JSON-friendly.
func jsonValue(v any) any {
	if t, ok := v.(time.Time); ok {
		if t.Hour() == 0 && t.Minute() == 0 && t.Second() == 0 && t.Nanosecond() == 0 {
			return t.Format("2006-01-02")
		}
		return t.UTC().Format(time.RFC3339)
	}
	return v
}
