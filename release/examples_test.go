package release_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/hospital/gateway/accountant"
	"github.com/hospital/gateway/api/apitest"
	"github.com/hospital/gateway/demo"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/release"
	"github.com/hospital/gateway/sandbox"
)

// readmeExamples are the queries the README shows working, in its order:
// the first query, the dry run's and the two of "More queries that work".
var readmeExamples = []string{
	"SELECT sex, count(*) AS n FROM patients GROUP BY sex",
	"SELECT department, count(*) AS n FROM encounters GROUP BY department",
	"SELECT department, avg(cost_yuan), median(length_of_stay_days) FROM encounters GROUP BY department",
	"SELECT p.province, count(DISTINCT e.patient_id) FROM encounters e JOIN patients p ON e.patient_id = p.patient_id WHERE e.admit_date >= DATE '2024-01-01' GROUP BY p.province",
}

// examplePlans plans the README's examples over the demo's schema and
// policy at cost, as the release does (ranked where it ranks, the bound
// chosen from data): what each charges depends on the SQL, the policy and
// the cost only.
func examplePlans(t *testing.T, e *engine.Engine, cost privacy.Cost) []*privacy.Plan {
	t.Helper()
	ctx := context.Background()
	pol := policy.DefaultGradeRules()[policy.Core].Apply(demo.Policy())
	var scope sandbox.Scope
	for _, tb := range pol.Tables {
		scope.Sources = append(scope.Sources, sandbox.Source{Dataset: demo.Dataset, Grade: policy.Core, Table: tb, Policy: pol})
	}
	var out []*privacy.Plan
	for _, sql := range readmeExamples {
		q, err := sandbox.Analyze(ctx, e, sql, scope)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		if c := q.Counted; c != nil {
			if err := e.RankRows(ctx, c.Dataset, c.Table, c.Unit); err != nil {
				t.Fatal(err)
			}
		}
		if r := q.Rank; r != nil {
			if err := e.RankRows(ctx, r.Dataset, r.Table, r.Unit); err != nil {
				t.Fatal(err)
			}
			q.UseRank()
		}
		p, err := privacy.NewPlanWith(q, cost, privacy.Options{Choose: true}, privacy.Limits{})
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		out = append(out, p)
	}
	return out
}

// paysFor is how many of the plans, asked in turn (each time with another
// filter, so that none is a repeat answered for free), a grant of budget
// pays for: by the plain sum of epsilons and deltas alone, and by the
// accountant.
func paysFor(plans []*privacy.Plan, b accountant.Budget) (plain, zcdp int) {
	var eps, delta int64
	for i := 0; ; i++ {
		c := plans[i%len(plans)].Charge().Units()
		eps, delta = eps+c.EpsilonSum, delta+c.DeltaSum
		if eps > accountant.Up(b.Epsilon, accountant.EpsilonScale) || delta > accountant.Up(b.Delta, accountant.DeltaScale) {
			plain = i
			break
		}
	}
	var s accountant.Spent
	for i := 0; ; i++ {
		s = s.Plus(plans[i%len(plans)].Charge().Units())
		if !b.Position(s).Fits {
			return plain, i
		}
	}
}

// TestExampleQueriesPerGrant counts how many of the README's example
// queries a grant of epsilon 3 (with the default delta, 2e-5) pays for,
// at the grant's default epsilon of 0.1 each: by adding epsilons, as
// before, and with the accountant, under Laplace noise and under Gaussian
// noise (delta 1e-8 each). The README quotes the figures.
func TestExampleQueriesPerGrant(t *testing.T) {
	e, err := engine.Open(context.Background(), engine.Config{MemoryLimit: "1GB", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := apitest.LoadSeeded(context.Background(), e, 500, 1); err != nil {
		t.Fatal(err)
	}
	grant := accountant.Budget{Epsilon: 3, Delta: release.DefaultDelta(nil, privacy.Limits{}, policy.Core)}
	var report strings.Builder
	fmt.Fprintf(&report, "grant (epsilon %g, delta %g), README examples in turn at epsilon 0.1:\n", grant.Epsilon, grant.Delta)
	results := map[string][2]int{}
	for _, m := range []struct {
		name string
		cost privacy.Cost
	}{{"laplace", privacy.Cost{Epsilon: 0.1}}, {"gaussian", privacy.Cost{Epsilon: 0.1, Delta: 1e-8}}} {
		plans := examplePlans(t, e, m.cost)
		for i, p := range plans {
			c := p.Charge()
			fmt.Fprintf(&report, "  %s %d: rho %.3g, delta %.3g (k rule %.3g)\n", m.name, i+1, c.Rho, c.Delta, c.DeltaPartition)
		}
		plain, z := paysFor(plans, grant)
		results[m.name] = [2]int{plain, z}
		fmt.Fprintf(&report, "  %s: %d queries by the plain sum, %d with the accountant\n", m.name, plain, z)
	}
	t.Log(report.String())
	for name, r := range results {
		if r[0] != 30 {
			t.Errorf("%s: the plain sum pays for %d queries of 0.1 within 3, want 30", name, r[0])
		}
		if r[1] <= r[0] {
			t.Errorf("%s: the accountant pays for %d, no more than the plain sum's %d", name, r[1], r[0])
		}
	}
	if results["gaussian"][1] <= results["laplace"][1] {
		t.Errorf("Gaussian queries: %d, no more than Laplace's %d", results["gaussian"][1], results["laplace"][1])
	}
}

// TestGaussianExamplesCostSqrtK: asked k times in turn, the README's
// examples under Gaussian noise cost the grant about sqrt(k): four times
// as many queries spend about twice the epsilon.
func TestGaussianExamplesCostSqrtK(t *testing.T) {
	e, err := engine.Open(context.Background(), engine.Config{MemoryLimit: "1GB", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := apitest.LoadSeeded(context.Background(), e, 500, 1); err != nil {
		t.Fatal(err)
	}
	plans := examplePlans(t, e, privacy.Cost{Epsilon: 0.1, Delta: 1e-8})
	b := accountant.Budget{Epsilon: math.MaxInt32, Delta: 1e-3}
	spent := func(k int) float64 {
		var s accountant.Spent
		for i := 0; i < k; i++ {
			s = s.Plus(plans[i%len(plans)].Charge().Units())
		}
		return b.Position(s).EpsilonSpent
	}
	for _, k := range []int{8, 32, 128} {
		r := spent(4*k) / spent(k)
		t.Logf("%d queries: epsilon %.3g (plain sum %.3g); %d: %.3g; ratio %.2f", k, spent(k), 0.1*float64(k), 4*k, spent(4*k), r)
		if r < 1.7 || r > 2.3 {
			t.Errorf("%d queries cost %.2f times %d; want about 2", 4*k, r, k)
		}
	}
}
