package engine_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/policy"
)

func open(t *testing.T) *engine.Engine {
	t.Helper()
	e, err := engine.Open(context.Background(), engine.Config{MemoryLimit: "1GB", Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// TestTimeoutInterrupts checks that a context deadline stops DuckDB mid-query.
func TestTimeoutInterrupts(t *testing.T) {
	e := open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := e.Query(ctx, "SELECT count(*) FROM range(100000000) a, range(100000000) b WHERE a.range + b.range = 7", 10)
	if fault.KindOf(err) != fault.Timeout {
		t.Fatalf("error %v, want query_timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("interrupt took %v", d)
	}
}

func TestMapsBecomeGoMaps(t *testing.T) {
	e := open(t)
	r, err := e.Query(context.Background(), "SELECT histogram(x::INTEGER) AS h FROM (VALUES (1), (1), (3)) t(x)", 10)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := r.Rows[0][0].(map[any]any)
	if !ok || len(m) != 2 || m[int32(1)] != uint64(2) {
		t.Fatalf("histogram %T %v", r.Rows[0][0], r.Rows[0][0])
	}
}

// loadUnits creates h.t with rows (unit, value): unit u has u rows.
func loadUnits(t *testing.T, e *engine.Engine, units int) {
	t.Helper()
	ctx := context.Background()
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "patient_id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "v", Type: arrow.PrimitiveTypes.Int64},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for u := 1; u <= units; u++ {
		for i := 0; i < u; i++ {
			b.Field(0).(*array.Int64Builder).Append(int64(u))
			b.Field(1).(*array.Int64Builder).Append(int64(i))
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	if err := e.CreateTable(ctx, "h", "t", schema); err != nil {
		t.Fatal(err)
	}
	l, err := e.NewLoader(ctx, "h", "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Append(rec); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRankRows checks that the hidden rank numbers each unit's rows 1..n,
// that a reload drops it and that appending to a ranked table works.
func TestRankRows(t *testing.T) {
	e := open(t)
	ctx := context.Background()
	loadUnits(t, e, 30)
	if err := e.RankRows(ctx, "h", "t", "patient_id"); err != nil {
		t.Fatal(err)
	}
	check := func(units int) {
		t.Helper()
		r, err := e.Query(ctx, `SELECT patient_id, count(*), min(__rank), max(__rank), count(DISTINCT __rank) FROM h.t GROUP BY patient_id`, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Rows) != units {
			t.Fatalf("%d units, want %d", len(r.Rows), units)
		}
		for _, row := range r.Rows {
			n := row[1].(int64)
			lo, hi, distinct := toInt(row[2]), toInt(row[3]), row[4].(int64)
			if lo != 1 || hi != n || distinct != n {
				t.Errorf("unit %v: %d rows ranked %d..%d (%d distinct), want 1..%d", row[0], n, lo, hi, distinct, n)
			}
		}
	}
	check(30)
	// Ranking again is free and changes nothing.
	if err := e.RankRows(ctx, "h", "t", "patient_id"); err != nil {
		t.Fatal(err)
	}
	check(30)
	// A reload drops the rank column; ranking again gives it back.
	loadUnits(t, e, 20)
	if _, err := e.Query(ctx, "SELECT __rank FROM h.t", 1000); err == nil {
		t.Error("the rank column survived a reload")
	}
	if err := e.RankRows(ctx, "h", "t", "patient_id"); err != nil {
		t.Fatal(err)
	}
	check(20)
	// Appending to a ranked table drops the rank until ranked again.
	l, err := e.NewLoader(ctx, "h", "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.RankRows(ctx, "h", "t", "patient_id"); err == nil {
		t.Error("ranked while rows were being appended")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.RankRows(ctx, "h", "t", "patient_id"); err != nil {
		t.Fatal(err)
	}
	check(20)
}

func TestRankColumnIsReserved(t *testing.T) {
	e := open(t)
	schema := arrow.NewSchema([]arrow.Field{{Name: "__RANK", Type: arrow.PrimitiveTypes.Int64}}, nil)
	if err := e.CreateTable(context.Background(), "h", "t", schema); err == nil {
		t.Fatal("a table with a column named __rank was created")
	}
}

func toInt(v any) int64 {
	switch x := v.(type) {
	case uint16:
		return int64(x)
	case int64:
		return x
	}
	return -1
}

// TestRankRowsConcurrently: callers that arrive while a table is being
// ranked wait for that one ranking, and queries keep running meanwhile.
func TestRankRowsConcurrently(t *testing.T) {
	e := open(t)
	ctx := context.Background()
	loadUnits(t, e, 200)
	errs := make(chan error, 16)
	for i := 0; i < 8; i++ {
		go func() { errs <- e.RankRows(ctx, "h", "t", "patient_id") }()
		go func() {
			_, err := e.Query(ctx, "SELECT count(*) FROM h.t", 1)
			errs <- err
		}()
	}
	for i := 0; i < 16; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	r, err := e.Query(ctx, "SELECT count(*) FILTER (WHERE __rank = 1), count(DISTINCT patient_id) FROM h.t", 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rows[0][0] != r.Rows[0][1] || r.Rows[0][0] != int64(200) {
		t.Fatalf("%v rows of rank 1 for %v units, want 200", r.Rows[0][0], r.Rows[0][1])
	}
}

// TestRankTablesInBackground: a loaded table's ranks are built in the
// background; until they exist, Ranked says so at once (without waiting)
// and the table answers queries; then Ranked reports them and they are
// there. Close stops a ranking in progress.
func TestRankTablesInBackground(t *testing.T) {
	e := open(t)
	ctx := context.Background()
	loadUnits(t, e, 30)
	if e.Ranked("h", "t", "patient_id") {
		t.Fatal("the table is ranked before anyone asked")
	}
	if _, err := e.Query(ctx, "SELECT count(*) FROM h.t", 1); err != nil {
		t.Fatalf("the table does not answer while it is ranked: %v", err)
	}
	p := policy.Policy{Tables: []policy.Table{{Name: "t", Columns: []policy.Column{{Name: "patient_id", Role: policy.Unit}}}}}
	e.RankTables("h", p)
	deadline := time.Now().Add(time.Minute)
	for !e.Ranked("h", "t", "patient_id") {
		if time.Now().After(deadline) {
			t.Fatal("the ranking never finished")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := e.Query(ctx, "SELECT max(__rank) FROM h.t", 1); err != nil {
		t.Fatalf("ranked, but no rank column: %v", err)
	}

	// A ranking cut off by Close ends with the engine.
	other, err := engine.Open(ctx, engine.Config{MemoryLimit: "256MB", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	loadUnits(t, other, 300)
	other.RankTables("h", p)
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRankCountsFollowTheLoad: the rows of each rank (unit u has u rows,
// so rank r has units-r+1 rows) come from the current load of the table,
// kept for later calls, also for fewer ranks, and counted anew after a
// reload.
func TestRankCountsFollowTheLoad(t *testing.T) {
	e := open(t)
	ctx := context.Background()
	want := func(units, upTo int) []int64 {
		out := make([]int64, upTo)
		for r := 1; r <= upTo; r++ {
			out[r-1] = int64(max(0, units-r+1))
		}
		return out
	}
	for _, units := range []int{30, 20} {
		loadUnits(t, e, units)
		if err := e.RankRows(ctx, "h", "t", "patient_id"); err != nil {
			t.Fatal(err)
		}
		for _, upTo := range []int{40, 40, 5} {
			got, err := e.RankCounts(ctx, "h", "t", int64(upTo))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want(units, upTo)) {
				t.Errorf("%d units, ranks up to %d: %v, want %v", units, upTo, got, want(units, upTo))
			}
		}
	}
}

// TestCodeColumns: RankTables builds, for a VARCHAR column with a public
// list, the hidden column of each value's position in the list (NULL for
// NULL and for values not in it), in the same rewrite as the ranks, on
// tables of one row per unit too; Codes reports the lists once built, and
// nothing once the table is loaded again, which drops the columns.
func TestCodeColumns(t *testing.T) {
	e := open(t)
	ctx := context.Background()
	if _, err := e.Query(ctx, `CREATE SCHEMA c`, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Query(ctx, `CREATE TABLE c.v AS SELECT i::BIGINT AS patient_id, (['a', 'b', 'zz', NULL])[i % 4 + 1] AS k, i AS n FROM range(8) t(i)`, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Query(ctx, `CREATE TABLE c.p AS SELECT i::BIGINT AS patient_id, (['x', 'y'])[i % 2 + 1] AS s FROM range(4) t(i)`, 1); err != nil {
		t.Fatal(err)
	}
	p := policy.Policy{Tables: []policy.Table{
		{Name: "v", Columns: []policy.Column{{Name: "patient_id", Role: policy.Unit}, {Name: "k", Public: []string{"b", "a"}},
			{Name: "n", Public: []string{"1"}}}}, // not VARCHAR: no code
		{Name: "p", OneRowPerUnit: true, Columns: []policy.Column{{Name: "patient_id", Role: policy.Unit}, {Name: "s", Public: []string{"x", "y"}}}},
	}}
	if got := e.Codes("c", "v"); got != nil {
		t.Fatalf("codes before RankTables: %v", got)
	}
	e.RankTables("c", p)
	if err := e.WaitTables(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if got := e.Codes("c", "v"); len(got) != 1 || !slices.Equal(got["k"], []string{"b", "a"}) {
		t.Fatalf("codes of v: %v, want only k's list", got)
	}
	if got := e.Codes("c", "p"); !slices.Equal(got["s"], []string{"x", "y"}) {
		t.Fatalf("codes of p: %v", got)
	}
	codeK, codeS := policy.CodeColumn("k", []string{"b", "a"}), policy.CodeColumn("s", []string{"x", "y"})
	res, err := e.Query(ctx, `SELECT k, "`+codeK+`", __rank FROM c.v ORDER BY patient_id`, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []any{uint8(2), uint8(1), nil, nil, uint8(2), uint8(1), nil, nil}
	for i, r := range res.Rows {
		if r[1] != want[i] {
			t.Errorf("row %d: k %v has code %v, want %v", i, r[0], r[1], want[i])
		}
	}
	if _, err := e.Query(ctx, `SELECT "`+codeS+`" FROM c.p`, 10); err != nil {
		t.Errorf("no code column on the table of one row per unit: %v", err)
	}
	types, err := e.ColumnTypes(ctx, "c", "v")
	if err != nil || types[codeK] != "" || types["k"] == "" {
		t.Errorf("column types show the hidden code column or miss k: %v %v", types, err)
	}
	// Loading the table again drops the codes, and appends match the
	// source's columns.
	l, err := e.NewLoader(ctx, "c", "v")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := e.Codes("c", "v"); got != nil {
		t.Errorf("codes after a reload: %v", got)
	}
	if _, err := e.Query(ctx, `SELECT "`+codeK+`" FROM c.v`, 10); err == nil {
		t.Error("the code column survived a reload")
	}
}
