package engine

import (
	"context"
	"testing"
	"time"
)

// TestKeptStatements: a closed statement is reused by its owner for the
// same SQL, and answers as a fresh one; never by another owner; never
// across a change of the table, which drops what was kept.
func TestKeptStatements(t *testing.T) {
	ctx := context.Background()
	e := keptEngine(t)
	const q = "SELECT count(*) FROM h.t"
	count := func(p *Prepared) int64 {
		t.Helper()
		r, err := p.Query(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		return r.Rows[0][0].(int64)
	}
	a, err := e.PrepareFor(ctx, "grt_a", q)
	if err != nil {
		t.Fatal(err)
	}
	if n := count(a); n != 10 {
		t.Fatalf("count %d", n)
	}
	a.Close()
	again, _ := e.PrepareFor(ctx, "grt_a", q)
	if again != a || count(again) != 10 {
		t.Error("the owner's second query of the same SQL was prepared afresh")
	}
	other, _ := e.PrepareFor(ctx, "grt_b", q)
	if other == a {
		t.Error("another owner was given the first owner's statement")
	}
	other.Close()
	again.Close()
	if _, err := e.db.ExecContext(ctx, "INSERT INTO h.t VALUES (10)"); err != nil {
		t.Fatal(err)
	}
	// A change through the engine drops what was kept.
	l, err := e.NewLoader(ctx, "h", "t")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	after, _ := e.PrepareFor(ctx, "grt_a", q)
	if after == a {
		t.Error("a statement was kept across a change of its table")
	}
	if n := count(after); n != 11 {
		t.Errorf("count after the change %d, want 11", n)
	}
	after.Close()
}

// TestLongRunsAreRefilled: a statement that ran longer than keepUnder is
// not kept, but a fresh one, not yet run, takes its place for the owner's
// next query of the same SQL; never for another owner, and not across a
// change of the table.
func TestLongRunsAreRefilled(t *testing.T) {
	ctx := context.Background()
	e := keptEngine(t)
	// Long enough to run past keepUnder on any machine.
	const q = "SELECT count(*) FROM range(20000000) r, h.t WHERE r.range % 7 = h.t.v"
	run := func(owner string) *Prepared {
		t.Helper()
		p, err := e.PrepareFor(ctx, owner, q)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := p.Query(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d <= keepUnder {
			t.Skipf("the query ran in %v, within keepUnder", d)
		}
		p.Close()
		return p
	}
	first := run("grt_a")
	waitKept := func(owner string) *Prepared {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if p := e.kept.take(owner, q); p != nil {
				return p
			}
		}
		return nil
	}
	next := waitKept("grt_a")
	if next == nil || next == first {
		t.Fatalf("no fresh statement took the place of the one that ran long (got %p, first %p)", next, first)
	}
	if p := e.kept.take("grt_b", q); p != nil {
		t.Error("another owner was given the refilled statement")
	}
	next.Close() // not run: kept again
	if p := waitKept("grt_a"); p != next {
		t.Error("a statement that has not run was not kept")
	} else {
		p.Close()
	}
	// Once the table changes, nothing prepared before it is given out.
	l, err := e.NewLoader(ctx, "h", "t")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if p := e.kept.take("grt_a", q); p != nil {
		t.Error("a statement was kept across a change of its table")
	}
}

// keptEngine is an engine with table h.t of the values 0 to 9, closed when
// t ends.
func keptEngine(t *testing.T) *Engine {
	t.Helper()
	ctx := context.Background()
	e, err := Open(ctx, Config{MemoryLimit: "256MB", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if _, err := e.db.ExecContext(ctx, "CREATE SCHEMA h; CREATE TABLE h.t AS SELECT range AS v FROM range(10)"); err != nil {
		t.Fatal(err)
	}
	return e
}
