package sandbox_test

import (
	"context"
	"strings"
	"testing"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/sandbox"
)

func f(v float64) *float64 { return &v }

// testScope is a small hospital: a per-patient table and an encounters table.
func testScope() sandbox.Scope {
	pol := policy.Policy{
		Tables: []policy.Table{
			{Name: "patients", OneRowPerUnit: true, Columns: []policy.Column{
				{Name: "patient_id", Role: policy.Unit},
				{Name: "name", Role: policy.Identifier},
				{Name: "national_id", Role: policy.Identifier},
				{Name: "sex", Role: policy.QuasiIdentifier, Public: []string{"F", "M"}},
				{Name: "age", Role: policy.QuasiIdentifier, Min: f(0), Max: f(110)},
				{Name: "province", Role: policy.QuasiIdentifier},
				{Name: "hiv_positive", Role: policy.SpecialGroup},
			}},
			{Name: "encounters", Columns: []policy.Column{
				{Name: "encounter_id", Role: policy.Identifier},
				{Name: "patient_id", Role: policy.Unit},
				{Name: "department", Role: policy.Attribute},
				{Name: "diagnosis_icd10", Role: policy.Sensitive},
				{Name: "cost_yuan", Role: policy.Attribute, Min: f(0), Max: f(1e6)},
				{Name: "admit_date", Role: policy.Attribute},
			}},
		},
		Contribution: policy.Contribution{MaxGroups: 4, MaxRows: 10},
		K:            10, SpecialK: 20, SpecialShare: 0.5,
	}
	var s sandbox.Scope
	for _, t := range pol.Tables {
		s.Sources = append(s.Sources, sandbox.Source{Dataset: "demo_hospital", Grade: policy.Core, Table: t, Policy: pol})
	}
	return s
}

