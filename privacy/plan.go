package privacy

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"regexp"
	"strings"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/sandbox"
)

// Sensitivity is how much one patient can change one column of a plan's
// result (the bounded aggregates, before noise): the number of groups whose
// value they can change (L0) and by how much in each (Linf). The noise of
// the column is calibrated to exactly these.
type Sensitivity struct {
	L0   int64
	Linf float64
}

// Sensitivities returns, for each column of the result of p.SQL that is
// noised or decides the k rule, the sensitivity the plan declares. For a
// histogram (__hv), Linf bounds the sum over a group's leaves. The
// sensitivity tester checks these against the data.
func (p *Plan) Sensitivities() map[string]Sensitivity {
	G, C := p.bounds()
	out := map[string]Sensitivity{}
	out["__users"] = Sensitivity{p.thresholdL0, 1}
	for j, a := range p.Query.Aggs {
		half := (a.Max - a.Min) / 2
		c := float64(C)
		switch a.Kind {
		case sandbox.Count:
			out[fmt.Sprintf("__c%d", j)] = Sensitivity{G, c}
		case sandbox.CountUnits:
			out[fmt.Sprintf("__c%d", j)] = Sensitivity{G, 1}
		case sandbox.Sum:
			out[fmt.Sprintf("__s%d", j)] = Sensitivity{G, c * math.Max(math.Abs(a.Min), math.Abs(a.Max))}
		case sandbox.Avg, sandbox.VarSamp, sandbox.VarPop, sandbox.StddevSamp, sandbox.StddevPop:
			out[fmt.Sprintf("__c%d", j)] = Sensitivity{G, c}
			out[fmt.Sprintf("__s%d", j)] = Sensitivity{G, c * half}
			if a.Kind != sandbox.Avg {
				out[fmt.Sprintf("__q%d", j)] = Sensitivity{G, c * half * half}
			}
		case sandbox.Quantile:
			out[fmt.Sprintf("__hv%d", j)] = Sensitivity{G, c}
		}
		if p.biasEstimated(a) {
			dc, ds := p.biasCols(a)
			ldc, lds := p.biasSens(a)
			if dc {
				out[fmt.Sprintf("__dc%d", j)] = Sensitivity{G, ldc}
			}
			if ds {
				out[fmt.Sprintf("__ds%d", j)] = Sensitivity{G, lds}
			}
		}
	}
	return out
}

// Cost is what a query spends from a grant's budget.
type Cost struct {
	Epsilon float64 `json:"epsilon"`
	Delta   float64 `json:"delta"`
}

// Limits are the gateway-wide bounds on what one query may ask.
type Limits struct {
	// MaxGroups caps the groups a query may compute before selection.
	MaxGroups int
	// MaxEpsilon caps one query's epsilon.
	MaxEpsilon float64
	// PartitionDelta is the delta a pure-epsilon query spends on its noisy
	// k rule: the shifted threshold that decides, from a noisy patient
	// count, which groups are released (partition selection for
	// non-public keys, suppression for public ones and for the single
	// group of a query without GROUP BY).
	PartitionDelta float64
}

// DefaultLimits are the limits used when a field of Limits is zero. A
// delta of 1e-8 per query is far below one over any hospital's patient
// count; the grade's expected_queries sets how many a grant's delta pays for.
var DefaultLimits = Limits{MaxGroups: 10000, MaxEpsilon: 1.0, PartitionDelta: 1e-8}

func (l Limits) withDefaults() Limits {
	if l.MaxGroups <= 0 {
		l.MaxGroups = DefaultLimits.MaxGroups
	}
	if l.MaxEpsilon <= 0 {
		l.MaxEpsilon = DefaultLimits.MaxEpsilon
	}
	if l.PartitionDelta <= 0 {
		l.PartitionDelta = DefaultLimits.PartitionDelta
	}
	return l
}

// Mechanism names the noise distribution.
type Mechanism string

// The mechanisms. None is for exact answers over general data, where the
// grade rules allow them: small groups are suppressed, nothing is noised.
const (
	Laplace  Mechanism = "laplace"
	Gaussian Mechanism = "gaussian"
	None     Mechanism = "none"
)

// Plan is a query ready to run: its SQL and how its answer will be noised.
type Plan struct {
	Query *sandbox.Query
	// SQL computes the bounded per-group aggregates.
	SQL string
	// Cost is what the query spends.
	Cost      Cost
	Mechanism Mechanism
	K         int
	// MaxGroups is the row cap for the engine (the group cap plus one, so
	// that an overflow is detected, not truncated).
	MaxRows int

	groupsPerUnit int64 // L0: groups one patient may touch
	thresholdL0   int64 // L0 of the patient count the k rule's threshold reads
	rowsPerGroup  int64 // Linf of counts: rows one patient may add to a group
	rowBound      int64 // when > 0, rows are bounded by rank: at most this many per patient in all
	domain        int64 // the number of groups when they are public (1 without groups)
	selectGroups  bool  // partition selection needed
	public        [][]string
	quantities    int
	salt          uint32
	units         *[2]int64 // when set, the SQL also returns the contributing units
	kAgg          int       // when >= 0, the aggregate whose noisy count is the k rule's (no extra noise)
	epsEach       float64   // noise epsilon per noised quantity
	deltaEach     float64   // Gaussian delta per noised quantity
	psDelta       float64   // threshold delta of partition selection

	// The contribution bound (see bound.go): its maximum from the policy,
	// whether it is still to be chosen, and the epsilons of the choice,
	// of the values and of each bias estimate.
	contribution   Contribution
	boundMax       int64
	cutTop         int64 // when > 0, the bias estimates count rows up to it (see cutMax)
	choosing       bool
	noiseEps       float64 // the query's epsilon after the special-group share
	boundEps       float64 // spent on choosing the bound
	valueEps       float64 // left for the values, the k rule and the bias estimates
	deltaTotal     float64 // the Gaussian delta asked for
	releasesUsers  bool    // the patient count is released itself (federated): it must be exact
	biasQuantities int     // noised bias quantities per group
	epsBias        float64 // Laplace epsilon of each bias quantity
}

