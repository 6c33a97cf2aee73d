package privacy_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/hospital/gateway/engine"
)

// Review probe: ranks are capped at engine.MaxRank, so a patient with more
// rows shares rank 65535 among the rest; the filtered rank shape orders a
// heavy patient's filtered rows by __rk alone, so which tied rows it keeps
// is DuckDB's choice.
func TestReviewRankTies(t *testing.T) {
	ctx := context.Background()
	e, err := engine.Open(ctx, engine.Config{MemoryLimit: "1GB", Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for _, s := range []string{
		"CREATE SCHEMA s",
		"CREATE TABLE s.visits AS SELECT 1::BIGINT AS patient_id, i AS cost, i % 70 = 0 AS flag FROM range(70000) t(i) UNION ALL SELECT p, i, true FROM range(2, 20000) a(p), range(5) b(i)",
	} {
		if _, err := e.Query(ctx, s, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.RankRows(ctx, "s", "visits", "patient_id"); err != nil {
		t.Fatal(err)
	}
	r, _ := e.Query(ctx, "SELECT count(*) FILTER (WHERE flag AND __rank < 65535), count(*) FILTER (WHERE flag AND __rank = 65535) FROM s.visits WHERE patient_id = 1", 1)
	t.Logf("patient 1: flagged rows ranked below the cap, at the cap: %v", r.Rows)
	m := 950
	q := func(extra string) string {
		return "WITH __base AS MATERIALIZED (SELECT patient_id AS __pu, cost AS __a0, __rank AS __rk, __rows AS __nr FROM s.visits WHERE flag" + extra + ") " +
			"SELECT sum(__a0), count(*) FROM (SELECT __pu, __a0, row_number() OVER (PARTITION BY __pu ORDER BY __rk) AS __rn FROM __base WHERE __nr > 950) WHERE __rn <= 950 AND __pu = 1"
	}
	_ = m
	seen := map[string]bool{}
	for i := 0; i < 6; i++ {
		for _, extra := range []string{"", " AND patient_id <> 2", " AND patient_id > 1000 OR patient_id = 1 AND flag"} {
			r, err := e.Query(ctx, q(extra), 1)
			if err != nil {
				t.Fatal(err)
			}
			seen[fmtRow(r.Rows[0])] = true
			t.Logf("run %d neighbour %q: %s", i, extra, fmtRow(r.Rows[0]))
		}
	}
	t.Logf("patient 1's kept (sum, count) over runs and neighbours: %v", seen)
	if len(seen) > 1 {
		t.Errorf("patient 1 keeps different rows from run to run or neighbour to neighbour: %d different sums", len(seen))
	}
}

func fmtRow(r []any) string {
	s := ""
	for _, v := range r {
		s += " " + func() string { return fmtAny(v) }()
	}
	return s
}

func fmtAny(v any) string { return fmtSprint(v) }

var fmtSprint = func(v any) string { return fmt.Sprint(v) }
