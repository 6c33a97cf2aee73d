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