// Options are what a researcher may set about a plan besides its cost.
type Options struct {
	// Bound is the contribution bound asked for (0: none), at most the
	// policy's maximum.
	Bound int64
	// Choose has the bound chosen from a noisy histogram of rows per
	// patient (Plan.Choose) when Bound is 0 and the query reads a table
	// with several rows per patient; otherwise the bound is the maximum.
	Choose bool
}

// NewPlan plans q at the requested cost, with the policy's maximum
// contribution bound. Epsilon and delta come from the researcher (or the
// grant's default); the plan fails with query_rejected when they are out of
// range.
func NewPlan(q *sandbox.Query, want Cost, limits Limits) (*Plan, error) {
	return NewPlanWith(q, want, Options{}, limits)
}

// NewPlanWith plans q at the requested cost with the researcher's options.
// A plan whose bound is to be chosen is ready to run at the maximum bound
// (its SQL binds like the final one) and must be given its rank counts with
// Choose, after its cost is reserved, before it runs.
func NewPlanWith(q *sandbox.Query, want Cost, opt Options, limits Limits) (*Plan, error) {
	limits = limits.withDefaults()
	if want.Epsilon <= 0 || math.IsNaN(want.Epsilon) || math.IsInf(want.Epsilon, 0) {
		return nil, fault.E(fault.Invalid, "epsilon must be a positive number")
	}
	if want.Epsilon > limits.MaxEpsilon {
		return nil, fault.E(fault.QueryRejected, "epsilon %g is above the per-query cap %g; ask for less", want.Epsilon, limits.MaxEpsilon)
	}
	if want.Delta < 0 || want.Delta >= 1e-3 || math.IsNaN(want.Delta) {
		return nil, fault.E(fault.Invalid, "delta must be 0 (Laplace) or a small positive number below 0.001 (Gaussian)")
	}
	if err := checkGroups(q, limits.MaxGroups); err != nil {
		return nil, err
	}
	pol := q.Policy
	p := &Plan{Query: q, Mechanism: Laplace, K: pol.K, MaxRows: limits.MaxGroups + 1}
	if want.Delta > 0 {
		p.Mechanism = Gaussian
	}
	noiseEps := want.Epsilon
	if q.Special {
		p.K = pol.SpecialK
		noiseEps *= pol.SpecialShare
	}

	p.rowsPerGroup, p.groupsPerUnit = 1, 1
	perUnitGroups := true
	for _, g := range q.Groups {
		perUnitGroups = perUnitGroups && g.PerUnit
	}
	if !q.PerUnitRows {
		p.rowsPerGroup = int64(pol.Contribution.MaxRows)
		if !perUnitGroups {
			p.groupsPerUnit = int64(pol.Contribution.MaxGroups)
		}
	}

	// Groups are public when every key has a declared category list and
	// their product is small enough to answer in full.
	if len(q.Groups) > 0 {
		domain := 1
		for _, g := range q.Groups {
			if g.Public == nil {
				domain = -1
				break
			}
			domain *= len(g.Public)
			p.public = append(p.public, g.Public)
		}
		if domain < 0 || domain > limits.MaxGroups {
			p.selectGroups = true
			p.public = nil
		}
	}

	if len(q.Groups) == 0 {
		p.domain = 1
	} else if p.public != nil {
		p.domain = 1
		for _, d := range p.public {
			p.domain *= int64(len(d))
		}
	}
	countsUnits := false
	for _, a := range q.Aggs {
		p.quantities += quantitiesOf(a.Kind)
		countsUnits = countsUnits || a.Kind == sandbox.CountUnits
	}
	// Bounding by rank (see the package comment) keeps the sensitivities
	// of counts, sums and histograms under Laplace noise and under
	// Gaussian noise with one group per patient, with or without partition
	// selection (the k rule's noisy count is one group's per patient). It
	// is not used for COUNT(DISTINCT patient), whose noise would grow with
	// the groups a patient may touch.
	if m := p.groupsPerUnit * p.rowsPerGroup; q.RowRank && !countsUnits &&
		(p.Mechanism == Laplace || p.groupsPerUnit == 1) && m+1 < engine.MaxRank {
		p.rowBound = m
	}
	// The k rule is decided on a noisy patient count for every group,
	// public or not (see the package comment), and a delta. When an
	// aggregate already is that count under Laplace noise (COUNT(DISTINCT
	// patient), or COUNT(*) over one row per patient), its released value
	// decides, as post-processing; otherwise the count is one more noised
	// quantity.
	cost := want
	p.kAgg = -1
	for j, a := range q.Aggs {
		if p.Mechanism == Laplace && !p.selectGroups && (a.Kind == sandbox.CountUnits || (a.Kind == sandbox.Count && a.Star && q.PerUnitRows)) {
			p.kAgg = j
			break
		}
	}
	if p.kAgg < 0 {
		p.quantities++
	}
	if want.Delta == 0 {
		cost.Delta = limits.PartitionDelta
		p.psDelta = limits.PartitionDelta
	}
	p.Cost = cost
	p.noiseEps, p.valueEps, p.deltaTotal = noiseEps, noiseEps, want.Delta
	bound := int64(0)
	if !q.PerUnitRows {
		c := &p.contribution
		c.PerPatient = p.rowBound > 0
		p.boundMax = p.rowsPerGroup
		if c.PerPatient {
			p.boundMax = p.rowBound
		}
		c.Max, c.ChosenBy = p.boundMax, "policy"
		switch {
		case opt.Bound > 0:
			if err := requestBound(opt.Bound, p.boundMax, c.PerPatient); err != nil {
				return nil, err
			}
			bound, c.ChosenBy = opt.Bound, "request"
		case opt.Choose && p.boundMax > 1 && q.Counted != nil && p.boundMax+1 < engine.MaxRank:
			p.choosing, c.ChosenBy = true, "dp_quantile"
			p.boundEps = noiseEps * BoundShare
			p.valueEps = noiseEps - p.boundEps
			c.Epsilon = p.boundEps * p.epsilonFactor()
		}
	}
	if bound == 0 {
		bound = p.boundMax
	}
	if q.PerUnitRows {
		// One row per patient: nothing to cut but values clamped.
		p.boundMax, bound = 1, 1
		p.contribution.Max, p.contribution.ChosenBy = 1, "policy"
	}
	p.setBound(bound)
	p.salt = randomSalt()
	p.rebuild()
	return p, nil
}

