package privacy_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/sandbox"
)

// The sensitivity tester: every accepted query of a corpus, hand-written
// and generated from the shapes the analyser accepts (joins of every kind,
// filters on either table, public and declared group keys, every
// aggregate), is planned, and its bounded SQL runs on a small hospital and
// on the same hospital without one patient (heavy, medium and light
// patients in turn). Every column that is noised, or that decides the k
// rule, must move by at most what the plan declares (Plan.Sensitivities):
// in L1 over all groups at most L0*Linf, in no group more than Linf, and
// in L2 at most sqrt(L0)*Linf.
//
// Removing a patient is done on the base rows (WHERE __pu <> id), which is
// exactly the neighbouring dataset: every row of the joined tables belongs
// to one patient (the joins are on the unit), and the bounding, the rank
// and the salted hashes depend on each patient's own rows only, so the
// same plan SQL (same salt) runs on both.

// sensitivityHospital: 60 patients. Patient 1 has 240 visits over six
// departments, patients 2..9 between 6 and 30, the others one to three.
// Costs run past the declared bound of 1000.
func sensitivityHospital(t *testing.T) (*engine.Engine, sandbox.Scope) {
	t.Helper()
	ctx := context.Background()
	e := engineWith(t, engine.Config{MemoryLimit: "512MB", Threads: 1},
		"CREATE SCHEMA IF NOT EXISTS s",
		`CREATE TABLE s.people AS SELECT range AS patient_id, CASE WHEN range % 2 = 0 THEN 'F' ELSE 'M' END AS sex,
			(range * 7) % 90 AS age, ['P1', 'P2', 'P3'][range % 3 + 1] AS province, range % 10 = 0 AS hiv FROM range(1, 61)`,
		`CREATE TABLE s.visits AS
			SELECT 1 AS patient_id, ['A', 'B', 'C', 'D', 'E', 'F'][i % 6 + 1] AS dept, 1500 + (i * 37) % 501 AS cost, i % 20 AS los, ['X', 'Y', NULL][i % 3 + 1] AS ward FROM range(240) t(i)
			UNION ALL SELECT p, ['A', 'B', 'C'][(p + i) % 3 + 1], (p * 100 + i * 13) % 1200, (p + i) % 9, ['X', 'Y'][(p + i) % 2 + 1] FROM range(2, 10) a(p), range(30) b(i) WHERE i < p * 3
			UNION ALL SELECT p, ['A', 'B', 'C', 'D'][(p + i) % 4 + 1], (p * 17 + i) % 900, i, 'X' FROM range(10, 61) a(p), range(3) b(i) WHERE i <= p % 3`)
	if err := e.RankRows(ctx, "s", "visits", "patient_id"); err != nil {
		t.Fatal(err)
	}
	costMin, costMax, ageMin, ageMax := 0.0, 1000.0, 0.0, 100.0
	// Costs run to 2000 and ages to 89: clamping cuts both, within their
	// domains, so the bias estimates of clamping are checked too.
	costTop, ageClamp := 2000.0, 60.0
	pol := policy.Policy{
		Tables: []policy.Table{
			{Name: "people", OneRowPerUnit: true, Columns: []policy.Column{
				{Name: "patient_id", Role: policy.Unit},
				{Name: "sex", Role: policy.QuasiIdentifier, Public: []string{"F", "M"}},
				{Name: "age", Role: policy.QuasiIdentifier, Min: &ageMin, Max: &ageClamp, DomainMin: &ageMin, DomainMax: &ageMax, MaxDistinct: 90},
				{Name: "province", Role: policy.QuasiIdentifier, MaxDistinct: 3},
				{Name: "hiv", Type: "BOOLEAN", Role: policy.SpecialGroup},
			}},
			{Name: "visits", Columns: []policy.Column{
				{Name: "patient_id", Role: policy.Unit},
				{Name: "dept", Role: policy.Attribute, Public: []string{"A", "B", "C", "D", "E", "F"}},
				{Name: "cost", Role: policy.Attribute, Min: &costMin, Max: &costMax, DomainMin: &costMin, DomainMax: &costTop},
				{Name: "los", Role: policy.Attribute, Min: &ageMin, Max: &ageMax, MaxDistinct: 20},
				// As many wards as a patient may reach groups, and rows of
				// no ward: per-(patient, group) plans need no threshold.
				{Name: "ward", Role: policy.Attribute, Public: []string{"X", "Y"}},
			}},
		},
		Contribution: policy.Contribution{MaxGroups: 2, MaxRows: 3}, K: 2, SpecialK: 3, SpecialShare: 0.5,
	}
	var scope sandbox.Scope
	for _, tb := range pol.Tables {
		scope.Sources = append(scope.Sources, sandbox.Source{Dataset: "s", Grade: policy.Core, Table: tb, Policy: pol})
	}
	return e, scope
}

