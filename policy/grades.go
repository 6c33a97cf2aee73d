package policy

import (
	"fmt"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/hospital/gateway/fault"
)

// GradeRule is what a grade allows, whatever a dataset's own policy says:
// the policy can be stricter, never looser.
type GradeRule struct {
	// MaxEpsilon caps one query's epsilon.
	MaxEpsilon float64 `yaml:"max_epsilon_per_query" json:"max_epsilon_per_query"`
	// MinK is the smallest group size released.
	MinK int `yaml:"min_k" json:"min_k"`
	// ExactAllowed permits exact, small-cell-suppressed aggregates without
	// noise (meant for general data only).
	ExactAllowed bool `yaml:"exact_allowed" json:"exact_allowed"`
	// ExpectedQueries is how many queries a grant on data of the grade is
	// expected to ask: an access request that names no delta gets the
	// delta their k rules need (accountant.DeltaFor). Default 1000.
	ExpectedQueries int `yaml:"expected_queries" json:"expected_queries"`
}

// DefaultExpectedQueries is a grade's expected_queries when it sets none.
const DefaultExpectedQueries = 1000

// Expected is the rule's expected number of queries per grant.
func (r GradeRule) Expected() int {
	if r.ExpectedQueries <= 0 {
		return DefaultExpectedQueries
	}
	return r.ExpectedQueries
}

// GradeRules are the rules of each grade; see grades.yaml at the root of
// the repository for the commented defaults.
type GradeRules map[Grade]GradeRule

// DefaultGradeRules mirror grades.yaml.
func DefaultGradeRules() GradeRules {
	return GradeRules{
		Core:      {MaxEpsilon: 1.0, MinK: 10, ExpectedQueries: DefaultExpectedQueries},
		Important: {MaxEpsilon: 2.0, MinK: 5, ExpectedQueries: DefaultExpectedQueries},
		General:   {MaxEpsilon: 5.0, MinK: 3, ExactAllowed: true, ExpectedQueries: DefaultExpectedQueries},
	}
}

// LoadGradeRules reads a grade rules file; every grade must be present.
func LoadGradeRules(path string) (GradeRules, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read grade rules: %w", err)
	}
	var r GradeRules
	if err := yaml.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("grade rules %s: %w", path, err)
	}
	for _, g := range []Grade{Core, Important, General} {
		rule, ok := r[g]
		if !ok {
			return nil, fmt.Errorf("grade rules %s: no rule for %s", path, g)
		}
		if rule.MaxEpsilon <= 0 || rule.MinK < 2 {
			return nil, fmt.Errorf("grade rules %s: %s needs max_epsilon_per_query > 0 and min_k >= 2", path, g)
		}
		if rule.ExactAllowed && g != General {
			return nil, fmt.Errorf("grade rules %s: exact answers may only be allowed for general data", path)
		}
		if rule.ExpectedQueries < 0 {
			return nil, fmt.Errorf("grade rules %s: %s has a negative expected_queries", path, g)
		}
	}
	return r, nil
}

// Apply returns p under the rule: k and special_k raised to the grade's
// minimum (a dataset's policy can be stricter than its grade, never looser).
func (r GradeRule) Apply(p Policy) Policy {
	p.K, p.SpecialK = max(p.K, r.MinK), max(p.SpecialK, r.MinK)
	return p
}

// CapEpsilon is the per-query epsilon cap under the rule: the gateway's
// own cap when it is set and stricter, the grade's otherwise.
func (r GradeRule) CapEpsilon(gateway float64) float64 {
	if gateway <= 0 || gateway > r.MaxEpsilon {
		return r.MaxEpsilon
	}
	return gateway
}

// CheckGrade refuses a policy looser than its grade allows: a k or
// special_k below the grade's min_k.
func (p Policy) CheckGrade(g Grade, rules GradeRules) error {
	if rules == nil {
		rules = DefaultGradeRules()
	}
	rule, ok := rules[g]
	if !ok {
		return fault.E(fault.Invalid, "no grade rule for %q", g)
	}
	if p.K < rule.MinK {
		return fault.E(fault.Invalid, "k %d is below the minimum of %d that grade %s allows (grade_rules min_k); set k to at least %d", p.K, rule.MinK, g, rule.MinK)
	}
	if p.SpecialK < rule.MinK {
		return fault.E(fault.Invalid, "special_k %d is below the minimum of %d that grade %s allows (grade_rules min_k); set special_k to at least %d", p.SpecialK, rule.MinK, g, rule.MinK)
	}
	return nil
}
