package privacy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"slices"

	"github.com/google/differential-privacy/go/v3/noise"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/sandbox"
)

// Federated queries: several hospitals (nodes) answer one question together.
//
// Every node runs the same plan over its own data and turns its bounded
// per-group aggregates into a share: a vector laid out over the public
// group domain (Layout), each value already carrying Gaussian noise. The
// shares are added up (in the clear, or under homomorphic encryption), and
// Combine turns the sum into the protected answer.
//
// Noise. Gaussian noise is divisible: n independent draws of variance
// sigma^2/n add up to one draw of variance sigma^2. With homomorphic
// aggregation nobody ever sees a single node's share, only the encrypted
// sum, so each node adds sigma/sqrt(n) and the released total carries
// exactly the noise that one gateway over the pooled data would add: the
// same accuracy as a central release, at the query's (epsilon, delta). The
// guarantee assumes that the coordinator does not collude with nodes: t
// colluding nodes can subtract their own shares, leaving (n-t)/n of the
// variance. In plaintext aggregation each node's share is visible to the
// coordinator, so each node adds the full sigma and its share is a complete
// differentially private release by itself; the total then carries n times
// the variance. That difference is what the encryption buys.
//
// Laplace noise is not used here: it cannot be split into independent
// shares with Google's library, so federated queries are always Gaussian and
// spend a delta (the researcher's, or FederatedDelta).
//
// Groups. Only keys with a declared public category list may group a
// federated query, and every node answers the whole padded domain, so the
// shares have the same length and position whatever each hospital holds: no
// one learns which node had which groups. The k rule uses the noisy pooled
// count of distinct patients (one more noised quantity per group): nobody
// sees an exact pooled count to compare with k.
//
// The privacy unit is a patient's records at one hospital. A person treated
// at several hospitals is several units, one per node, each bounded by that
// node's contribution bounds.

// FederatedDelta is the delta a federated query spends when the researcher
// names none: far below one over the number of patients of any hospital, as
// a Gaussian release wants, and small enough that a grant's delta (2e-5 in
// the demo) pays for two hundred federated queries by the plain sum of
// deltas; the zCDP account (package accountant) needs none of it.
const FederatedDelta = 1e-7

// Aggregation says how the nodes' shares are added up.
type Aggregation string

// The aggregations.
const (
	Plaintext   Aggregation = "plaintext"
	Homomorphic Aggregation = "homomorphic"
)

// FederatedPlan is a plan for one node of a federation, or for the
// coordinator that combines the nodes' shares.
type FederatedPlan struct {
	*Plan
	nodes int
	agg   Aggregation
	qs    []quantity // the noised values of one group, in layout order
	keys  [][]any    // every group key combination, in layout order
}

// NewFederatedPlan plans q for one node of a federation of n nodes whose
// shares are combined by agg. The coordinator makes the same plan to lay out
// and combine the shares.
func NewFederatedPlan(q *sandbox.Query, want Cost, limits Limits, nodes int, agg Aggregation) (*FederatedPlan, error) {
	limits = limits.withDefaults()
	if nodes < 1 {
		return nil, fmt.Errorf("federated plan: %d nodes", nodes)
	}
	if agg != Plaintext && agg != Homomorphic {
		return nil, fault.E(fault.Invalid, "aggregation must be %q or %q", Plaintext, Homomorphic)
	}
	for _, a := range q.Aggs {
		if a.Kind == sandbox.Quantile {
			return nil, fault.E(fault.QueryRejected, "quantiles cannot be answered by a federation: a node's histogram is not a sum of bounded values; ask for averages or variances")
		}
	}
	domain := 1
	for _, g := range q.Groups {
		if g.Public == nil {
			return nil, fault.E(fault.QueryRejected, "federated queries group only by columns with a declared public category list, so that no one learns which hospital has which groups; %s has none", groupName(g))
		}
		domain *= len(g.Public)
		if domain > limits.MaxGroups {
			return nil, fault.E(fault.QueryRejected, "the group keys have %d or more combinations; a federated query answers at most %d", domain, limits.MaxGroups)
		}
	}
	if want.Delta == 0 {
		want.Delta = FederatedDelta
	}
	p, err := NewPlan(q, want, limits)
	if err != nil {
		return nil, err
	}
	// The pooled patient count is released (noised with sensitivity 1),
	// so each node must count its patients exactly, not only below k.
	p.releasesUsers = true
	p.rebuild()
	if p.selectGroups || p.Mechanism != Gaussian || (p.rowBound > 0 && p.groupsPerUnit > 1) {
		return nil, fmt.Errorf("federated plan: unexpected partition selection, mechanism %s or rank bound with several groups per patient", p.Mechanism)
	}
	// The pooled patient count per group is noised too (the k rule).
	p.epsEach = p.epsEach * float64(p.quantities) / float64(p.quantities+1)
	p.deltaEach = p.deltaEach * float64(p.quantities) / float64(p.quantities+1)
	p.quantities++
	f := &FederatedPlan{Plan: p, nodes: nodes, agg: agg}
	f.qs, f.keys = f.quantitiesPerGroup(), f.domain()
	return f, nil
}