// sensitivityCorpus is the hand-written queries and the generated ones.
func sensitivityCorpus() []string {
	corpus := []string{
		"SELECT count(*) AS n FROM people",
		"SELECT p.sex, count(DISTINCT v.patient_id) AS n FROM visits v JOIN people p ON v.patient_id = p.patient_id GROUP BY p.sex",
		"SELECT dept, median(cost) AS m, avg(cost) AS a FROM visits GROUP BY dept",
		"SELECT quantile_cont(cost, 0.9) AS q FROM visits",
		"SELECT p.hiv, count(*) AS n FROM people p GROUP BY p.hiv",
		"SELECT v.los, sum(v.cost) AS s FROM visits v WHERE v.cost > 100 GROUP BY v.los",
		"SELECT p.province, v.dept, count(*) AS n, stddev(v.cost) AS sd FROM people p JOIN visits v ON p.patient_id = v.patient_id GROUP BY p.province, v.dept",
	}
	froms := []string{
		"visits v",
		"people p",
		"visits v JOIN people p ON v.patient_id = p.patient_id",
		"people p LEFT JOIN visits v ON p.patient_id = v.patient_id",
		"visits v RIGHT JOIN people p ON v.patient_id = p.patient_id",
		"visits v JOIN people p USING (patient_id)",
		"people p JOIN people q ON p.patient_id = q.patient_id JOIN visits v ON q.patient_id = v.patient_id",
		"visits v JOIN people p ON v.patient_id = p.patient_id AND v.cost < 500",
	}
	wheres := []string{"", "p.age > 30", "v.cost > 200", "p.sex = 'F' OR v.dept = 'A'", "ln(CASE WHEN p.age = 42 THEN 0 ELSE 1 END) < 1"}
	groups := []string{"", "p.sex", "v.dept", "p.age", "p.province, v.dept", "v.los", "v.ward"}
	aggs := []string{"count(*)", "count(DISTINCT p.patient_id)", "sum(v.cost)", "avg(v.cost)", "var_samp(v.cost)", "median(v.cost)", "count(v.cost)", "sum(p.age)"}
	for _, f := range froms {
		for _, w := range wheres {
			for _, g := range groups {
				for _, a := range aggs {
					sql := "SELECT "
					if g != "" {
						sql += g + ", "
					}
					sql += a + " AS x FROM " + f
					if w != "" {
						sql += " WHERE " + w
					}
					if g != "" {
						sql += " GROUP BY " + g
					}
					corpus = append(corpus, sql)
				}
			}
		}
	}
	return corpus
}

func TestSensitivity(t *testing.T) {
	e, scope := sensitivityHospital(t)
	ctx := context.Background()
	start := time.Now()
	costs := []privacy.Cost{{Epsilon: 1}, {Epsilon: 1, Delta: 1e-6}}
	probes := []int64{1, 9, 37}
	accepted, checked, cuts := 0, 0, 0
	for i, sql := range sensitivityCorpus() {
		q, err := sandbox.Analyze(ctx, e, sql, scope)
		if err != nil {
			if fault.KindOf(err) != fault.QueryRejected {
				t.Fatalf("%s: %v", sql, err)
			}
			continue
		}
		rankIfAsked(t, e, q)
		// Every third query asks for a bound below the policy's maximum,
		// so that the columns of what the bound cut are checked too.
		// Every third query after those has its bound chosen from the
		// noisy histogram, which also sets how far the bias estimates
		// count.
		var opt privacy.Options
		switch i % 3 {
		case 0:
			opt.Bound = 1 + int64(i/3)%2
		case 1:
			opt.Choose = true
		}
		plan, err := privacy.NewPlanWith(q, costs[i%2], opt, privacy.Limits{})
		if err != nil {
			if fault.KindOf(err) != fault.QueryRejected {
				t.Fatalf("%s: %v", sql, err)
			}
			continue
		}
		if ref, upTo, ok := plan.Bounded(); ok {
			counts, err := e.RankCounts(ctx, ref.Dataset, ref.Table, upTo)
			if err != nil {
				t.Fatal(err)
			}
			if err := plan.Choose(counts); err != nil {
				t.Fatal(err)
			}
		}
		accepted++
		for col := range plan.Sensitivities() {
			if strings.HasPrefix(col, "__d") {
				cuts++
				break
			}
		}
		full := groupsOf(t, e, plan.SQL)
		for _, id := range probes {
			// The neighbour's base is materialized: DuckDB 1.5 mis-plans
			// this wrapper around a self-join under the filtered rank
			// shape's union (an internal error), and the plain plan runs.
			without := strings.Replace(plan.SQL, "WITH __base AS (", fmt.Sprintf("WITH __base AS MATERIALIZED (SELECT * FROM (%s) WHERE __pu IS DISTINCT FROM %d), __unused AS (", q.Base, id), 1)
			checkMoves(t, sql, plan, full, groupsOf(t, e, without))
			checked++
		}
	}
	t.Logf("sensitivity tester: %d queries accepted of %d (%d with bias columns), %d neighbouring pairs checked in %v", accepted, len(sensitivityCorpus()), cuts, checked, time.Since(start).Round(time.Millisecond))
	if cuts < 100 {
		t.Errorf("only %d plans estimate what their bound cut; the corpus no longer covers them", cuts)
	}
	if accepted < 300 {
		t.Errorf("only %d queries accepted; the corpus no longer covers the analyser's shapes", accepted)
	}
}

