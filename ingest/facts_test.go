package ingest

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hospital/gateway/engine/atrest"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/policy"
)

// TestDeclaredFactsAreChecked: a file that breaks one_row_per_unit or
// max_distinct is refused with its counts, and leaves no table file behind.
func TestDeclaredFactsAreChecked(t *testing.T) {
	key, err := atrest.NewKey(atrest.SM4GCM)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	csv := filepath.Join(dir, "people.csv")
	if err := os.WriteFile(csv, []byte("patient_id,dx\n1,A\n2,B\n2,C\n3,D\n"), 0o600); err != nil {
		t.Fatal(err)
	}
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
		{"declarations hold", policy.Table{Name: "people", Columns: []policy.Column{{Name: "patient_id", Role: policy.Unit}, {Name: "dx", Role: policy.Sensitive, MaxDistinct: 4}}},
			""},
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