// rebuild writes the plan's SQL for its current bound, and sets what the
// SQL's patient count is.
func (p *Plan) rebuild() {
	p.thresholdL0 = p.groupsPerUnit
	if p.Query.PerUnitRows || p.rowBound > 0 || p.lightRows() > 0 {
		// One row per patient, or the count of patients whose rank-1 row
		// is in the group: each patient is counted in one group only.
		p.thresholdL0 = 1
	}
	p.SQL = p.sql(p.salt)
	if p.units != nil {
		p.SQL = fmt.Sprintf("SELECT * EXCLUDE (__bits), CASE WHEN row_number() OVER () = 1 THEN (bit_or(__bits) OVER ())::VARCHAR END AS __units FROM (%s)", p.SQL)
	}
}

// NewExactPlan plans q for an exact, small-cell-suppressed answer: no
// contribution bounds, no noise, no budget. The caller must have checked that
// the data's grade allows it.
func NewExactPlan(q *sandbox.Query, limits Limits) (*Plan, error) {
	limits = limits.withDefaults()
	if err := checkGroups(q, limits.MaxGroups); err != nil {
		return nil, err
	}
	p := &Plan{Query: q, Mechanism: None, K: q.Policy.K, MaxRows: limits.MaxGroups + 1, rowsPerGroup: 1, groupsPerUnit: 1}
	if q.Special {
		p.K = q.Policy.SpecialK
	}
	p.SQL = p.sql(0)
	return p, nil
}

// checkGroups refuses a query whose groups are not bounded, before any
// data is read, by what the policy and the SQL say (sandbox.Group.Bound):
// the number of groups the engine computes is then never cut short, so
// which groups are candidates never depends on other patients.
func checkGroups(q *sandbox.Query, max int) error {
	for i, g := range q.Groups {
		if g.Bound == 0 {
			name := g.Name
			if name == "" {
				name = fmt.Sprintf("number %d", i+1)
			}
			return fault.E(fault.QueryRejected, "GROUP BY key %s can take any number of values; group on columns with a public category list or a declared max_distinct, on date parts (month, quarter, ...) or a CASE with constant results", name)
		}
	}
	if q.GroupBound > int64(max) {
		return fault.E(fault.QueryRejected, "the GROUP BY keys can form up to %d groups; the limit is %d; group on fewer or coarser keys", q.GroupBound, max)
	}
	return nil
}

// MeasureUnits makes the plan's SQL also return, in the first row's
// __units column, the bit string of the privacy units (ids lo to hi) whose
// rows entered the aggregation after contribution bounding: the Article 11
// measure, computed in the same pass as the answer.
func (p *Plan) MeasureUnits(lo, hi int64) {
	p.units = &[2]int64{lo, hi}
	p.rebuild()
}

func (p *Plan) unitBits() string {
	if p.units == nil {
		return ""
	}
	filter := ""
	switch {
	case p.rowBound > 0 && !p.Query.Filtered:
		// Every patient whose rows are aggregated has exactly one row of
		// rank 1 among them: setting one bit per patient is enough.
		filter = " FILTER (WHERE __rk = 1)"
	case p.keepsCut():
		// A filter may leave out the rank-1 row; the rows past the bound
		// feed only the bias estimates.
		filter = " FILTER (WHERE __keep)"
	}
	return fmt.Sprintf("bitstring_agg(__pu::BIGINT, %d, %d)%s", p.units[0], p.units[1], filter)
}

func quantitiesOf(k sandbox.AggKind) int {
	switch k {
	case sandbox.Avg:
		return 2
	case sandbox.VarSamp, sandbox.VarPop, sandbox.StddevSamp, sandbox.StddevPop:
		return 3
	}
	return 1
}

func randomSalt() uint32 {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // the platform's randomness is gone; nothing is safe
	}
	return binary.LittleEndian.Uint32(b[:])
}

func num(f float64) string { return fmt.Sprintf("%.17g::DOUBLE", f) }

