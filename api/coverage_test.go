package api_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/hospital/gateway/api/apitest"
)

// TestIntervalsHoldTheTruth releases the workload of shapes researchers
// ask over and over, on the demo hospital with its long tail of heavy
// patients (1 to 200 encounters each, stays and bills beyond the clamping
// bounds), and checks that the per-cell intervals hold DuckDB's exact
// answer over the same data in at least 93% of cells: 95% less twice the
// standard error of the share over this many cells. Some queries ask for
// a small contribution bound, so that the bias estimates carry the
// intervals, and the rest have their bound chosen.
func TestIntervalsHoldTheTruth(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 20000, Epsilon: 100, Delta: 1e-4})
	ctx := context.Background()
	shapes := []struct {
		sql   string
		bound int
	}{
		{"SELECT department, count(*) AS v FROM encounters GROUP BY department", 0},
		{"SELECT department, count(*) AS v FROM encounters GROUP BY department", 3},
		{"SELECT p.province, sum(e.cost_yuan) AS v FROM encounters e JOIN patients p ON e.patient_id = p.patient_id GROUP BY p.province", 0},
		{"SELECT p.sex, sum(e.cost_yuan) AS v FROM encounters e JOIN patients p ON e.patient_id = p.patient_id GROUP BY p.sex", 4},
		{"SELECT department, count(DISTINCT patient_id) AS v FROM encounters GROUP BY department", 0},
		{"SELECT province, avg(age) AS v FROM patients GROUP BY province", 0},
		{"SELECT department, avg(length_of_stay_days) AS v FROM encounters GROUP BY department", 0},
		{"SELECT department, avg(length_of_stay_days) AS v FROM encounters GROUP BY department", 2},
		{"SELECT p.sex, median(e.cost_yuan) AS v FROM encounters e JOIN patients p ON e.patient_id = p.patient_id GROUP BY p.sex", 0},
		{"SELECT department, count(*) AS v FROM encounters WHERE admit_date >= DATE '2023-01-01' GROUP BY department", 0},
		{"SELECT department, sum(cost_yuan) AS v FROM encounters WHERE length_of_stay_days > 3 GROUP BY department", 0},
		{"SELECT department, median(cost_yuan) AS v FROM encounters WHERE admit_date >= DATE '2023-01-01' GROUP BY department", 0},
		{"SELECT department, quantile_cont(length_of_stay_days, 0.9) AS v FROM encounters GROUP BY department", 0},
	}
	const rounds = 8
	held, cells := 0, 0
	missed := map[string]int{}
	for si, s := range shapes {
		exact, err := env.Engine.Query(ctx, strings.NewReplacer(" encounters", " demo_hospital.encounters", " patients", " demo_hospital.patients").Replace(s.sql), 1000)
		if err != nil {
			t.Fatal(err)
		}
		truth := map[string]float64{}
		for _, r := range exact.Rows {
			truth[fmt.Sprint(r[0])] = number(r[1])
		}
		for i := range rounds {
			// A fresh epsilon each round, so that no answer is a stored one.
			body := map[string]any{"sql": s.sql, "epsilon": 0.3 + float64(si*rounds+i)*1e-6}
			if s.bound > 0 {
				body["contribution_bound"] = s.bound
			}
			var a struct {
				Rows      [][]any `json:"rows"`
				Intervals [][]any `json:"intervals"`
			}
			if status, err := env.Do("POST", "/v1/queries", "researcher_internal", body, &a); err != nil || status != 200 {
				t.Fatalf("%s: %d %v", s.sql, status, err)
			}
			for j, r := range a.Rows {
				want, ok := truth[fmt.Sprint(r[0])]
				if !ok {
					continue
				}
				cells++
				iv, _ := a.Intervals[j][1].([]any)
				if len(iv) == 2 && number(iv[0]) <= want && want <= number(iv[1]) {
					held++
				} else {
					missed[fmt.Sprintf("%s (bound %d)", s.sql, s.bound)]++
				}
			}
		}
	}
	share := float64(held) / float64(cells)
	t.Logf("intervals held the exact answer in %d of %d cells (%.1f%%); misses by shape: %v", held, cells, 100*share, missed)
	if cells < 500 {
		t.Fatalf("only %d cells released", cells)
	}
	if share < 0.93 {
		t.Errorf("intervals held the exact answer in %.1f%% of cells, want at least 93%%", 100*share)
	}
}

func number(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case int64:
		return float64(x)
	}
	return math.NaN()
}
