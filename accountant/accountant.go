// Package accountant counts what a grant's queries have spent, with
// zero-concentrated differential privacy (zCDP, Bun and Steinke 2016)
// beside the plain sum of epsilons, and converts back to the (epsilon,
// delta) in which grants are stated.
//
// # What a query costs
//
// A query releases several noised quantities (privacy.Plan.Quantities):
// its values, the k rule's patient count, the histogram that chooses the
// contribution bound, the estimates of what the bound cut. Each is charged
// in zCDP:
//
//   - a Laplace quantity whose noise is calibrated to epsilon e (scale
//     sensitivity/e) is e-DP, and pure e-DP implies e^2/2-zCDP, so it costs
//     rho = e^2/2;
//   - a Gaussian quantity of L2 sensitivity D and standard deviation sigma
//     costs rho = D^2/(2 sigma^2), whatever delta it was calibrated for.
//
// rho adds up under composition, adaptive or not. The noisy k rule (and
// partition selection) is not zCDP: with probability at most its delta a
// group below k could appear. It is delta-approximate zCDP (Bun and
// Steinke, Definition 1.12: outside an event of probability delta the
// rest is e^2/2-zCDP), and those deltas add up beside rho
// (Charge.DeltaPartition).
//
// # What a grant has spent
//
// A grant is stated in (epsilon, delta) and tracks four sums, kept exactly
// in integer units (Spent): the plain sum of its queries' epsilons and
// deltas (basic composition), their rho, and their partition deltas. Two
// guarantees hold at once, and the grant is charged the better of the two
// that fit its delta:
//
//   - basic composition: (epsilon sum, delta sum);
//   - zCDP: (Epsilon(rho, delta_conv), delta partition sum + delta_conv),
//     where delta_conv = ConversionShare of the grant's delta is set aside
//     for the conversion.
//
// epsilon_spent is the smaller epsilon of the guarantees whose delta is
// within the grant's; a query is admitted when, with it, one of them has
// epsilon and delta within the grant's totals. For a few queries the plain
// sum is smaller; past a handful, zCDP is: k queries of rho each cost about
// 2 sqrt(k rho log(1/delta_conv)), growing like sqrt(k) rather than k. The
// Gaussian mechanism has the smallest rho for its accuracy, so Gaussian
// queries gain most.
//
// # The conversion
//
// Epsilon is the conversion of Canonne, Kamath and Steinke (2020, "The
// Discrete Gaussian for Differential Privacy", Proposition 12 with the
// Rényi divergences of zCDP): rho-zCDP implies (epsilon, delta)-DP for
//
//	epsilon = inf over alpha > 1 of alpha rho + log(1 - 1/alpha) + (log(1/delta) - log(alpha)) / (alpha - 1).
//
// Every alpha gives a valid epsilon, so the numerical minimisation can only
// err on the safe side; it includes alpha = 1 + sqrt(log(1/delta)/rho),
// where the expression is below the simple bound rho + 2 sqrt(rho
// log(1/delta)) (SimpleEpsilon), which it therefore never exceeds.
//
// # Units
//
// Budget sums are integers: epsilon in units of 1e-6, rho of 1e-12 and
// delta of 1e-15, each charge rounded up to its unit (a decimal epsilon
// such as 0.1 is exact), so that sums are exact and shown as asked: 2.9,
// not 2.9000000000000004. Figures are shown as the unit count divided by
// its scale, which is the float nearest the decimal.
package accountant

import "math"

// ConversionShare is the share of a grant's delta set aside for the
// conversion from zCDP to (epsilon, delta).
const ConversionShare = 0.5

// DeltaFor is the delta a grant needs to pay for queries queries whose k
// rules spend partition each, beside the share set aside for the
// conversion: partition * queries / (1 - ConversionShare), to the unit.
// Access requests that name no delta get it (see policy.GradeRule's
// ExpectedQueries).
func DeltaFor(partition float64, queries int) float64 {
	return Figure(Up(partition*float64(queries)/(1-ConversionShare), DeltaScale), DeltaScale)
}

// Name is the accounting's name in budgets: "zcdp".
const Name = "zcdp"

// The scales of the integer units.
const (
	EpsilonScale = 1e6
	RhoScale     = 1e12
	DeltaScale   = 1e15
)

// Laplace is the zCDP cost of a Laplace quantity calibrated to epsilon e.
func Laplace(e float64) float64 { return e * e / 2 }

// Gaussian is the zCDP cost of a Gaussian quantity of L2 sensitivity d and
// standard deviation sigma.
func Gaussian(d, sigma float64) float64 { return d * d / (2 * sigma * sigma) }

