package sandbox_test

import (
	"context"
	"strings"
	"testing"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/sandbox"
)

// rankedEngine holds testScope's tables with a few rows, encounters ranked
// by the engine, so the hidden rank column exists in DuckDB.
func rankedEngine(t *testing.T) *engine.Engine {
	t.Helper()
	e := openEngine(t)
	ctx := context.Background()
	for _, s := range []string{
		"CREATE SCHEMA demo_hospital",
		"CREATE TABLE demo_hospital.patients (patient_id BIGINT, name VARCHAR, national_id VARCHAR, sex VARCHAR, age INTEGER, province VARCHAR, hiv_positive BOOLEAN)",
		"INSERT INTO demo_hospital.patients VALUES (1, 'a', 'x', 'F', 30, 'Beijing', false), (2, 'b', 'y', 'M', 40, 'Hebei', false)",
		"CREATE TABLE demo_hospital.encounters (encounter_id BIGINT, patient_id BIGINT, department VARCHAR, diagnosis_icd10 VARCHAR, cost_yuan DOUBLE, admit_date DATE)",
		"INSERT INTO demo_hospital.encounters VALUES (1, 1, 'A', 'I10', 5, DATE '2024-01-01'), (2, 1, 'B', 'I10', 7, DATE '2024-02-01'), (3, 2, 'A', 'E11', 9, DATE '2024-03-01')",
	} {
		if _, err := e.Query(ctx, s, 10); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if err := e.RankRows(ctx, "demo_hospital", "encounters", "patient_id"); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestRankColumnIsHidden checks that researchers cannot name the hidden
// rank column anywhere, although it exists in the engine.
func TestRankColumnIsHidden(t *testing.T) {
	e := rankedEngine(t)
	if _, err := e.Query(context.Background(), "SELECT max(__rank) FROM demo_hospital.encounters", 1); err != nil {
		t.Fatalf("the rank column is not there to hide: %v", err)
	}
	for _, sql := range []string{
		"SELECT count(*) FROM encounters WHERE __rank <= 1",
		"SELECT count(*) FROM encounters e WHERE e.__rank = 1",
		`SELECT count(*) FROM encounters WHERE "__RANK" = 1`,
		"SELECT __rank, count(*) FROM encounters GROUP BY __rank",
		"SELECT sum(__rank) FROM encounters",
		"SELECT count(__rank) FROM encounters",
		"SELECT count(*) FROM encounters ORDER BY __rank",
		"SELECT count(*) FROM encounters e JOIN patients p ON e.patient_id = p.patient_id AND e.__rank = 1",
		"SELECT count(*) FROM encounters a JOIN encounters b USING (patient_id, __rank)",
		"SELECT count(*) FROM encounters JOIN patients USING (patient_id, __rank)",
		"SELECT count(*) FROM encounters WHERE demo_hospital.encounters.__rank = 1",
	} {
		t.Run(sql, func(t *testing.T) {
			_, err := sandbox.Analyze(context.Background(), e, sql, testScope())
			if fault.KindOf(err) != fault.QueryRejected {
				t.Fatalf("not refused: %v", err)
			}
		})
	}
}

// TestRowRank checks when the base query carries the rank: only with one
// table of several rows per patient and inner joins, and whether a filter
// reads that table.
func TestRowRank(t *testing.T) {
	e := rankedEngine(t)
	cases := []struct {
		name, sql      string
		want, filtered bool
	}{
		{"one table", "SELECT department, count(*) FROM encounters GROUP BY department", true, false},
		{"join, per-patient filter", "SELECT p.sex, sum(e.cost_yuan) FROM encounters e JOIN patients p ON e.patient_id = p.patient_id WHERE p.age > 30 GROUP BY p.sex", true, false},
		{"join using", "SELECT sex, count(*) FROM encounters JOIN patients USING (patient_id) GROUP BY sex", true, false},
		{"filter on the table", "SELECT department, count(*) FROM encounters WHERE cost_yuan > 5 GROUP BY department", true, true},
		{"filter in the join", "SELECT p.sex, count(*) FROM encounters e JOIN patients p ON e.patient_id = p.patient_id AND e.cost_yuan > 5 GROUP BY p.sex", true, true},
		{"filter mixing tables", "SELECT p.sex, count(*) FROM encounters e JOIN patients p ON e.patient_id = p.patient_id WHERE p.age > 30 OR e.department = 'A' GROUP BY p.sex", true, true},
		{"outer join", "SELECT p.sex, count(e.cost_yuan) FROM patients p LEFT JOIN encounters e ON e.patient_id = p.patient_id GROUP BY p.sex", false, false},
		{"one row per patient", "SELECT sex, count(*) FROM patients GROUP BY sex", false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q, err := sandbox.Analyze(context.Background(), e, tc.sql, testScope())
			if err != nil {
				t.Fatal(err)
			}
			// The analysis is pure: it names the table to rank, and the
			// caller switches to the rank once the engine has ranked it.
			if q.RowRank || (q.Rank != nil) != tc.want || q.Filtered != tc.filtered {
				t.Fatalf("analysis: RowRank %v, Rank %v, Filtered %v; want no rank used, Rank %v, Filtered %v", q.RowRank, q.Rank, q.Filtered, tc.want, tc.filtered)
			}
			q.UseRank()
			if q.RowRank != tc.want || strings.Contains(q.Base, "__rk") != tc.want {
				t.Fatalf("RowRank %v, want %v; base %s", q.RowRank, tc.want, q.Base)
			}
			if _, err := e.Query(context.Background(), q.Base, 100); err != nil {
				t.Fatalf("base query: %v\n%s", err, q.Base)
			}
		})
	}
}

// TestRankedJoinBalancesEstimates: a base bounded by rank states that each
// joined per-patient table's unit is not NULL, which drops no row of the
// inner join but keeps DuckDB from taking the ranked table for the smaller
// side; the answer over the base is the same.
func TestRankedJoinBalancesEstimates(t *testing.T) {
	e := rankedEngine(t)
	ctx := context.Background()
	for _, sql := range []string{
		"SELECT p.sex, count(*) FROM encounters e JOIN patients p ON e.patient_id = p.patient_id GROUP BY p.sex",
		"SELECT p.sex, count(*) FROM encounters e JOIN patients p ON e.patient_id = p.patient_id WHERE e.cost_yuan > 6 GROUP BY p.sex",
	} {
		q, err := sandbox.Analyze(ctx, e, sql, testScope())
		if err != nil {
			t.Fatal(err)
		}
		plain := q.Base
		q.UseRank()
		if !strings.Contains(q.Base, "(p.patient_id IS NOT NULL)") {
			t.Errorf("ranked base lacks the unit test of the joined table:\n%s", q.Base)
		}
		count := func(base string) any {
			res, err := e.Query(ctx, "WITH b AS ("+base+") SELECT count(*) FROM b", 1)
			if err != nil {
				t.Fatal(err)
			}
			return res.Rows[0][0]
		}
		if a, b := count(plain), count(q.Base); a != b {
			t.Errorf("%s: %v rows without the rank, %v with", sql, a, b)
		}
	}
}
