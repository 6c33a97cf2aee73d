package engine_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
)

// rss is the test process's resident memory.
func rss(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skipf("no /proc/self/statm: %v", err)
	}
	n, _ := strconv.ParseInt(strings.Fields(string(b))[1], 10, 64)
	return n * int64(os.Getpagesize())
}

// growing is a query whose memory grows with every vector of rows it
// reads, by about 1 KB a row, to some 3 GB: under DuckDB's 4 GB limit,
// over the process's.
const growing = "SELECT length(list(repeat('x', 1000) || i::VARCHAR)::VARCHAR) FROM range(3000000) t(i)"

// TestProcessMemoryGuard: a query that would grow the process past its
// memory limit is stopped with resource_limit, the process stays under
// the limit, and the next query is answered.
func TestProcessMemoryGuard(t *testing.T) {
	base := rss(t)
	limit := base + 400<<20
	e, err := engine.Open(context.Background(), engine.Config{MemoryLimit: "4GB", Threads: 2, ProcessMemoryLimit: strconv.FormatInt(limit, 10)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				if r := rss(t); r > peak.Load() {
					peak.Store(r)
				}
			}
		}
	}()
	start := time.Now()
	_, err = e.Query(context.Background(), growing, 10)
	took := time.Since(start)
	close(stop)
	<-sampled
	if !fault.Is(err, fault.ResourceLimit) || !strings.Contains(fault.Message(err), "memory") {
		t.Fatalf("a query past the process limit: %v, want resource_limit", err)
	}
	over := peak.Load() - limit
	t.Logf("limit %d MB, peak %d MB (%+d MB), stopped after %v", limit>>20, peak.Load()>>20, over>>20, took.Round(time.Millisecond))
	if over > 0 {
		t.Errorf("the process reached %d MB, %d MB past its limit", peak.Load()>>20, over>>20)
	}
	r, err := e.Query(context.Background(), "SELECT count(*) FROM range(1000)", 10)
	if err != nil || r.Rows[0][0] != int64(1000) {
		t.Fatalf("the query after: %v %v", r, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for rss(t) > limit && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if r := rss(t); r > limit {
		t.Errorf("memory still %d MB, over the %d MB limit, 10 s after the stop", r>>20, limit>>20)
	}
	t.Logf("memory back to %d MB %v after the stop", rss(t)>>20, time.Since(start)-took)
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"4GB": 4e9, "1.5 GiB": 3 << 29, "512MiB": 512 << 20, "1000": 1000, "2 TB": 2e12} {
		if got, err := engine.ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v, want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "lots", "4 parsecs", "-1GB"} {
		if _, err := engine.ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q) accepted", bad)
		}
	}
}

// TestDefaultProcessLimit: without a setting, the process limit is
// DuckDB's memory limit plus a quarter plus 512 MiB.
func TestDefaultProcessLimit(t *testing.T) {
	e, err := engine.Open(context.Background(), engine.Config{MemoryLimit: "1GiB"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got, want := e.ProcessMemoryLimit(), int64(1<<30+1<<28+512<<20); got != want {
		t.Fatalf("default process limit %d, want %d", got, want)
	}
}