// sql builds the bounded aggregation. See the package comment. There are
// four shapes, cheapest first:
//
//   - every table has one row per patient: aggregate directly, each patient
//     is one row in one group (written without the CTE of the base where
//     the base comes apart, see flat);
//   - rows are bounded by rank: keep rows of rank at most m, aggregate
//     directly;
//   - no quantiles: aggregate per (patient, group) first, clamp each
//     patient's partial count and sums to what MaxRows rows could add, keep
//     at most MaxGroups groups per patient (chosen by a salted hash), then
//     add the clamped partials up per group. Hash aggregation, no sort;
//   - quantiles over many rows per patient: keep at most MaxRows random rows
//     per (patient, group) with a window, since a histogram cannot be
//     clamped after the fact.
func (p *Plan) sql(salt uint32) string {
	q := p.Query
	var groups []string
	for i := range q.Groups {
		groups = append(groups, fmt.Sprintf("__g%d", i))
	}
	gl := strings.Join(groups, ", ")
	hasQuantile := false
	for _, a := range q.Aggs {
		hasQuantile = hasQuantile || a.Kind == sandbox.Quantile
	}
	if flat, ok := p.flat(hasQuantile); ok {
		return fmt.Sprintf("%s LIMIT %d", decodeGroups(q.Groups, flat), p.MaxRows)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "WITH __base AS (%s)", q.Base)
	switch {
	case p.Mechanism == None:
		b.WriteString(p.rowAggregate("__base", groups, "count(DISTINCT __pu)", false, nil))
	case q.PerUnitRows:
		b.WriteString(p.rowAggregate("__base", groups, "count(*)", true, nil))
	case p.rowBound > 0:
		from, where := "__base", []string{fmt.Sprintf("__rk <= %d", p.rowBound)}
		if p.keepsCut() {
			// Rows ranked above the bound, up to the maximum, are what the
			// bound cuts: they feed the bias estimates only.
			from = fmt.Sprintf("(SELECT *, __rk <= %d AS __keep FROM __base)", p.rowBound)
			where = []string{fmt.Sprintf("__rk <= %d", p.cutMax())}
		}
		// The patient count is that of the patients whose rank-1 row is in
		// the group: one group per patient, and at most the group's
		// patients, so both k tests err only towards suppressing (see the
		// package comment). A federated share releases the count, which must
		// then be exact: the rank-1 row may be filtered out, or in another
		// group.
		users, summable := "count_if(__rk = 1)::BIGINT", true
		if p.releasesUsers && (p.groupsPerUnit > 1 || q.Filtered) {
			users, summable = "count(DISTINCT __pu)", false
		}
		b.WriteString(p.rowAggregate(from, groups, users, summable, where))
	case !hasQuantile:
		b.WriteString(p.partialAggregate(groups, salt))
	default:
		part := "__pu"
		if gl != "" {
			part += ", " + gl
		}
		// Rows are kept in the order of a salted hash of their own values:
		// like the rank's keyed hash, it makes the rows a patient keeps
		// depend on their rows and the salt only, never on other patients.
		vals := []string{"__pu"}
		vals = append(vals, groups...)
		for j := range q.Aggs {
			vals = append(vals, fmt.Sprintf("__a%d", j))
		}
		windows := []string{fmt.Sprintf("row_number() OVER (PARTITION BY %s ORDER BY hash(%s, %d)) AS __rn", part, strings.Join(vals, ", "), salt)}
		where := []string{fmt.Sprintf("__rn <= %d", p.rowsPerGroup)}
		if p.groupsPerUnit > 1 {
			windows = append(windows, fmt.Sprintf("dense_rank() OVER (PARTITION BY __pu ORDER BY hash(%s, %d), %s) AS __gr", gl, salt, gl))
			where = append(where, fmt.Sprintf("__gr <= %d", p.groupsPerUnit))
		}
		fmt.Fprintf(&b, ", __ranked AS (SELECT *, %s FROM __base)", strings.Join(windows, ", "))
		b.WriteString(p.rowAggregate("__ranked", groups, "count_if(__rn = 1)::BIGINT", true, where))
	}
	if gl != "" {
		fmt.Fprintf(&b, " GROUP BY %s", gl)
	}
	out := decodeGroups(q.Groups, b.String())
	return fmt.Sprintf("%s LIMIT %d", out, p.MaxRows)
}

// baseColumn is a reference to a column of the base in the SQL that
// rowAggregate writes: the patient, a group key or an aggregate's argument.
var baseColumn = regexp.MustCompile(`\b__(pu|g[0-9]+|a[0-9]+)\b`)

// flat is the plan's SQL, without its LIMIT and group decoding, for the
// plans that aggregate the base's rows directly in one level (one row per
// patient, or an exact answer, over tables no rank bounds, and no quantile
// split into leaves), written without the CTE of the base: the aggregate
// reads the base's FROM and WHERE itself, and each reference to a base
// column is that column's expression (sandbox.Flat). It is the same query
// as the CTE's, which DuckDB inlines, less a projection of every row read.
// The references are replaced in rowAggregate's own text before the FROM
// clause goes in, so nothing the researcher wrote is rewritten.
func (p *Plan) flat(hasQuantile bool) (string, bool) {
	q := p.Query
	f := q.Flat
	if f == nil || q.Rank != nil || p.keepsCut() {
		return "", false
	}
	var users string
	var summable bool
	switch {
	case p.Mechanism == None:
		users = "count(DISTINCT __pu)"
	case q.PerUnitRows:
		users, summable = "count(*)", true
	default:
		return "", false
	}
	if summable && hasQuantile {
		return "", false // the leaves split the aggregate in two levels
	}
	// The groups lead rowAggregate's select list, in order, so the GROUP
	// BY names them by position: DuckDB would read a key that is a bare
	// integer constant, (2), as a position too.
	var groups, keys []string
	for i := range q.Groups {
		name := fmt.Sprintf("__g%d", i)
		if _, ok := f.Exprs[name]; !ok {
			return "", false
		}
		groups = append(groups, name)
		keys = append(keys, fmt.Sprint(i+1))
	}
	const from = "\x00from\x00"
	text := p.rowAggregate(from, groups, users, summable, nil)
	known := true
	text = baseColumn.ReplaceAllStringFunc(text, func(ref string) string {
		expr, ok := f.Exprs[ref]
		if !ok {
			known = false
			return ref
		}
		if ref[2] == 'g' {
			return "(" + expr + ") AS " + ref
		}
		return "(" + expr + ")"
	})
	if !known || strings.Count(text, from) != 1 {
		return "", false
	}
	text = strings.Replace(text, "FROM "+from, f.From, 1)
	if len(keys) > 0 {
		text += " GROUP BY " + strings.Join(keys, ", ")
	}
	return text, true
}

// decodeGroups turns the codes of coded group keys (sandbox.Group.Coded)
// back into their categories over the result of sql, the groups first, in
// order, as sql has them: DuckDB groups the rows on the small integers, and
// the lists are read on the result's few rows only. A code that is NULL
// (a NULL or unlisted value) stays NULL, a group no answer releases.
func decodeGroups(groups []sandbox.Group, sql string) string {
	var keys, names []string
	coded := false
	for i, g := range groups {
		name := fmt.Sprintf("__g%d", i)
		names = append(names, name)
		if !g.Coded {
			keys = append(keys, name)
			continue
		}
		coded = true
		vals := make([]string, len(g.Public))
		for j, v := range g.Public {
			vals[j] = "'" + strings.ReplaceAll(v, "'", "''") + "'::VARCHAR"
		}
		keys = append(keys, fmt.Sprintf("([%s])[%s] AS %s", strings.Join(vals, ", "), name, name))
	}
	if !coded {
		return sql
	}
	return fmt.Sprintf("SELECT %s, * EXCLUDE (%s) FROM (%s)", strings.Join(keys, ", "), strings.Join(names, ", "), sql)
}