// groupsOf runs sql and returns, per group key, each column's values
// (histograms as one value per leaf, named __hvJ:LEAF).
func groupsOf(t *testing.T, e *engine.Engine, sql string) map[string]map[string]float64 {
	t.Helper()
	res, err := e.Query(context.Background(), sql, 100000)
	if err != nil {
		t.Fatalf("%v\n%s", err, sql)
	}
	out := map[string]map[string]float64{}
	for _, r := range res.Rows {
		var key []string
		vals := map[string]float64{}
		for i, c := range res.Columns {
			switch {
			case strings.HasPrefix(c.Name, "__g"):
				key = append(key, fmt.Sprint(r[i]))
			case strings.HasPrefix(c.Name, "__hk"):
				j := strings.TrimPrefix(c.Name, "__hk")
				ks, _ := r[i].([]any)
				var ns []any
				for k, cc := range res.Columns {
					if cc.Name == "__hv"+j {
						ns, _ = r[k].([]any)
					}
				}
				for n, k := range ks {
					vals[fmt.Sprintf("__hv%s:%v", j, k)] = number(ns[n])
				}
			case strings.HasPrefix(c.Name, "__hv"), c.Name == "__bits":
			default:
				vals[c.Name] = number(r[i])
			}
		}
		out[strings.Join(key, "\x00")] = vals
	}
	return out
}

func number(v any) float64 {
	switch x := v.(type) {
	case nil:
		return 0
	case int64:
		return float64(x)
	case int32:
		return float64(x)
	case uint64:
		return float64(x)
	case float64:
		return x
	}
	panic(fmt.Sprintf("unexpected %T", v))
}

// checkMoves compares two results column by column against the plan's
// declared sensitivities.
func checkMoves(t *testing.T, sql string, plan *privacy.Plan, a, b map[string]map[string]float64) {
	t.Helper()
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	for col, s := range plan.Sensitivities() {
		var l1, l2, worst float64
		for k := range keys {
			d := 0.0
			if strings.HasPrefix(col, "__hv") {
				for name, v := range a[k] {
					if strings.HasPrefix(name, col+":") {
						d += math.Abs(v - b[k][name])
					}
				}
				for name, v := range b[k] {
					if _, ok := a[k][name]; !ok && strings.HasPrefix(name, col+":") {
						d += math.Abs(v)
					}
				}
			} else {
				d = math.Abs(a[k][col] - b[k][col])
			}
			l1, l2, worst = l1+d, l2+d*d, math.Max(worst, d)
		}
		const tol = 1e-6
		if worst > s.Linf*(1+tol)+tol || l1 > float64(s.L0)*s.Linf*(1+tol)+tol || math.Sqrt(l2) > math.Sqrt(float64(s.L0))*s.Linf*(1+tol)+tol {
			t.Errorf("%s\n  column %s moves by %g in one group, %g in L1, %g in L2; the plan declares L0 %d, Linf %g", sql, col, worst, l1, math.Sqrt(l2), s.L0, s.Linf)
		}
	}
}
