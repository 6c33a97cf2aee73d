package privacy

import (
	"fmt"
	"math"

	"github.com/google/differential-privacy/go/v3/noise"

	"github.com/hospital/gateway/accountant"
	"github.com/hospital/gateway/sandbox"
)

// Quantity is one noised release of a plan, listed from the same fields
// its noise is drawn with (Release, noiseAgg, withBias, Choose), so that
// what is charged for it is what its noise gives. The grant's accountant
// adds up their Rho (see package accountant).
type Quantity struct {
	// Name is the result column (or "bound_histogram", or the column
	// and the level of a quantile's tree).
	Name      string    `json:"name"`
	Mechanism Mechanism `json:"mechanism"`
	// Epsilon is what the quantity charges, in the query's epsilon (the
	// special-group share makes the noise's own epsilon smaller, as for
	// the query as a whole: the full epsilon is charged).
	Epsilon float64 `json:"epsilon"`
	// Delta is a Gaussian quantity's delta.
	Delta float64 `json:"delta,omitempty"`
	// L2 and Sigma are a Gaussian quantity's L2 sensitivity and the
	// standard deviation of its noise.
	L2    float64 `json:"l2,omitempty"`
	Sigma float64 `json:"sigma,omitempty"`
	// Rho is its zCDP cost: Epsilon^2/2 for Laplace, L2^2/(2 sigma^2) at
	// the charged epsilon for Gaussian.
	Rho float64 `json:"rho"`
	// Threshold is the delta of the k rule decided on this quantity (0
	// when it decides none): outside zCDP, counted beside rho.
	Threshold float64 `json:"threshold,omitempty"`
}

// Quantities lists every noised quantity of the plan at its current
// contribution bound: the bound-choosing histogram (at BoundShare), the
// k rule's patient count when it is a quantity of its own, each
// aggregate's values (a quantile's tree level by level), and the bias
// estimates (at BiasShare). Exact plans have none.
func (p *Plan) Quantities() []Quantity {
	if p.Mechanism == None {
		return nil
	}
	f := p.epsilonFactor()
	G, C := p.noiseL0Linf()
	gauss := p.Mechanism == Gaussian
	var out []Quantity
	laplace := func(name string, eps float64) Quantity {
		e := eps * f
		return Quantity{Name: name, Mechanism: Laplace, Epsilon: e, Rho: accountant.Laplace(e)}
	}
	value := func(name string, l0 int64, linf, eps float64) Quantity {
		if !gauss {
			return laplace(name, eps)
		}
		return gaussianQuantity(name, l0, linf, eps, f, p.deltaEach)
	}
	if p.boundEps > 0 {
		out = append(out, laplace("bound_histogram", p.boundEps))
	}
	if p.kAgg < 0 {
		q := laplace("__users", p.epsEach)
		q.Threshold = p.psDelta
		out = append(out, q)
	}
	for j, a := range p.Query.Aggs {
		half := (a.Max - a.Min) / 2
		c := float64(C)
		var qs []Quantity
		switch a.Kind {
		case sandbox.Count:
			qs = append(qs, value(fmt.Sprintf("__c%d", j), G, c, p.epsEach))
		case sandbox.CountUnits:
			qs = append(qs, value(fmt.Sprintf("__c%d", j), G, 1, p.epsEach))
		case sandbox.Sum:
			qs = append(qs, value(fmt.Sprintf("__s%d", j), G, c*math.Max(math.Abs(a.Min), math.Abs(a.Max)), p.epsEach))
		case sandbox.Avg, sandbox.VarSamp, sandbox.VarPop, sandbox.StddevSamp, sandbox.StddevPop:
			qs = append(qs, value(fmt.Sprintf("__c%d", j), G, c, p.epsEach), value(fmt.Sprintf("__s%d", j), G, c*half, p.epsEach))
			if a.Kind != sandbox.Avg {
				qs = append(qs, value(fmt.Sprintf("__q%d", j), G, c*half*half, p.epsEach))
			}
		case sandbox.Quantile:
			for l := 0; l < treeLevels; l++ {
				name := fmt.Sprintf("__hv%d/level%d", j, l+1)
				if gauss {
					qs = append(qs, gaussianQuantity(name, G, c, p.epsEach/treeLevels, f, p.deltaEach/treeLevels))
				} else {
					qs = append(qs, laplace(name, p.epsEach/treeLevels))
				}
			}
		}
		if j == p.kAgg {
			qs[0].Threshold = p.psDelta
		}
		out = append(out, qs...)
		if p.biasEstimated(a) {
			dc, ds := p.biasCols(a)
			if dc {
				out = append(out, laplace(fmt.Sprintf("__dc%d", j), p.epsBias))
			}
			if ds {
				out = append(out, laplace(fmt.Sprintf("__ds%d", j), p.epsBias))
			}
		}
	}
	return out
}