// groupsAtMost is how many groups the query can form: the public domain,
// or the bound known before any data is read (sandbox.Query.GroupBound).
func (p *Plan) groupsAtMost() int64 {
	if p.domain > 0 {
		return p.domain
	}
	return max(1, p.Query.GroupBound)
}

// clampSQL clamps expr to [lo, hi], keeping NULL as NULL (DuckDB's least
// and greatest skip NULL arguments, so least(greatest(NULL, lo), hi) would
// be lo, a value for a row that has none; and the CASE is faster too).
// NaN, which DuckDB orders above every number, becomes hi.
func clampSQL(expr string, lo, hi float64) string {
	return fmt.Sprintf("CASE WHEN %s < %s THEN %s WHEN %s > %s THEN %s ELSE %s END", expr, num(lo), num(lo), expr, num(hi), num(hi), expr)
}

// maxExact bounds the constants of an exact sum (see values): values
// clamped within it, less a centre within it, stay far inside INTEGER.
const maxExact = 1e8

// values writes the clamped values of aggregate j that rowAggregate sums:
// clamped to [lo, hi], less centre, and the sum of such an expression.
// By default a value is read as DOUBLE with TRY_CAST. When the column is
// loaded as INTEGER or BIGINT and the bounds, the domain and the centre
// are whole numbers within maxExact, it is clamped in its own type and
// summed exactly (DuckDB's integer sum), then read as DOUBLE per group:
// the same values, without the cast on every row that is most of a
// clamp's cost, and no value can overflow, so none can fail.
type values struct {
	arg, typ string // typ is "" for DOUBLE
}

func valuesOf(j int, a sandbox.Agg) values {
	v := values{arg: fmt.Sprintf("__a%d", j)}
	dlo, dhi := domainOf(a)
	if a.IntType == "" {
		return v
	}
	for _, x := range []float64{a.Min, a.Max, (a.Min + a.Max) / 2, dlo, dhi} {
		if x != math.Trunc(x) || math.Abs(x) > maxExact {
			return v
		}
	}
	v.typ = a.IntType
	return v
}

// clamp is the value clamped to [lo, hi], less centre (none when 0).
func (v values) clamp(lo, hi, centre float64) string {
	if v.typ == "" {
		e := clampSQL("TRY_CAST("+v.arg+" AS DOUBLE)", lo, hi)
		if centre != 0 {
			e += " - " + num(centre)
		}
		return e
	}
	lit := func(x float64) string { return fmt.Sprintf("%d::%s", int64(x), v.typ) }
	e := fmt.Sprintf("CASE WHEN %s < %s THEN %s WHEN %s > %s THEN %s ELSE %s END", v.arg, lit(lo), lit(lo), v.arg, lit(hi), lit(hi), v.arg)
	if centre != 0 {
		e += " - " + lit(centre)
	}
	return e
}

// sum is the sum of expr, a clamp, 0 over no rows, as DOUBLE.
func (v values) sum(expr string) string {
	if v.typ == "" {
		return fmt.Sprintf("coalesce(sum(%s), 0)", expr)
	}
	return fmt.Sprintf("coalesce(sum(%s), 0)::DOUBLE", expr)
}

// aggCol is one column of rowAggregate: its partial over rows (expr, named
// name; none when the final column reads another's partial) and the final
// column formed from the partials (outer, with its name; none for a
// partial only read by another's final column).
type aggCol struct {
	expr, name string
	outer      string
	direct     string // in the one-level form, the final column when it is not expr itself
}

// keepsCut reports whether the rows beyond the bound, up to cutMax, are
// read as well, for the bias estimates (the plan's base then has __keep).
func (p *Plan) keepsCut() bool {
	return p.rowBound > 0 && p.biasQuantities > 0 && p.rowsCut()
}

