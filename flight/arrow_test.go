package flight

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/release"
)

// TestRecords encodes an answer as decoded from its stored JSON into the
// Arrow types of its columns.
func TestRecords(t *testing.T) {
	body, err := json.Marshal(release.Answer{QueryID: "qry_1", Answer: privacy.Answer{
		Columns: []engine.Column{{Name: "d", Type: "DATE"}, {Name: "flag", Type: "BOOLEAN"}, {Name: "n", Type: "BIGINT"},
			{Name: "x", Type: "DOUBLE"}, {Name: "s", Type: "VARCHAR"}, {Name: "q", Type: "DECIMAL(18,3)"}},
		Rows: [][]any{
			{"2021-03-04T00:00:00Z", true, float64(12), 1.5, "F", 2.25},
			{"2021-03-05", false, nil, nil, nil, nil},
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	res := release.NewResult(body, catalog.Balance{}, false, nil)
	schema, err := schemaOf(res)
	if err != nil {
		t.Fatal(err)
	}
	want := []arrow.Type{arrow.DATE32, arrow.BOOL, arrow.INT64, arrow.FLOAT64, arrow.STRING, arrow.STRING}
	for i, f := range schema.Fields() {
		if f.Type.ID() != want[i] {
			t.Errorf("column %s is %s; want %s", f.Name, f.Type, want[i])
		}
	}
	if md := schema.Metadata(); md.FindKey(MetaPrivacy) < 0 || md.FindKey(MetaBudget) < 0 || md.FindKey(MetaReceipt) >= 0 {
		t.Errorf("metadata %v; want privacy and budget, and no receipt when unsigned", md)
	}
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	a, err := res.Answer()
	if err != nil {
		t.Fatal(err)
	}
	recs, err := records(mem, schema, a.Rows)
	if err != nil {
		t.Fatal(err)
	}
	defer recs[0].Release()
	if len(recs) != 1 || recs[0].NumRows() != 2 {
		t.Fatalf("got %d batches; want one of two rows", len(recs))
	}
	got := []string{}
	for _, c := range recs[0].Columns() {
		got = append(got, c.ValueStr(0)+"|"+c.ValueStr(1))
	}
	if s := strings.Join(got, " "); s != "2021-03-04|2021-03-05 true|false 12|(null) 1.5|(null) F|(null) 2.25|(null)" {
		t.Errorf("got %s", s)
	}

	if _, err := records(mem, schema, [][]any{{"x", true, 1.5, 1.0, "F", "y"}}); err == nil {
		t.Error("a date that is not one and a fractional BIGINT were encoded")
	}
	empty, err := records(mem, schema, nil)
	if err != nil || len(empty) != 1 || empty[0].NumRows() != 0 {
		t.Fatalf("an empty answer is %v, %v; want one empty batch", empty, err)
	}
	empty[0].Release()
}