func openEngine(t testing.TB) *engine.Engine {
	t.Helper()
	e, err := engine.Open(context.Background(), engine.Config{MemoryLimit: "512MB", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func TestAnalyzeRefuses(t *testing.T) {
	e := openEngine(t)
	cases := []struct {
		name, sql, want string
	}{
		{"file read", "SELECT count(*) FROM read_csv('/etc/passwd')", "table functions"},
		{"file read in where", "SELECT count(*) FROM patients WHERE sex IN (SELECT * FROM read_text('/etc/passwd'))", "subqueries"},
		{"copy", "COPY patients TO '/tmp/x.csv'", "only SELECT"},
		{"attach", "ATTACH '/tmp/x.db' AS x", "only SELECT"},
		{"install", "INSTALL httpfs", "only SELECT"},
		{"load", "LOAD httpfs", "only SELECT"},
		{"set", "SET enable_external_access = true", "only SELECT"},
		{"pragma", "PRAGMA database_list", "only SELECT"},
		{"drop", "DROP TABLE patients", "only SELECT"},
		{"insert", "INSERT INTO patients VALUES (1)", "only SELECT"},
		{"multi statement", "SELECT count(*) FROM patients; SELECT count(*) FROM encounters", "exactly one statement"},
		{"raw rows", "SELECT sex, age FROM patients", "GROUP BY"},
		{"star", "SELECT * FROM patients", "not allowed"},
		{"identifier in select", "SELECT name, count(*) FROM patients GROUP BY name", "identifier"},
		{"identifier in where", "SELECT count(*) FROM patients WHERE national_id = '110101199001011234'", "identifier"},
		{"identifier in function", "SELECT count(*) FROM patients WHERE length(name) > 2", "identifier"},
		{"unit in group by", "SELECT patient_id, count(*) FROM encounters GROUP BY patient_id", "privacy unit"},
		{"unit in where", "SELECT count(*) FROM patients WHERE patient_id = 42", "privacy unit"},
		{"identifier join key", "SELECT count(*) FROM patients p JOIN encounters e ON p.patient_id = e.encounter_id", "JOIN condition"},
		{"list", "SELECT list(age) FROM patients", "raw values"},
		{"string_agg", "SELECT string_agg(diagnosis_icd10, ',') FROM encounters", "raw values"},
		{"first", "SELECT sex, first(age) FROM patients GROUP BY sex", "raw values"},
		{"arg_max", "SELECT arg_max(province, age) FROM patients", "raw values"},
		{"histogram", "SELECT histogram(age) FROM patients", "raw values"},
		{"min", "SELECT min(age) FROM patients", "raw values"},
		{"count distinct non-unit", "SELECT count(DISTINCT diagnosis_icd10) FROM encounters", "privacy unit"},
		{"cross join bomb", "SELECT count(*) FROM encounters a, encounters b, encounters c", "cross joins"},
		{"explicit cross join", "SELECT count(*) FROM patients CROSS JOIN encounters", "cross joins"},
		{"join without unit", "SELECT count(*) FROM patients p JOIN encounters e ON p.sex = e.department", "privacy unit"},
		{"recursive cte", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r", "recursive"},
		{"cte", "WITH x AS (SELECT * FROM patients) SELECT count(*) FROM x", "WITH"},
		{"union", "SELECT count(*) FROM patients UNION ALL SELECT count(*) FROM encounters", "UNION"},
		{"window", "SELECT sum(age) OVER () FROM patients", "window"},
		{"unknown table", "SELECT count(*) FROM duckdb_settings", "not in the scope"},
		{"catalog function", "SELECT count(*) FROM duckdb_tables()", "table functions"},
		{"setting function", "SELECT count(*) FROM patients WHERE current_setting('threads') = '2'", "not allowed"},
		{"random", "SELECT count(*) FROM patients WHERE random() < 0.5", "not allowed"},
		{"unbounded sum", "SELECT sum(length(province)) FROM patients", "bare numeric column"},
		{"undeclared bounds", "SELECT avg(province) FROM patients", "no declared bounds"},
		{"having", "SELECT sex, count(*) FROM patients GROUP BY sex HAVING count(*) > 5", "HAVING"},
		{"distinct select", "SELECT DISTINCT sex FROM patients", "DISTINCT"},
		{"subquery in from", "SELECT count(*) FROM (SELECT * FROM patients)", "subqueries"},
		{"grouping sets", "SELECT sex, count(*) FROM patients GROUP BY ROLLUP (sex)", "ROLLUP"},
		{"syntax error", "SELEC count(*) FROM patients", "does not parse"},
		{"expression over aggregates", "SELECT sum(age) / count(*) FROM patients", "GROUP BY key"},
		{"sample", "SELECT count(*) FROM patients USING SAMPLE 10", "SAMPLE"},
		{"order by raw", "SELECT sex, count(*) FROM patients GROUP BY sex ORDER BY age", "output columns"},
		{"positional join", "SELECT count(*) FROM patients POSITIONAL JOIN encounters", "POSITIONAL"},
		{"filter clause", "SELECT count(*) FILTER (WHERE age > 3) FROM patients", "FILTER"},
		{"oversized", "SELECT count(*) FROM patients WHERE " + strings.Repeat("age > 1 AND ", 3000) + "TRUE", "limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sandbox.Analyze(context.Background(), e, tc.sql, testScope())
			if err == nil {
				t.Fatalf("accepted %q", tc.sql)
			}
			if k := fault.KindOf(err); k != fault.QueryRejected {
				t.Fatalf("kind %v, want query_rejected: %v", k, err)
			}
			if !strings.Contains(fault.Message(err), tc.want) {
				t.Fatalf("message %q does not mention %q", fault.Message(err), tc.want)
			}
		})
	}
}

func TestAnalyzeAccepts(t *testing.T) {
	e := openEngine(t)
	cases := []struct {
		name, sql   string
		groups      int
		aggs        []sandbox.AggKind
		perUnitRows bool
		special     bool
		public      bool
	}{
		{"count by sex", "SELECT sex, count(*) AS n FROM patients GROUP BY sex", 1, []sandbox.AggKind{sandbox.Count}, true, false, true},
		{"group by position", "SELECT sex, count(*) FROM patients GROUP BY 1", 1, []sandbox.AggKind{sandbox.Count}, true, false, true},
		{"group by all", "SELECT sex, avg(age) FROM patients GROUP BY ALL", 1, []sandbox.AggKind{sandbox.Avg}, true, false, true},
		{"join on unit", "SELECT p.sex, sum(e.cost_yuan) AS cost, avg(e.cost_yuan) FROM encounters e JOIN patients p ON e.patient_id = p.patient_id WHERE e.admit_date >= DATE '2024-01-01' GROUP BY p.sex",
			1, []sandbox.AggKind{sandbox.Sum, sandbox.Avg}, false, false, true},
		{"join using", "SELECT count(DISTINCT patient_id) FROM encounters JOIN patients USING (patient_id)", 0, []sandbox.AggKind{sandbox.CountUnits}, false, false, false},
		{"quantiles", "SELECT median(age), quantile_cont(age, 0.9) AS p90, stddev(age) FROM patients", 0, []sandbox.AggKind{sandbox.Quantile, sandbox.Quantile, sandbox.StddevSamp}, true, false, false},
		{"expression key", "SELECT substr(diagnosis_icd10, 1, 1) AS chapter, count(*) FROM encounters GROUP BY chapter ORDER BY chapter LIMIT 5", 1, []sandbox.AggKind{sandbox.Count}, false, false, false},
		{"special group", "SELECT sex, count(*) FROM patients WHERE hiv_positive GROUP BY sex", 1, []sandbox.AggKind{sandbox.Count}, true, true, true},
		{"case and cast", "SELECT CASE WHEN age < 18 THEN 'child' ELSE 'adult' END AS band, count(*) FROM patients WHERE CAST(age AS DOUBLE) BETWEEN 1 AND 100 AND province LIKE 'G%' GROUP BY band", 1, []sandbox.AggKind{sandbox.Count}, true, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q, err := sandbox.Analyze(context.Background(), e, tc.sql, testScope())
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if len(q.Groups) != tc.groups {
				t.Errorf("groups = %d, want %d", len(q.Groups), tc.groups)
			}
			var kinds []sandbox.AggKind
			for _, a := range q.Aggs {
				kinds = append(kinds, a.Kind)
			}
			if strings.Join(toStrings(kinds), ",") != strings.Join(toStrings(tc.aggs), ",") {
				t.Errorf("aggregates = %v, want %v", kinds, tc.aggs)
			}
			if q.PerUnitRows != tc.perUnitRows {
				t.Errorf("PerUnitRows = %v, want %v", q.PerUnitRows, tc.perUnitRows)
			}
			if q.Special != tc.special {
				t.Errorf("Special = %v, want %v", q.Special, tc.special)
			}
			if tc.groups > 0 && (q.Groups[0].Public != nil) != tc.public {
				t.Errorf("public = %v, want %v", q.Groups[0].Public != nil, tc.public)
			}
			if q.Grade != policy.Core {
				t.Errorf("grade = %q", q.Grade)
			}
			if !strings.Contains(q.Base, "__pu") || !strings.Contains(q.Base, "demo_hospital") {
				t.Errorf("base query does not select the unit from the dataset: %s", q.Base)
			}
		})
	}
}

func TestOutOfScopeColumn(t *testing.T) {
	e := openEngine(t)
	scope := testScope()
	for i := range scope.Sources {
		scope.Sources[i].Columns = map[string]bool{"sex": true, "age": true}
	}
	if _, err := sandbox.Analyze(context.Background(), e, "SELECT sex, avg(age) FROM patients GROUP BY sex", scope); err != nil {
		t.Fatalf("in-scope query refused: %v", err)
	}
	_, err := sandbox.Analyze(context.Background(), e, "SELECT province, count(*) FROM patients GROUP BY province", scope)
	if fault.KindOf(err) != fault.QueryRejected || !strings.Contains(fault.Message(err), "outside the columns of your grant") {
		t.Fatalf("out-of-scope column: %v", err)
	}
}

func toStrings(ks []sandbox.AggKind) []string {
	var out []string
	for _, k := range ks {
		out = append(out, string(k))
	}
	return out
}