// SimpleEpsilon is the simple conversion of rho-zCDP to (epsilon,
// delta)-DP: rho + 2 sqrt(rho log(1/delta)) (Bun and Steinke 2016,
// Proposition 1.3).
func SimpleEpsilon(rho, delta float64) float64 {
	if rho <= 0 {
		return 0
	}
	if delta <= 0 || delta >= 1 {
		return math.Inf(1)
	}
	return rho + 2*math.Sqrt(rho*math.Log(1/delta))
}

// epsilonAt is the conversion's epsilon at one order alpha > 1.
func epsilonAt(alpha, rho, logInvDelta float64) float64 {
	return alpha*rho + math.Log1p(-1/alpha) + (logInvDelta-math.Log(alpha))/(alpha-1)
}

// Epsilon is the tight conversion of rho-zCDP to (epsilon, delta)-DP of
// Canonne, Kamath and Steinke (see the package comment). It is +Inf when
// delta is not in (0, 1), and 0 for rho 0.
func Epsilon(rho, delta float64) float64 {
	if rho <= 0 {
		return 0
	}
	if delta <= 0 || delta >= 1 || math.IsNaN(rho) || math.IsInf(rho, 0) {
		return math.Inf(1)
	}
	L := math.Log(1 / delta)
	// Search t = log(alpha - 1) on a grid, then refine around the best
	// point by golden section. Start from the simple bound's order. The
	// grid's step is coarse (every reservation converts twice, and a
	// finer grid made it a quarter of a millisecond); the section search
	// spans a step either side of the best point, and the function is
	// unimodal in t (the test checks against Delta, the dual).
	const step = 0.25
	f := func(t float64) float64 { return epsilonAt(1+math.Exp(t), rho, L) }
	bestT := 0.5 * math.Log(L/rho)
	best := f(bestT)
	for t := -20.0; t <= 30; t += step {
		if v := f(t); v < best {
			best, bestT = v, t
		}
	}
	lo, hi := bestT-step, bestT+step
	const g = 0.6180339887498949
	a, b := hi-g*(hi-lo), lo+g*(hi-lo)
	fa, fb := f(a), f(b)
	for i := 0; i < 80; i++ {
		if fa < fb {
			hi, b, fb = b, a, fa
			a = hi - g*(hi-lo)
			fa = f(a)
		} else {
			lo, a, fa = a, b, fb
			b = lo + g*(hi-lo)
			fb = f(b)
		}
	}
	best = math.Min(best, math.Min(fa, fb))
	return math.Max(0, best)
}

// Delta is the delta of the same conversion at a given epsilon: the
// smallest delta for which rho-zCDP implies (epsilon, delta)-DP, as in
// Canonne, Kamath and Steinke's own code (log delta is convex in alpha).
// It is the dual of Epsilon, used to check it.
func Delta(rho, epsilon float64) float64 {
	if rho <= 0 {
		return 0
	}
	// The derivative of log delta in alpha is (2 alpha - 1) rho - epsilon
	// + log(1 - 1/alpha), increasing in alpha.
	lo, hi := 1.0, math.Max(2, (epsilon+1)/(2*rho)+2)
	for i := 0; i < 2000 && hi-lo > 1e-13*hi; i++ {
		mid := (lo + hi) / 2
		if (2*mid-1)*rho-epsilon+math.Log1p(-1/mid) < 0 {
			lo = mid
		} else {
			hi = mid
		}
	}
	alpha := (lo + hi) / 2
	d := math.Exp((alpha-1)*(alpha*rho-epsilon)+alpha*math.Log1p(-1/alpha)) / (alpha - 1)
	return math.Min(d, 1)
}

// Charge is what one query costs: its epsilon and delta under basic
// composition, its rho, and the delta of its k rule, which the zCDP
// guarantee adds beside rho.
type Charge struct {
	Epsilon        float64 `json:"epsilon"`
	Delta          float64 `json:"delta"`
	Rho            float64 `json:"rho"`
	DeltaPartition float64 `json:"delta_partition"`
}

// Pure is the charge of an (epsilon, delta) release known only by those
// figures: pure epsilon-DP implies epsilon^2/2-zCDP, and all of delta is
// counted beside it.
func Pure(epsilon, delta float64) Charge {
	return Charge{Epsilon: epsilon, Delta: delta, Rho: Laplace(epsilon), DeltaPartition: delta}
}