// rowAggregate aggregates bounded rows directly. Users is the patient count
// per group; summable says whether counts of parts add up to it.
//
// When rows beyond the bound are read for the bias estimates (keepsCut),
// it aggregates in two levels: partials by group and by __keep, then the
// final columns by group, the values from the kept part and the bias
// estimates from both (a FILTER clause on every aggregate costs DuckDB
// more than a group key, and the second level reads two rows per group).
// With one quantile and a summable patient count, the partials are also by
// the quantile's leaf, and the leaves are gathered into two lists: at 10M
// rows that is about a third faster than DuckDB's histogram aggregate.
// Otherwise one level does, the histogram coming back as its keys and
// counts.
func (p *Plan) rowAggregate(from string, groups []string, users string, summable bool, where []string) string {
	cut := p.keepsCut()
	quantile, quantiles := -1, 0
	for j, a := range p.Query.Aggs {
		if a.Kind == sandbox.Quantile {
			quantile, quantiles = j, quantiles+1
		}
	}
	leaves := summable && quantiles == 1
	kept, dropped := "", ""
	if cut {
		kept, dropped = " FILTER (WHERE __keep)", " FILTER (WHERE NOT __keep)"
	}
	// sumOf is the final sum of a partial over the parts that filter (kept,
	// dropped, or "" for all) selects.
	sumOf := func(name, filter string, count bool) string {
		if count {
			return fmt.Sprintf("coalesce(sum(%s)%s, 0)::BIGINT", name, filter)
		}
		return fmt.Sprintf("coalesce(sum(%s)%s, 0)", name, filter)
	}
	var cols []aggCol
	// The rank-1 row is always kept, so the patients' count is that of the
	// kept part, whether or not it is summable.
	cols = append(cols, aggCol{expr: users, name: "__users", outer: sumOf("__users", kept, true) + " AS __users"})
	leaf := func(j int) string {
		a := p.Query.Aggs[j]
		width := a.Max - a.Min
		if width <= 0 {
			width = 1
		}
		return fmt.Sprintf("least(%d, floor((%s - %s) / %s * %d))::INTEGER", treeLeaves-1,
			clampSQL(fmt.Sprintf("TRY_CAST(__a%d AS DOUBLE)", j), a.Min, a.Max), num(a.Min), num(width), treeLeaves)
	}
	for j, a := range p.Query.Aggs {
		arg := fmt.Sprintf("__a%d", j)
		clamped := clampSQL("TRY_CAST("+arg+" AS DOUBLE)", a.Min, a.Max)
		mid := num((a.Min + a.Max) / 2)
		dc, ds := false, false
		if p.biasQuantities > 0 {
			dc, ds = p.biasCols(a)
		}
		dlo, dhi := domainOf(a)
		vals := valuesOf(j, a)
		c, dcn, s, f, q := fmt.Sprintf("__c%d", j), fmt.Sprintf("__dc%d", j), fmt.Sprintf("__s%d", j), fmt.Sprintf("__f%d", j), fmt.Sprintf("__q%d", j)
		ds0 := fmt.Sprintf("__ds%d", j)
		// count adds a count of arg's rows: kept as name, cut as __dc.
		count := func() {
			cols = append(cols, aggCol{expr: fmt.Sprintf("count(%s)", arg), name: c, outer: sumOf(c, kept, true) + " AS " + c})
			if dc {
				cols = append(cols, aggCol{name: dcn, outer: sumOf(c, dropped, true) + " AS " + dcn})
			}
		}
		// sum adds a sum of the values clamped to the bounds less centre,
		// and its bias: the sum clamped to the domain instead, less the
		// kept rows' clamped sum.
		sum := func(centre float64) {
			v, fv := vals.sum(vals.clamp(a.Min, a.Max, centre)), vals.sum(vals.clamp(dlo, dhi, centre))
			cols = append(cols, aggCol{expr: v, name: s, outer: sumOf(s, kept, false) + " AS " + s})
			if ds {
				cols = append(cols, aggCol{expr: fv, name: f,
					outer:  fmt.Sprintf("%s - %s AS %s", sumOf(f, "", false), sumOf(s, kept, false), ds0),
					direct: fmt.Sprintf("%s - %s AS %s", fv, v, ds0)})
			}
		}
		switch a.Kind {
		case sandbox.Count:
			count()
		case sandbox.CountUnits:
			cols = append(cols, aggCol{expr: users, name: c, outer: sumOf(c, kept, true) + " AS " + c})
		case sandbox.Sum:
			sum(0)
		case sandbox.Avg, sandbox.VarSamp, sandbox.VarPop, sandbox.StddevSamp, sandbox.StddevPop:
			count()
			sum((a.Min + a.Max) / 2)
			if a.Kind != sandbox.Avg {
				cols = append(cols, aggCol{expr: fmt.Sprintf("coalesce(sum((%s - %s) * (%s - %s)), 0)", clamped, mid, clamped, mid), name: q, outer: sumOf(q, kept, false) + " AS " + q})
			}
		case sandbox.Quantile:
			if leaves {
				cols = append(cols, aggCol{expr: fmt.Sprintf("count(%s)", arg), name: "__n"})
				if dc {
					cols = append(cols, aggCol{name: dcn, outer: sumOf("__n", dropped, true) + " AS " + dcn})
				}
				continue
			}
			if dc {
				cols = append(cols, aggCol{expr: fmt.Sprintf("count(%s)", arg), name: c},
					aggCol{name: dcn, outer: sumOf(c, dropped, true) + " AS " + dcn})
			}
			// The leaves come back as two lists: DuckDB computes the
			// histogram once, and lists are much cheaper than a MAP to
			// read through the driver. Split by __keep, the kept part's
			// lists are the one row of the group where __keep holds.
			h := fmt.Sprintf("histogram(%s) FILTER (WHERE %s IS NOT NULL)", leaf(j), arg)
			for _, part := range []struct{ name, fn string }{{fmt.Sprintf("__hk%d", j), "map_keys"}, {fmt.Sprintf("__hv%d", j), "map_values"}} {
				cols = append(cols, aggCol{expr: fmt.Sprintf("%s(%s)", part.fn, h), name: part.name,
					outer: fmt.Sprintf("any_value(%s)%s AS %s", part.name, kept, part.name)})
			}
		}
	}
	if bits := p.unitBits(); bits != "" {
		cols = append(cols, aggCol{expr: bits, name: "__bits", outer: "bit_or(__bits) AS __bits"})
	}
	inner := append([]string{}, groups...)
	keys := append([]string{}, groups...)
	if cut {
		inner = append(inner, "__keep")
		keys = append(keys, "__keep")
	}
	if leaves {
		inner = append(inner, fmt.Sprintf("CASE WHEN __a%d IS NOT NULL THEN %s END AS __l", quantile, leaf(quantile)))
		keys = append(keys, "__l")
	}
	// Without a split by __keep or by leaf, one level does: each final
	// column is its partial (or its direct form).
	oneLevel := !cut && !leaves
	for _, c := range cols {
		switch {
		case oneLevel && c.direct != "":
			inner = append(inner, c.direct)
		case c.expr != "":
			inner = append(inner, c.expr+" AS "+c.name)
		}
	}
	out := fmt.Sprintf("SELECT %s FROM %s", strings.Join(inner, ", "), from)
	if len(where) > 0 {
		out += " WHERE " + strings.Join(where, " AND ")
	}
	if oneLevel {
		return " " + out
	}
	if len(keys) > 0 {
		out += " GROUP BY " + strings.Join(keys, ", ")
	}
	outer := append([]string{}, groups...)
	for _, c := range cols {
		if c.outer != "" {
			outer = append(outer, c.outer)
		}
	}
	if leaves {
		filter := "__l IS NOT NULL"
		if cut {
			filter += " AND __keep"
		}
		outer = append(outer, fmt.Sprintf("list(__l ORDER BY __l) FILTER (WHERE %s) AS __hk%d", filter, quantile),
			fmt.Sprintf("list(__n ORDER BY __l) FILTER (WHERE %s) AS __hv%d", filter, quantile))
	}
	return fmt.Sprintf(" SELECT %s FROM (%s)", strings.Join(outer, ", "), out)
}

