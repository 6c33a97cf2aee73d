package ingest

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hospital/gateway/engine/atrest"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/policy"
)

func ptr(f float64) *float64 { return &f }

// sourceFile writes a source file name holding body in a new directory,
// and returns a table key to import it with, the directory and the
// file's path.
func sourceFile(t *testing.T, name, body string) (atrest.Key, string, string) {
	t.Helper()
	key, err := atrest.NewKey(atrest.SM4GCM)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return key, dir, path
}

// TestDeclaredFactsAreChecked: a file that breaks one_row_per_unit,
// max_distinct, a public list or a domain is refused with its counts, and leaves no table file behind.
func TestDeclaredFactsAreChecked(t *testing.T) {
	key, dir, csv := sourceFile(t, "people.csv", "patient_id,dx,los\n1,A,3\n2,B,400\n2,C,5\n3,D,1\n")
	cases := []struct {
		name  string
		table policy.Table
		want  string // in the refusal; "" when accepted
	}{
		{"one row per unit broken", policy.Table{Name: "people", OneRowPerUnit: true, Columns: []policy.Column{{Name: "patient_id", Role: policy.Unit}, {Name: "dx", Role: policy.Sensitive}}},
			"4 rows for 3 patients"},
		{"max_distinct broken", policy.Table{Name: "people", Columns: []policy.Column{{Name: "patient_id", Role: policy.Unit}, {Name: "dx", Role: policy.Sensitive, MaxDistinct: 3}}},
			"more than 3 distinct values"},
		{"value outside the public list", policy.Table{Name: "people", Columns: []policy.Column{{Name: "patient_id", Role: policy.Unit}, {Name: "dx", Role: policy.Sensitive, Public: []string{"A", "B", "C"}}}},
			`holds "D", which is not in its public list`},
		{"value outside the domain", policy.Table{Name: "people", Columns: []policy.Column{{Name: "patient_id", Role: policy.Unit}, {Name: "dx", Role: policy.Sensitive}, {Name: "los", Role: policy.Attribute, Min: ptr(0), Max: ptr(60), DomainMin: ptr(0), DomainMax: ptr(365)}}},
			"outside its declared domain [0, 365]"},
		{"values within the domain", policy.Table{Name: "people", Columns: []policy.Column{{Name: "patient_id", Role: policy.Unit}, {Name: "dx", Role: policy.Sensitive}, {Name: "los", Role: policy.Attribute, Min: ptr(0), Max: ptr(60), DomainMin: ptr(0), DomainMax: ptr(400)}}},
			""},
		{"declarations hold", policy.Table{Name: "people", Columns: []policy.Column{{Name: "patient_id", Role: policy.Unit}, {Name: "dx", Role: policy.Sensitive, MaxDistinct: 4}}},
			""},
	}
	for i, tc := range cases {
		if !slices.ContainsFunc(tc.table.Columns, func(c policy.Column) bool { return c.Name == "los" }) {
			cases[i].table.Columns = append(tc.table.Columns, policy.Column{Name: "los", Role: policy.Attribute})
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(dir, tc.name+".part")
			_, _, err := importTable(context.Background(), csv, dst, tc.table, key, io.Discard)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if fault.KindOf(err) != fault.Invalid || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want invalid_request naming %q", err, tc.want)
			}
			if _, err := os.Stat(dst); !os.IsNotExist(err) {
				t.Errorf("the refused file is still there: %v", err)
			}
		})
	}
}

// TestNaNIsInNoDomain: NaN compares false with both ends of a domain, so
// a check by "below or above" would let it through.
func TestNaNIsInNoDomain(t *testing.T) {
	key, dir, csv := sourceFile(t, "costs.csv", "patient_id,cost\n1,1.5\n2,NaN\n3,2.5\n")
	table := policy.Table{Name: "costs", Columns: []policy.Column{{Name: "patient_id", Role: policy.Unit},
		{Name: "cost", Role: policy.Attribute, Min: ptr(0), Max: ptr(10), DomainMin: ptr(0), DomainMax: ptr(100)}}}
	_, _, err := importTable(context.Background(), csv, filepath.Join(dir, "costs.part"), table, key, io.Discard)
	if fault.KindOf(err) != fault.Invalid || !strings.Contains(err.Error(), "outside its declared domain") {
		t.Fatalf("got %v, want the NaN refused as outside the domain", err)
	}
}