func groupName(g sandbox.Group) string {
	if g.Name != "" {
		return g.Name
	}
	return "a group key"
}

// quantity is one noised value of a group's share.
type quantity struct {
	name string  // for the layout digest
	col  string  // the engine result column
	linf float64 // sensitivity per group
}

// quantities lists, in layout order, the noised values of one group.
func (p *FederatedPlan) quantitiesPerGroup() []quantity {
	_, c := p.bounds()
	C := float64(c)
	qs := []quantity{{"users", "__users", 1}}
	for j, a := range p.Query.Aggs {
		half := (a.Max - a.Min) / 2
		switch a.Kind {
		case sandbox.Count:
			qs = append(qs, quantity{fmt.Sprintf("count%d", j), fmt.Sprintf("__c%d", j), C})
		case sandbox.CountUnits:
			qs = append(qs, quantity{fmt.Sprintf("units%d", j), fmt.Sprintf("__c%d", j), 1})
		case sandbox.Sum:
			qs = append(qs, quantity{fmt.Sprintf("sum%d", j), fmt.Sprintf("__s%d", j), C * math.Max(math.Abs(a.Min), math.Abs(a.Max))})
		case sandbox.Avg, sandbox.VarSamp, sandbox.VarPop, sandbox.StddevSamp, sandbox.StddevPop:
			qs = append(qs, quantity{fmt.Sprintf("n%d", j), fmt.Sprintf("__c%d", j), C},
				quantity{fmt.Sprintf("s%d", j), fmt.Sprintf("__s%d", j), C * half})
			if a.Kind != sandbox.Avg {
				qs = append(qs, quantity{fmt.Sprintf("q%d", j), fmt.Sprintf("__q%d", j), C * half * half})
			}
		}
	}
	return qs
}

// domain lists every group key combination in layout order.
func (p *FederatedPlan) domain() [][]any {
	out := [][]any{{}}
	for _, g := range p.Query.Groups {
		var next [][]any
		for _, prefix := range out {
			for _, v := range g.Public {
				next = append(next, append(append([]any{}, prefix...), v))
			}
		}
		out = next
	}
	return out
}

// Width is the length of a node's share: the domain size times the noised
// quantities per group.
func (p *FederatedPlan) Width() int { return len(p.keys) * len(p.qs) }

