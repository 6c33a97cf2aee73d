package privacy_test

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/sandbox"
)

// TestIntegerColumnsSumExactly: an INTEGER or BIGINT column with whole
// bounds is clamped and summed in its own type (no cast per row), and the
// plan's partial results are those of the DOUBLE path, values beyond the
// bounds and the domain, and NULLs, included. Bounds that are not whole
// keep the DOUBLE path.
func TestIntegerColumnsSumExactly(t *testing.T) {
	e := engineWith(t, engine.Config{MemoryLimit: "512MB", Threads: 1},
		"CREATE SCHEMA s",
		// Patient 0 has 40 stays, the others one to three; stays run
		// from -5 to 400 days, some unknown.
		`CREATE TABLE s.stays AS SELECT (CASE WHEN i < 40 THEN 0 ELSE i % 97 + 1 END)::BIGINT AS patient_id,
			(['A', 'B', 'C'])[i % 3 + 1] AS dept,
			(CASE WHEN i % 11 = 0 THEN NULL ELSE (i * 37) % 406 - 5 END)::INTEGER AS stay,
			((i * 7919) % 3000 - 1000)::BIGINT AS fee
		FROM range(300) t(i)`)
	types, err := e.ColumnTypes(context.Background(), "s", "stays")
	if err != nil {
		t.Fatal(err)
	}
	f := func(v float64) *float64 { return &v }
	table := func(feeLo, feeHi float64) policy.Table {
		return policy.Table{Name: "stays", Columns: []policy.Column{
			{Name: "patient_id", Role: policy.Unit},
			{Name: "dept", Role: policy.Attribute, MaxDistinct: 5},
			{Name: "stay", Role: policy.Attribute, Min: f(0), Max: f(60), DomainMin: f(-10), DomainMax: f(365)},
			{Name: "fee", Role: policy.Attribute, Min: f(feeLo), Max: f(feeHi)},
		}}
	}
	cases := []struct {
		name, sql    string
		feeLo, feeHi float64
		exact        bool // the plan sums in the column's type
	}{
		{"sum and mean of an INTEGER", "SELECT dept, sum(stay) AS s, avg(stay) AS a FROM stays GROUP BY dept", 0, 1000, true},
		{"mean of a BIGINT", "SELECT dept, count(*) AS n, avg(fee) AS a FROM stays GROUP BY dept", -100, 900, true},
		{"no groups", "SELECT sum(stay) AS s, sum(fee) AS f FROM stays", -100, 900, true},
		{"bounds that are not whole", "SELECT dept, avg(fee) AS a FROM stays GROUP BY dept", -100.5, 900, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pol := policy.Policy{Tables: []policy.Table{table(tc.feeLo, tc.feeHi)},
				Contribution: policy.Contribution{MaxGroups: 2, MaxRows: 3}, K: 2, SpecialK: 2, SpecialShare: 1}
			src := sandbox.Source{Dataset: "s", Grade: policy.General, Table: pol.Tables[0], Policy: pol}
			asDouble := planMax(t, e, tc.sql, sandbox.Scope{Sources: []sandbox.Source{src}}, privacy.Cost{Epsilon: 1})
			src.Types = types
			typed := planMax(t, e, tc.sql, sandbox.Scope{Sources: []sandbox.Source{src}}, privacy.Cost{Epsilon: 1})
			if got := strings.Contains(typed.SQL, "::INTEGER") || strings.Contains(typed.SQL, "::BIGINT THEN"); got != tc.exact {
				t.Fatalf("integer clamp in the plan: %v, want %v\n%s", got, tc.exact, typed.SQL)
			}
			if strings.Contains(asDouble.SQL, "::INTEGER THEN") {
				t.Fatalf("without the loaded types the plan must read DOUBLE:\n%s", asDouble.SQL)
			}
			want, wc := run(t, e, asDouble)
			got, gc := run(t, e, typed)
			if len(got.Rows) != len(want.Rows) || len(got.Rows) == 0 {
				t.Fatalf("%d rows, want %d (> 0)", len(got.Rows), len(want.Rows))
			}
			byKey := func(r []any, col map[string]int) string {
				if i, ok := col["__g0"]; ok {
					return r[i].(string)
				}
				return ""
			}
			rows := map[string][]any{}
			for _, r := range want.Rows {
				rows[byKey(r, wc)] = r
			}
			for _, r := range got.Rows {
				w := rows[byKey(r, gc)]
				if w == nil {
					t.Fatalf("group %q only in the exact plan", byKey(r, gc))
				}
				for name, i := range gc {
					g, x := toF(r[i]), toF(w[wc[name]])
					if math.Abs(g-x) > 1e-9*math.Max(1, math.Abs(x)) {
						t.Errorf("group %q column %s: %v, DOUBLE path %v", byKey(r, gc), name, r[i], w[wc[name]])
					}
				}
			}
		})
	}
}

// toF reads a numeric cell, and a group key as 0.
func toF(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case int64:
		return float64(x)
	case int32:
		return float64(x)
	}
	return 0
}