// partialAggregate aggregates per (patient, group), clamps the partials and
// sums them per group.
//
// Where the base has each row's patient's row count (__n, see lightRows),
// only the patients with more rows than lightRows go through the partials:
// the others' rows cannot reach the bounds, so their partials would be
// their rows as they are, and they are summed per group directly, in one
// scan without a per-patient aggregation. The two parts are then added up
// per group. Every value is the one the partials alone give, but the
// patients' count, which only the k rule reads: it is then the count of
// the patients whose rank-1 row is in the group, as when bounding by rank,
// each patient in one group only (L0 1, where counting every patient in
// each of their groups is L0 MaxGroups): an undercount, which errs towards
// suppressing, under noise MaxGroups times smaller.
func (p *Plan) partialAggregate(groups []string, salt uint32) string {
	C := float64(p.rowsPerGroup)
	keys := append([]string{"__pu"}, groups...)
	partial := append([]string{}, keys...)
	final := append([]string{}, groups...)
	t := p.lightRows()
	if t > 0 {
		// Every patient is counted in the group of their rank-1 row only,
		// the light as the heavy (L0 1, see rebuild).
		partial = append(partial, "min(__rk) AS __pr")
		final = append(final, "count_if(__pr = 1)::BIGINT AS __users")
	} else {
		final = append(final, "count(*) AS __users")
	}
	// light are the light patients' rows summed per group directly;
	// counts and sums name the columns the two parts add up.
	light := []string{"count_if(__rk = 1)::BIGINT AS __users"}
	counts := []string{"__users"}
	var sums []string
	for j, a := range p.Query.Aggs {
		arg := fmt.Sprintf("__a%d", j)
		clamped := clampSQL("TRY_CAST("+arg+" AS DOUBLE)", a.Min, a.Max)
		mid := (a.Min + a.Max) / 2
		half := (a.Max - a.Min) / 2
		switch a.Kind {
		case sandbox.Count:
			partial = append(partial, fmt.Sprintf("count(%s) AS __pc%d", arg, j))
			final = append(final, fmt.Sprintf("coalesce(sum(least(__pc%d, %d)), 0)::BIGINT AS __c%d", j, p.rowsPerGroup, j))
			light = append(light, fmt.Sprintf("count(%s) AS __c%d", arg, j))
			counts = append(counts, fmt.Sprintf("__c%d", j))
			if dc, _ := p.biasCols(a); dc && p.biasQuantities > 0 {
				// The rows the bound cut, up to the maximum per group.
				final = append(final, fmt.Sprintf("coalesce(sum(least(greatest(__pc%d - %d, 0), %d)), 0)::BIGINT AS __dc%d", j, p.rowsPerGroup, p.cutMax()-p.rowsPerGroup, j))
				counts = append(counts, fmt.Sprintf("__dc%d", j)) // the bound cuts no light patient's rows
			}
		case sandbox.CountUnits:
			final = append(final, fmt.Sprintf("count(*) AS __c%d", j))
		case sandbox.Sum:
			partial = append(partial, fmt.Sprintf("coalesce(sum(%s), 0) AS __ps%d", clamped, j))
			final = append(final, fmt.Sprintf("coalesce(sum(%s), 0) AS __s%d", clampSQL(fmt.Sprintf("__ps%d", j), C*math.Min(a.Min, 0), C*math.Max(a.Max, 0)), j))
			light = append(light, fmt.Sprintf("coalesce(sum(%s), 0) AS __s%d", clamped, j))
			sums = append(sums, fmt.Sprintf("__s%d", j))
			if _, ds := p.biasCols(a); ds && p.biasQuantities > 0 {
				// The pair's sum up to the maximum (over the domain when
				// clamping cuts), less its clamped sum up to the bound.
				M := float64(p.cutMax())
				dlo, dhi := domainOf(a)
				full := fmt.Sprintf("__ps%d", j)
				if valuesCut(a) {
					full = fmt.Sprintf("__pd%d", j)
					wide := clampSQL("TRY_CAST("+arg+" AS DOUBLE)", dlo, dhi)
					partial = append(partial, fmt.Sprintf("coalesce(sum(%s), 0) AS %s", wide, full))
					// A light pair's sums reach neither clamp: what the
					// domain adds is its values' own.
					light = append(light, fmt.Sprintf("coalesce(sum(%s - %s), 0) AS __ds%d", wide, clamped, j))
				}
				final = append(final, fmt.Sprintf("coalesce(sum(%s - %s), 0) AS __ds%d", clampSQL(full, M*math.Min(dlo, 0), M*math.Max(dhi, 0)), clampSQL(fmt.Sprintf("__ps%d", j), C*math.Min(a.Min, 0), C*math.Max(a.Max, 0)), j))
				sums = append(sums, fmt.Sprintf("__ds%d", j))
			}
		case sandbox.Avg, sandbox.VarSamp, sandbox.VarPop, sandbox.StddevSamp, sandbox.StddevPop:
			// A patient with n > MaxRows rows in the group counts as
			// MaxRows rows, so their sums are scaled by MaxRows/n: they
			// keep the patient's own mean (and spread) at that weight,
			// within the same bounds as MaxRows rows. Clamping the raw
			// sum instead would pull heavy patients toward a bound.
			scale := fmt.Sprintf("least(count(%s), %d) / nullif(count(%s), 0)", arg, p.rowsPerGroup, arg)
			partial = append(partial, fmt.Sprintf("count(%s) AS __pc%d", arg, j))
			partial = append(partial, fmt.Sprintf("coalesce(sum(%s - %s) * %s, 0) AS __ps%d", clamped, num(mid), scale, j))
			final = append(final, fmt.Sprintf("coalesce(sum(least(__pc%d, %d)), 0)::BIGINT AS __c%d", j, p.rowsPerGroup, j))
			final = append(final, fmt.Sprintf("coalesce(sum(%s), 0) AS __s%d", clampSQL(fmt.Sprintf("__ps%d", j), -C*half, C*half), j))
			light = append(light, fmt.Sprintf("count(%s) AS __c%d", arg, j), fmt.Sprintf("coalesce(sum(%s - %s), 0) AS __s%d", clamped, num(mid), j))
			counts, sums = append(counts, fmt.Sprintf("__c%d", j)), append(sums, fmt.Sprintf("__s%d", j))
			if a.Kind != sandbox.Avg {
				partial = append(partial, fmt.Sprintf("coalesce(sum((%s - %s) * (%s - %s)) * %s, 0) AS __pq%d", clamped, num(mid), clamped, num(mid), scale, j))
				final = append(final, fmt.Sprintf("coalesce(sum(%s), 0) AS __q%d", clampSQL(fmt.Sprintf("__pq%d", j), 0, C*half*half), j))
				light = append(light, fmt.Sprintf("coalesce(sum((%s - %s) * (%s - %s)), 0) AS __q%d", clamped, num(mid), clamped, num(mid), j))
				sums = append(sums, fmt.Sprintf("__q%d", j))
			}
		}
	}
	from, where := "__partial", ""
	var listed []string
	switch {
	case p.groupsPerUnit > 1 && p.public != nil && p.domain <= p.groupsPerUnit:
		// Every key has a public list, and the lists make at most MaxGroups
		// groups: keeping only rows of listed values (the only groups ever
		// released), no patient can reach more, and no threshold is
		// needed.
		for i, vals := range p.public {
			if p.Query.Groups[i].Coded { // positions in the same list
				listed = append(listed, fmt.Sprintf("__g%d BETWEEN 1 AND %d", i, len(vals)))
				continue
			}
			quoted := make([]string, len(vals))
			for k, v := range vals {
				quoted[k] = "'" + strings.ReplaceAll(v, "'", "''") + "'"
			}
			listed = append(listed, fmt.Sprintf("__g%d::VARCHAR IN (%s)", i, strings.Join(quoted, ", ")))
		}
	case p.groupsPerUnit > 1:
		// Each (patient, group) pair gets a salted hash; a patient keeps
		// the pairs whose hash is among their MaxGroups smallest. The
		// threshold is an aggregate per patient and a hash join, which is
		// much cheaper than a window sort over all pairs.
		// Only patients with more than MaxGroups groups need a threshold.
		partial = append(partial, fmt.Sprintf("hash(%s, %d) AS __h", strings.Join(keys, ", "), salt))
		from = fmt.Sprintf("__partial LEFT JOIN (SELECT __pu, list_max(min(__h, %d)) AS __th FROM __partial "+
			"SEMI JOIN (SELECT __pu FROM __partial GROUP BY __pu HAVING count(*) > %d) USING (__pu) GROUP BY __pu) USING (__pu)",
			p.groupsPerUnit, p.groupsPerUnit)
		where = " WHERE __th IS NULL OR __h <= __th"
	}
	if bits := p.unitBits(); bits != "" {
		final = append(final, bits+" AS __bits")
	}
	filter := func(conds []string) string {
		if len(conds) == 0 {
			return ""
		}
		return " WHERE " + strings.Join(conds, " AND ")
	}
	if t == 0 {
		out := fmt.Sprintf(", __partial AS (SELECT %s FROM __base%s GROUP BY %s)", strings.Join(partial, ", "), filter(listed), strings.Join(keys, ", "))
		return fmt.Sprintf("%s SELECT %s FROM %s%s", out, strings.Join(final, ", "), from, where)
	}
	by := ""
	if len(groups) > 0 {
		by = " GROUP BY " + strings.Join(groups, ", ")
	}
	heavy := append([]string{fmt.Sprintf("__n > %d", t)}, listed...)
	lightOnly := append([]string{fmt.Sprintf("__n <= %d", t)}, listed...)
	outer := append([]string{}, groups...)
	for _, c := range counts {
		outer = append(outer, fmt.Sprintf("coalesce(sum(%s), 0)::BIGINT AS %s", c, c))
	}
	for _, c := range sums {
		outer = append(outer, fmt.Sprintf("coalesce(sum(%s), 0) AS %s", c, c))
	}
	return fmt.Sprintf(", __partial AS (SELECT %s FROM __base%s GROUP BY %s), __heavy AS (SELECT %s FROM %s%s%s), __light AS (SELECT %s FROM __base%s%s)"+
		" SELECT %s FROM (SELECT * FROM __heavy UNION ALL BY NAME SELECT * FROM __light)",
		strings.Join(partial, ", "), filter(heavy), strings.Join(keys, ", "),
		strings.Join(final, ", "), from, where, by,
		strings.Join(append(append([]string{}, groups...), light...), ", "), filter(lightOnly), by,
		strings.Join(outer, ", "))
}

// lightRows is how many rows a patient may have in the table of the rank
// for the bounds of partialAggregate to leave all their rows as they are:
// at most MaxRows in any group, and no more groups than MaxGroups (which
// the listed values ensure by themselves when they make no more). It is 0
// where the split does not apply: the base has no row counts (the table
// is not ranked yet, or an outer join reads it), a line at or above the
// engine's largest count (engine.MaxRank), a count of distinct
// patients (no part of which is a plain sum), a measured release (its
// patients' bits), or a federated share (its patient counts must be
// exact).
func (p *Plan) lightRows() int64 {
	q := p.Query
	if !q.RowRank || p.rowBound > 0 || p.units != nil || p.releasesUsers || p.groupsPerUnit <= 1 {
		return 0
	}
	for _, a := range q.Aggs {
		if a.Kind == sandbox.CountUnits || a.Kind == sandbox.Quantile {
			return 0
		}
	}
	t := min(p.rowsPerGroup, p.groupsPerUnit)
	if p.public != nil && p.domain <= p.groupsPerUnit {
		t = p.rowsPerGroup
	}
	if t >= engine.MaxRank {
		// The engine counts rows up to MaxRank only: a patient with more
		// would look light.
		return 0
	}
	return t
}