// Layout identifies the share's layout and noise calibration. Nodes and the
// coordinator compare it: a node whose policy, rules or bounds differ plans
// a different layout, and its share must not be added.
func (p *FederatedPlan) Layout() string {
	h := sha256.New()
	G, C := p.bounds()
	fmt.Fprintf(h, "nodes=%d agg=%s eps=%.17g delta=%.17g G=%d C=%d\n", p.nodes, p.agg, p.epsEach, p.deltaEach, G, C)
	for _, q := range p.qs {
		fmt.Fprintf(h, "%s %.17g\n", q.name, q.linf)
	}
	for _, g := range p.Query.Groups {
		fmt.Fprintf(h, "%q\n", g.Public)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// sigma is the standard deviation of the pooled noise for a quantity of
// sensitivity linf: what one central release would add.
func (p *FederatedPlan) sigma(linf float64) float64 {
	G, _ := p.bounds()
	return noise.SigmaForGaussian(G, linf, p.epsEach, p.deltaEach)
}

// shareDivisor is how much smaller each node's noise is than the pooled
// noise: sqrt(n) under encryption, 1 in the clear (see above).
func (p *FederatedPlan) shareDivisor() float64 {
	if p.agg == Homomorphic {
		return math.Sqrt(float64(p.nodes))
	}
	return 1
}

// Share turns res, this node's result of p.SQL, into its noised share.
func (p *FederatedPlan) Share(res *engine.Result) ([]float64, error) {
	idx := map[string]int{}
	for i, c := range res.Columns {
		idx[c.Name] = i
	}
	qs := p.qs
	cols := make([]int, len(qs))
	for i, q := range qs {
		c, ok := idx[q.col]
		if !ok {
			return nil, fmt.Errorf("share: result lacks %s", q.col)
		}
		cols[i] = c
	}
	ng := len(p.Query.Groups)
	byKey := map[string][]any{}
	for _, r := range res.Rows {
		byKey[keyOf(r[:ng])] = r
	}
	gauss := noise.Gaussian()
	div := p.shareDivisor()
	G, _ := p.bounds()
	var out []float64
	for _, key := range p.keys {
		r := byKey[keyOf(key)]
		for i, q := range qs {
			x := 0.0
			if r != nil {
				x = toFloat(r[cols[i]])
			}
			// Gaussian sigma is linear in the sensitivity: asking for
			// linf/div draws noise of sigma/div with the library's
			// secure sampler.
			v, err := gauss.AddNoiseFloat64(x, G, q.linf/div, p.epsEach, p.deltaEach)
			if err != nil {
				return nil, fmt.Errorf("share: add noise: %w", err)
			}
			out = append(out, v)
		}
	}
	return out, nil
}

// Combine turns the sum of every node's share into the protected answer.
func (p *FederatedPlan) Combine(sum []float64) (*Answer, error) {
	q := p.Query
	qs, dom := p.qs, p.keys
	if len(sum) != len(dom)*len(qs) {
		return nil, fmt.Errorf("combine: %d values for %d groups of %d", len(sum), len(dom), len(qs))
	}
	// The pooled noise: sigma under encryption, sqrt(n) sigma in the clear.
	pooled := func(linf float64) float64 {
		return p.sigma(linf) / p.shareDivisor() * math.Sqrt(float64(p.nodes))
	}
	at := map[string]int{}
	for i, qq := range qs {
		at[qq.col] = i
	}
	report := Report{
		Mechanism: Gaussian, Epsilon: p.Cost.Epsilon, Delta: p.Cost.Delta, K: p.K,
		Columns: map[string]ColumnReport{}, MaxGroupsPerPatient: p.groupsPerUnit, MaxRowsPerGroup: p.rowsPerGroup,
		MaxRowsPerPatient: p.rowBound, SpecialGroups: q.Special,
	}
	report.Rho = p.Charge().Rho
	report.DeltaPartition, report.DeltaGaussian = deltaSplit(p.Quantities())
	sim := newSimulator()
	rows := [][]any{} // an array even when every group is suppressed
	for gi, key := range dom {
		vals := sum[gi*len(qs) : (gi+1)*len(qs)]
		if vals[0] < float64(p.K) {
			report.SuppressedGroups++
			continue
		}
		rows = append(rows, p.protectRow(&report, func(g int) any { return key[g] }, func(j int) cell {
			v, cr := p.combineAgg(sim, j, vals, at, pooled)
			return cell{v: v, cr: cr}
		}))
	}
	p.reportUnseen(&report, func(j int) ColumnReport {
		_, cr := p.combineAgg(sim, j, make([]float64, len(qs)), at, pooled)
		return cr
	})
	var cols []engine.Column
	for _, o := range q.Outputs {
		c := engine.Column{Name: o.Name, Type: "DOUBLE"}
		if o.Group >= 0 {
			c.Type = "VARCHAR"
		} else if k := q.Aggs[o.Agg].Kind; k == sandbox.Count || k == sandbox.CountUnits {
			c.Type = "BIGINT"
		}
		cols = append(cols, c)
	}
	return p.answer(cols, rows, report), nil
}

// combineAgg derives one aggregate of one group from the pooled values.
func (p *FederatedPlan) combineAgg(sim *simulator, j int, vals []float64, at map[string]int, pooled func(float64) float64) (any, ColumnReport) {
	a := p.Query.Aggs[j]
	qs := p.qs
	get := func(prefix string) (float64, float64) {
		i := at[fmt.Sprintf("%s%d", prefix, j)]
		return vals[i], pooled(qs[i].linf)
	}
	const z95 = 1.959963984540054
	switch a.Kind {
	case sandbox.Count, sandbox.CountUnits:
		v, sd := get("__c")
		return int64(math.Max(0, math.Round(v))), ColumnReport{sd, z95 * sd}
	case sandbox.Sum:
		v, sd := get("__s")
		return v, ColumnReport{sd, z95 * sd}
	}
	nc, sdc := get("__c")
	ns, sds := get("__s")
	nq, sdq := 0.0, 0.0
	if a.Kind != sandbox.Avg {
		nq, sdq = get("__q")
	}
	v := moment(a, nc, ns, nq)
	draws := make([]float64, simDraws)
	for i := range draws {
		draws[i] = moment(a, nc+sim.rng.NormFloat64()*sdc, ns+sim.rng.NormFloat64()*sds, nq+sim.rng.NormFloat64()*sdq)
	}
	return v, ColumnReport{sds, halfWidth95(draws)}
}

// halfWidth95 is half the width of the central 95% of draws.
func halfWidth95(draws []float64) float64 {
	slices.Sort(draws)
	return (draws[len(draws)*975/1000-1] - draws[len(draws)*25/1000]) / 2
}
