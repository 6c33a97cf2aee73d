package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DuckDB's memory_limit caps what its buffer manager hands out, but not
// everything a query allocates: the string heaps of intermediate vectors,
// for one, are outside it, and a string function nested a few levels deep
// can grow the process far past the limit (seven nested replace calls on
// 150 rows take 1.2 GB under a 1 GB limit). The sandbox refuses such
// nesting and the analyser bounds a query's cost, but the process must hold
// whatever slips through: the guard samples the process's resident memory
// while queries run and, past the limit, stops them with resource_limit.
// The gateway goes on serving: the stopped query's memory is given back to
// the system within a few seconds (DuckDB's allocator purges in background
// threads, switched on in Open).

// errProcessMemory is the cause of a query stopped by the guard.
var errProcessMemory = errors.New("the gateway's process memory limit was reached")

// guardEvery is how often the guard samples while queries run.
const guardEvery = 50 * time.Millisecond

// guard stops running queries when the process's resident memory passes
// limit. It stops the query that has run longest first (the one most
// likely to have grown), waits for it to end, then stops the next only if
// memory goes on growing: after a stop, memory stays high until the
// allocator gives it back, and the queries still running are not to blame
// for that. DuckDB stops a query between two vectors of rows (2048), not
// inside one; what one vector may allocate is bounded by the sandbox (no
// string-growing function over another, constants of 256 characters, 1000
// expression nodes: some 500 MB a thread at most, each node holding a
// vector of strings).
type guard struct {
	limit int64
	// at is where the guard acts: below the limit by what a query may grow
	// between two samples (about 100 MB at 2 GB/s), so that the process
	// stays under the limit itself.
	at  int64
	rss func() (int64, error)

	mu      sync.Mutex
	next    uint64
	running map[uint64]*tracked
	wake    chan struct{} // a query started
	stop    chan struct{}
	wg      sync.WaitGroup
}

type tracked struct {
	started time.Time
	cancel  context.CancelCauseFunc
	stopped bool // by the guard, and not yet ended
}

func newGuard(limit int64, rss func() (int64, error)) *guard {
	g := &guard{limit: limit, at: limit - min(max(limit/8, 128<<20), limit/2), rss: rss, running: map[uint64]*tracked{}, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	g.wg.Go(g.watch)
	return g
}

// track registers a query for the guard to watch until done is called; the
// returned context is cancelled, with errProcessMemory as its cause, when
// the guard stops the query.
func (g *guard) track(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	g.mu.Lock()
	g.next++
	id := g.next
	g.running[id] = &tracked{started: time.Now(), cancel: cancel}
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	return ctx, func() {
		g.mu.Lock()
		delete(g.running, id)
		g.mu.Unlock()
		cancel(nil)
	}
}

func (g *guard) idle() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.running) == 0
}

// watch samples every guardEvery while any query runs, and sleeps while
// none does.
func (g *guard) watch() {
	t := time.NewTicker(guardEvery)
	defer t.Stop()
	// floor is the memory at the last stop: until memory falls under the
	// limit, only growth beyond it (by a step) stops another query.
	var floor int64
	step := max(g.at/32, 16<<20)
	for {
		if g.idle() {
			select {
			case <-g.wake:
			case <-g.stop:
				return
			}
		}
		select {
		case <-t.C:
		case <-g.stop:
			return
		}
		rss, err := g.rss()
		if err != nil {
			continue
		}
		switch {
		case rss <= g.at:
			floor = 0
		case floor == 0 || rss > floor+step:
			if waiting, ok := g.stopOldest(); ok {
				floor = rss
			} else if waiting {
				floor = max(floor, rss)
			}
		}
	}
}

// stopOldest cancels the query that has run longest, unless a query it
// stopped is still ending (waiting reports true); ok reports a stop.
func (g *guard) stopOldest() (waiting, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var oldest *tracked
	for _, q := range g.running {
		if q.stopped {
			return true, false
		}
		if oldest == nil || q.started.Before(oldest.started) {
			oldest = q
		}
	}
	if oldest == nil {
		return false, false
	}
	oldest.stopped = true
	oldest.cancel(errProcessMemory)
	return false, true
}

func (g *guard) close() {
	close(g.stop)
	g.wg.Wait()
}

// processRSS is the resident memory of this process, from /proc/self/statm.
func processRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, fmt.Errorf("read /proc/self/statm: %q", b)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read /proc/self/statm: %w", err)
	}
	return pages * int64(os.Getpagesize()), nil
}

// ParseBytes reads a memory size as DuckDB writes and accepts it: a number
// with an optional space and a unit (B, KB, MB, GB, TB, decimal, or KiB,
// MiB, GiB, TiB, binary), as "4GB" or "3.7 GiB".
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("memory size %q: write a number and a unit, as 4GB or 512MiB", s)
	}
	units := map[string]float64{"": 1, "b": 1, "bytes": 1,
		"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
	m, ok := units[unit]
	if !ok {
		return 0, fmt.Errorf("memory size %q: unknown unit %q; use KB, MB, GB, TB or KiB, MiB, GiB, TiB", s, unit)
	}
	return int64(v * m), nil
}