// Spent is a grant's sums, or one charge, in integer units (see the
// package comment).
type Spent struct {
	EpsilonSum     int64 `json:"-"` // 1e-6
	DeltaSum       int64 `json:"-"` // 1e-15
	Rho            int64 `json:"-"` // 1e-12
	DeltaPartition int64 `json:"-"` // 1e-15
}

// Units is c in integer units, each figure rounded up to its unit.
func (c Charge) Units() Spent {
	return Spent{EpsilonSum: Up(c.Epsilon, EpsilonScale), DeltaSum: Up(c.Delta, DeltaScale),
		Rho: Up(c.Rho, RhoScale), DeltaPartition: Up(c.DeltaPartition, DeltaScale)}
}

// Plus is s with c added.
func (s Spent) Plus(c Spent) Spent {
	return Spent{s.EpsilonSum + c.EpsilonSum, s.DeltaSum + c.DeltaSum, s.Rho + c.Rho, s.DeltaPartition + c.DeltaPartition}
}

// Up is x in units of 1/scale, rounded up; a product within float error of
// a whole number of units (a decimal epsilon such as 0.1) is that number.
func Up(x, scale float64) int64 {
	if x <= 0 || math.IsNaN(x) {
		return 0
	}
	v := x * scale
	r := math.Round(v)
	if math.Abs(v-r) <= 1e-9*math.Max(1, r) {
		return int64(r)
	}
	return int64(math.Ceil(v))
}

// Figure is a unit count as a number: the float nearest n/scale, so that
// 2900000 micro-units read 2.9.
func Figure(n int64, scale float64) float64 { return float64(n) / scale }

// Budget is what a grant may spend, as stated: (epsilon, delta).
type Budget struct {
	Epsilon float64
	Delta   float64
}

// Position is where a grant stands after spending Spent: the epsilon and
// delta of the guarantee that is charged, which one it is, and whether it
// fits the budget.
type Position struct {
	// EpsilonSpent and DeltaSpent are the charged guarantee's.
	EpsilonSpent float64
	DeltaSpent   float64
	// By is "sum" (basic composition) or "zcdp" (the conversion).
	By string
	// Fits reports whether the charged guarantee is within the budget;
	// when it is not, Short names what ran out: "epsilon" or "delta".
	Fits  bool
	Short string
	// EpsilonUnits is EpsilonSpent in units of 1e-6.
	EpsilonUnits int64
}

// Position evaluates s against b (see the package comment).
func (b Budget) Position(s Spent) Position {
	epsTotal, deltaTotal := Up(b.Epsilon, EpsilonScale), Up(b.Delta, DeltaScale)
	conv := int64(float64(deltaTotal) * ConversionShare)
	type option struct {
		eps, delta int64
		by         string
	}
	var opts []option
	if s.DeltaSum <= deltaTotal {
		opts = append(opts, option{s.EpsilonSum, s.DeltaSum, "sum"})
	}
	if conv > 0 && s.DeltaPartition+conv <= deltaTotal {
		e := Epsilon(Figure(s.Rho, RhoScale), Figure(conv, DeltaScale))
		if !math.IsInf(e, 0) && e < 1e12 {
			opts = append(opts, option{Up(e, EpsilonScale), s.DeltaPartition + conv, "zcdp"})
		}
	}
	if len(opts) == 0 {
		return Position{EpsilonSpent: Figure(s.EpsilonSum, EpsilonScale), DeltaSpent: Figure(s.DeltaSum, DeltaScale),
			By: "sum", Short: "delta", EpsilonUnits: s.EpsilonSum}
	}
	best := opts[0]
	for _, o := range opts[1:] {
		if o.eps < best.eps {
			best = o
		}
	}
	p := Position{EpsilonSpent: Figure(best.eps, EpsilonScale), DeltaSpent: Figure(best.delta, DeltaScale),
		By: best.by, Fits: best.eps <= epsTotal, EpsilonUnits: best.eps}
	if !p.Fits {
		p.Short = "epsilon"
	}
	return p
}

// By names the guarantee of a charge that Position chose for s and that
// was stored as epsilonUnits: "sum" when it is the plain sum of the
// epsilons with the plain sum of the deltas within the budget (Position
// prefers the sum on a tie), "zcdp" otherwise. It reads the stored choice
// instead of converting s again, which is most of what reading a grant
// costs.
func (b Budget) By(s Spent, epsilonUnits int64) string {
	if epsilonUnits == s.EpsilonSum && s.DeltaSum <= Up(b.Delta, DeltaScale) {
		return "sum"
	}
	return "zcdp"
}
