package benchmarks

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/hospital/gateway/api/apitest"
)

// utilityQueries are the shapes a study asks, on the demo's synthetic
// hospital with its long tail of heavy patients.
var utilityQueries = []struct{ name, sql string }{
	{"count by department", "SELECT department, count(*) AS v FROM encounters GROUP BY department"},
	{"sum of cost by province", "SELECT p.province, sum(e.cost_yuan) AS v FROM encounters e JOIN patients p ON e.patient_id = p.patient_id GROUP BY p.province"},
	{"patients by department", "SELECT department, count(DISTINCT patient_id) AS v FROM encounters GROUP BY department"},
	{"count by sex", "SELECT sex, count(*) AS v FROM patients GROUP BY sex"},
	{"mean age by province", "SELECT province, avg(age) AS v FROM patients GROUP BY province"},
	{"mean stay by department", "SELECT department, avg(length_of_stay_days) AS v FROM encounters GROUP BY department"},
	{"median cost by sex", "SELECT p.sex, median(e.cost_yuan) AS v FROM encounters e JOIN patients p ON e.patient_id = p.patient_id GROUP BY p.sex"},
	{"filtered count by department", "SELECT department, count(*) AS v FROM encounters WHERE admit_date >= DATE '2023-01-01' GROUP BY department"},
	{"filtered median cost by department", "SELECT department, median(cost_yuan) AS v FROM encounters WHERE admit_date >= DATE '2023-01-01' GROUP BY department"},
	{"90th percentile of stay by department", "SELECT department, quantile_cont(length_of_stay_days, 0.9) AS v FROM encounters GROUP BY department"},
}

// BenchmarkUtility measures what researchers get: for each query shape and
// epsilon, the gateway's answers against the exact answers of DuckDB over
// the same data (computed here, where the harness may), over b.N fresh
// releases: the median relative error of released cells (of the value, and
// of the value plus its bias estimate), the share of
// cells whose interval holds the exact value, and the share of exact groups
// not released. It reports; it does not judge.
//
//	go test ./benchmarks -run x -bench Utility -benchtime 5x
func BenchmarkUtility(b *testing.B) {
	env := apitest.New(b, apitest.Options{Patients: 100000, Epsilon: 100})
	ctx := context.Background()
	for _, eps := range []float64{0.1, 0.5, 0.99} { // 0.99: fresh costs may not pass the core cap of 1
		// The last run of each shape's errors and coverage, pooled over
		// the workload at the end.
		pooled := map[string]*tally{}
		for _, q := range utilityQueries {
			b.Run(fmt.Sprintf("eps%.2f/%s", eps, q.name), func(b *testing.B) {
				exact, err := env.Engine.Query(ctx, raw(q.sql), 100000)
				if err != nil {
					b.Fatal(err)
				}
				truth := map[string]float64{}
				for _, r := range exact.Rows {
					truth[fmt.Sprint(r[0])] = toNumber(r[1])
				}
				var errs, corrected []float64
				held, cells, lost := 0, 0, 0
				for i := 0; i < b.N; i++ {
					var a struct {
						Rows      [][]any `json:"rows"`
						Intervals [][]any `json:"intervals"`
						Bias      [][]any `json:"bias"`
					}
					status, err := env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": q.sql, "epsilon": fresh(eps, i)}, &a)
					if err != nil || status != 200 {
						b.Fatalf("%s: %d %v", q.sql, status, err)
					}
					released := map[string]bool{}
					for j, r := range a.Rows {
						key := fmt.Sprint(r[0])
						released[key] = true
						want, ok := truth[key]
						if !ok {
							continue
						}
						got := toNumber(r[1])
						cells++
						if want != 0 {
							errs = append(errs, math.Abs(got-want)/math.Abs(want))
							fixed := got
							if j < len(a.Bias) {
								if d := toNumber(a.Bias[j][1]); !math.IsNaN(d) {
									fixed += d
								}
							}
							corrected = append(corrected, math.Abs(fixed-want)/math.Abs(want))
						}
						if iv, ok := a.Intervals[j][1].([]any); ok && toNumber(iv[0]) <= want && want <= toNumber(iv[1]) {
							held++
						}
					}
					for k := range truth {
						if !released[k] {
							lost++
						}
					}
				}
				pooled[q.name] = &tally{errs: slices.Clone(errs), held: held, cells: cells}
				slices.Sort(errs)
				slices.Sort(corrected)
				if len(errs) > 0 {
					b.ReportMetric(100*errs[len(errs)/2], "median-rel-err-%")
					b.ReportMetric(100*corrected[len(corrected)/2], "with-bias-err-%")
				}
				if cells > 0 {
					b.ReportMetric(100*float64(held)/float64(cells), "coverage-%")
				}
				b.ReportMetric(100*float64(lost)/float64(len(truth)*b.N), "groups-lost-%")
			})
		}
		b.Run(fmt.Sprintf("eps%.2f/all shapes", eps), func(b *testing.B) {
			var all []float64
			held, cells := 0, 0
			for _, t := range pooled {
				all = append(all, t.errs...)
				held, cells = held+t.held, cells+t.cells
			}
			slices.Sort(all)
			if len(all) > 0 && cells > 0 {
				b.ReportMetric(100*all[len(all)/2], "median-rel-err-%")
				b.ReportMetric(100*float64(held)/float64(cells), "coverage-%")
			}
		})
	}
}

// tally is one shape's released cells: relative errors and how many
// intervals held the exact value.
type tally struct {
	errs        []float64
	held, cells int
}

func toNumber(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case int64:
		return float64(x)
	case int32:
		return float64(x)
	case uint64:
		return float64(x)
	}
	return math.NaN()
}
