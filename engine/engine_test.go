package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
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
