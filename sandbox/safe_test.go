package sandbox_test

import (
	"context"
	"strings"
	"testing"

	"github.com/hospital/gateway/demo"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/sandbox"
)

func demoScope() sandbox.Scope {
	pol := demo.Policy()
	var s sandbox.Scope
	for _, t := range pol.Tables {
		s.Sources = append(s.Sources, sandbox.Source{Dataset: "demo_hospital", Grade: policy.Core, Table: t, Policy: pol})
	}
	return s
}

// TestWhereGuardedPerConjunct checks which conjuncts of a WHERE clause keep
// their TRY: only those that could fail on some row, so that an error never
// depends on the data, while plain comparisons stay visible to DuckDB's
// filter pushdown.
func TestWhereGuardedPerConjunct(t *testing.T) {
	e := openEngine(t)
	cases := []struct {
		name  string
		where string
		tries int // conjuncts left under TRY
	}{
		{"date constant", "admit_date >= DATE '2023-01-01'", 0},
		{"number", "length_of_stay_days > 5", 0},
		{"decimal", "cost_yuan <= 1000.5", 0},
		{"string", "department = 'cardiology'", 0},
		{"in list", "department IN ('cardiology', 'oncology')", 0},
		{"between", "length_of_stay_days BETWEEN 1 AND 10", 0},
		{"is null", "cost_yuan IS NULL", 0},
		{"or and not", "NOT (length_of_stay_days > 5 OR department = 'oncology')", 0},
		{"two of each", "admit_date >= DATE '2023-01-01' AND length_of_stay_days / 0 > 1 AND department = 'oncology' AND log(cost_yuan) > 1", 2},
		{"string against number is cast per row", "department = 5", 1},
		{"date as bare string", "admit_date >= '2023-01-01'", 1},
		{"loose date text", "admit_date >= DATE '2023-1-1'", 1},
		{"arithmetic", "length_of_stay_days + 1 > 5", 1},
		{"cast of a column", "CAST(diagnosis_icd10 AS INTEGER) > 5", 1},
		{"or over a failing part", "length_of_stay_days > 5 OR CAST(department AS INTEGER) = 1", 1},
		{"wide decimal", "cost_yuan > 0.0000000000000000000000000001", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q, err := sandbox.Analyze(context.Background(), e, "SELECT count(*) FROM encounters WHERE "+tc.where, demoScope())
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Count(q.Base, "TRY("); got != tc.tries {
				t.Errorf("%d conjuncts under TRY, want %d:\n%s", got, tc.tries, q.Base)
			}
		})
	}
}

// TestGuardedFilterNeverFails runs filters that fail on some rows under
// TRY: the query answers, the failing rows are left out.
func TestGuardedFilterNeverFails(t *testing.T) {
	e := openEngine(t)
	ctx := context.Background()
	if _, err := e.Query(ctx, "CREATE SCHEMA demo_hospital", 10); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Query(ctx, "CREATE TABLE demo_hospital.encounters AS SELECT i AS encounter_id, i % 7 AS patient_id, DATE '2023-01-01' + i::INTEGER AS admit_date, CASE WHEN i % 3 = 0 THEN 'x' ELSE (i % 5)::VARCHAR END AS department, 'A00' AS diagnosis_icd10, i % 10 AS length_of_stay_days, i * 1.5 AS cost_yuan FROM range(100) t(i)", 10); err != nil {
		t.Fatal(err)
	}
	for _, where := range []string{"department = 2 AND admit_date >= DATE '2023-02-01'", "CAST(department AS INTEGER) > 1 OR length_of_stay_days > 5"} {
		q, err := sandbox.Analyze(ctx, e, "SELECT count(*) FROM encounters WHERE "+where, demoScope())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Query(ctx, "WITH __base AS ("+q.Base+") SELECT count(*) FROM __base", 10); err != nil {
			t.Errorf("%s: %v", where, err)
		}
	}
}
