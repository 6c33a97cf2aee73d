package sandbox_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/sandbox"
)

// FuzzAnalyze feeds arbitrary SQL to the analyser. It must never panic,
// every refusal must carry a caller-facing kind, no accepted query may
// select an identifier column in its base query, and a flat form must put
// back together into the base exactly.
func FuzzAnalyze(f *testing.F) {
	for _, s := range []string{
		"SELECT sex, count(*) FROM patients GROUP BY sex",
		"SELECT p.sex, avg(e.cost_yuan) FROM encounters e JOIN patients p ON e.patient_id = p.patient_id GROUP BY 1",
		"SELECT median(age), quantile_cont(age, 0.9) FROM patients WHERE province LIKE 'G%'",
		"SELECT count(DISTINCT patient_id) FROM encounters JOIN patients USING (patient_id)",
		"SELECT name FROM patients",
		"WITH RECURSIVE r AS (SELECT 1) SELECT * FROM r",
		"SELECT * FROM read_csv('/etc/passwd')",
		"SELECT count(*) FROM patients; DROP TABLE patients",
		"SELECT sex, count(*) FROM patients WHERE province <> ' AS __a0 FROM ' GROUP BY sex",
		"SELECT count(*) FROM patients WHERE province = ' AS __pu, ' OR province = ' FROM '",
	} {
		f.Add(s)
	}
	e := openEngine(f)
	scope := testScope()
	f.Fuzz(func(t *testing.T, sql string) {
		q, err := sandbox.Analyze(context.Background(), e, sql, scope)
		if err != nil {
			if k := fault.KindOf(err); k == fault.Internal && !strings.Contains(err.Error(), "parse query") {
				t.Fatalf("internal error for %q: %v", sql, err)
			}
			return
		}
		lower := strings.ToLower(q.Base)
		for _, id := range []string{"national_id", "encounter_id", `"name"`, ".name", " name "} {
			if strings.Contains(lower, id) {
				t.Fatalf("accepted %q selects identifier %s: %s", sql, id, q.Base)
			}
		}
		if q.Flat != nil {
			if back := unflatten(q); back != q.Base {
				t.Fatalf("the flat form of %q puts back together as\n%s\nnot\n%s", sql, back, q.Base)
			}
		}
	})
}

// unflatten writes q's flat form back as the base it was taken from: the
// base's columns in their order (patient, groups, arguments), then FROM.
func unflatten(q *sandbox.Query) string {
	names := []string{"__pu"}
	for i := range q.Groups {
		names = append(names, fmt.Sprintf("__g%d", i))
	}
	for i := range q.Aggs {
		names = append(names, fmt.Sprintf("__a%d", i))
	}
	var cols []string
	for _, n := range names {
		cols = append(cols, q.Flat.Exprs[n]+" AS "+n)
	}
	return "SELECT " + strings.Join(cols, ", ") + " " + q.Flat.From
}