// gaussianQuantity is a Gaussian quantity noised at (eps, delta) with
// sensitivities (l0, linf), charged at eps*f.
func gaussianQuantity(name string, l0 int64, linf, eps, f, delta float64) Quantity {
	if linf <= 0 {
		linf = 1 // a degenerate column; rho does not depend on linf
	}
	l2 := math.Sqrt(float64(l0)) * linf
	charged := noise.SigmaForGaussian(l0, linf, eps*f, delta)
	return Quantity{Name: name, Mechanism: Gaussian, Epsilon: eps * f, Delta: delta, L2: l2,
		Sigma: noise.SigmaForGaussian(l0, linf, eps, delta), Rho: accountant.Gaussian(l2, charged)}
}

// Charge is what the plan costs the grant (see package accountant): its
// epsilon and delta under basic composition, the sum of its quantities'
// rho, and the delta of its k rule. When the contribution bound is chosen
// from data (Choose), rho is the largest over every bound it may choose,
// before and after the choice, so that the charge reserved before any data
// is read covers the noise drawn after and stays what was reserved.
func (p *Plan) Charge() accountant.Charge {
	if p.Mechanism == None {
		return accountant.Charge{}
	}
	rho := rhoOf(p.Quantities())
	if p.boundEps > 0 {
		for _, m := range boundLadder(p.boundMax) {
			c := *p
			c.setBound(m)
			rho = math.Max(rho, rhoOf(c.Quantities()))
		}
	}
	return chargeOf(p.Cost, p.Quantities(), rho)
}

// DeltaSplit is how the plan's delta splits: the k rule's threshold
// (partition selection, or suppression of public groups) and the
// Gaussian noise.
func (p *Plan) DeltaSplit() (partition, gaussian float64) {
	return deltaSplit(p.Quantities())
}

func deltaSplit(qs []Quantity) (partition, gaussian float64) {
	for _, q := range qs {
		partition += q.Threshold
		gaussian += q.Delta
	}
	return partition, gaussian
}

func rhoOf(qs []Quantity) float64 {
	rho := 0.0
	for _, q := range qs {
		rho += q.Rho
	}
	return rho
}

// chargeOf is the charge of quantities qs planned at cost. The plain
// delta is the cost's, unless the quantities' own deltas add up to more.
func chargeOf(cost Cost, qs []Quantity, rho float64) accountant.Charge {
	partition, gaussian := deltaSplit(qs)
	delta := cost.Delta
	if partition+gaussian > delta*(1+1e-9) {
		delta = partition + gaussian
	}
	return accountant.Charge{Epsilon: cost.Epsilon, Delta: delta, Rho: rho, DeltaPartition: partition}
}

// withCharge states in the privacy block what the plan's charge is made
// of: rho, and the delta of partition selection (the k rule) and of the
// Gaussian noise.
func (r *Report) withCharge(p *Plan) {
	r.Rho = p.Charge().Rho
	r.DeltaPartition, r.DeltaGaussian = p.DeltaSplit()
}

// Quantities lists the noised quantities of a federated plan: every value
// of the layout, the pooled patient count included, Gaussian at the
// central sigma (see FederatedPlan); the k rule has no threshold.
func (p *FederatedPlan) Quantities() []Quantity {
	f := p.epsilonFactor()
	G, _ := p.bounds()
	var out []Quantity
	for _, q := range p.qs {
		out = append(out, gaussianQuantity(q.col, G, q.linf, p.epsEach, f, p.deltaEach))
	}
	return out
}

// Charge is what a federated plan costs this hospital's grant.
func (p *FederatedPlan) Charge() accountant.Charge {
	qs := p.Quantities()
	return chargeOf(p.Cost, qs, rhoOf(qs))
}
