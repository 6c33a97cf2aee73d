package sandbox_test

import (
	"context"
	"strings"
	"testing"

	"github.com/hospital/gateway/demo"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/sandbox"
)

// demoScope is the demo's tables, their column types as the engine
// reports them for the generated data.
func demoScope() sandbox.Scope {
	pol := demo.Policy()
	var s sandbox.Scope
	for _, t := range pol.Tables {
		types := map[string]string{}
		for _, c := range t.Columns {
			types[strings.ToLower(c.Name)] = c.Type
		}
		s.Sources = append(s.Sources, sandbox.Source{Dataset: "demo_hospital", Grade: policy.Core, Table: t, Policy: pol, Types: types})
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

// TestGuardedFilterNeverFails runs filters over a table where one row
// holds values at the edge of their types: every filter answers, whether
// its conjuncts are guarded by TRY or judged unable to fail from the
// engine's column types. An error would tell whether such a row exists.
func TestGuardedFilterNeverFails(t *testing.T) {
	e := openEngine(t)
	ctx := context.Background()
	for _, s := range []string{
		"CREATE SCHEMA s",
		`CREATE TABLE s.lab AS SELECT i::BIGINT AS patient_id, CASE WHEN i % 3 = 0 THEN 'x' ELSE (i % 5)::VARCHAR END AS code,
			CASE WHEN i = 7 THEN 1234567890123456789012::DECIMAL(38,0) ELSE i::DECIMAL(38,0) END AS specimen,
			CASE WHEN i = 7 THEN DATE '300000-01-01' ELSE DATE '2023-01-01' + i::INTEGER END AS taken,
			CASE WHEN i = 7 THEN 170141183460469231731687303715884105727::HUGEINT ELSE i::HUGEINT END AS h,
			i * 1.5 AS cost FROM range(100) t(i)`,
	} {
		if _, err := e.Query(ctx, s, 10); err != nil {
			t.Fatal(err)
		}
	}
	types, err := e.ColumnTypes(ctx, "s", "lab")
	if err != nil || types["specimen"] != "DECIMAL(38,0)" {
		t.Fatalf("column types %v, %v", types, err)
	}
	tbl := policy.Table{Name: "lab", OneRowPerUnit: true, Columns: []policy.Column{
		{Name: "patient_id", Role: policy.Unit}, {Name: "code", Role: policy.Attribute}, {Name: "specimen", Role: policy.Attribute},
		{Name: "taken", Role: policy.Attribute}, {Name: "h", Role: policy.Attribute}, {Name: "cost", Role: policy.Attribute},
	}}
	pol := policy.Policy{Tables: []policy.Table{tbl}, Contribution: policy.Contribution{MaxGroups: 1, MaxRows: 1}, K: 2, SpecialK: 2, SpecialShare: 1}
	scope := sandbox.Scope{Sources: []sandbox.Source{{Dataset: "s", Grade: policy.General, Table: tbl, Policy: pol, Types: types}}}
	for _, where := range []string{
		"code = 2 AND taken >= DATE '2023-02-01'",
		"CAST(code AS INTEGER) > 1 OR cost > 5",
		"specimen < 0.00000000000000001",
		"specimen = 3",
		"taken IN (TIMESTAMP '2023-01-01 00:00:00')",
		"taken < TIMESTAMP '2023-01-01 00:00:00'",
		"h = 0.5",
		"h > 1e3",
		"cost > 1e300 AND specimen BETWEEN 0.5 AND 2.5",
	} {
		q, err := sandbox.Analyze(ctx, e, "SELECT count(*) FROM lab WHERE "+where, scope)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Query(ctx, "WITH __base AS ("+q.Base+") SELECT count(*) FROM __base", 10); err != nil {
			t.Errorf("%s: %v\n%s", where, err, q.Base)
		}
	}
}
