package engine

import (
	"context"
	"sync"
	"time"
)

// kept holds prepared statements between uses, by owner and SQL, so that
// a question asked again (the same plan: the same SQL on the same grant,
// say with another epsilon) is not bound and planned by DuckDB again; for
// a small query that is a third of DuckDB's work. A statement is reused
// only by the owner it was prepared for, so how fast a query starts says
// nothing of what others asked. Any change to a table (created, appended
// to, ranked) drops every kept statement: a plan is reused only over the
// schemas it was bound against.
//
// A statement that ran longer than keepUnder is not kept (DuckDB holds its
// working memory), but one is prepared afresh in its place in the
// background (Engine.refill), off the path of any answer: the owner's next
// query of the same SQL, a large one asked again with another epsilon or
// bounded at the same bound, starts bound and planned too. For a query
// bounded by rank, whose SQL is only known once the bound is chosen, that
// preparation is a few milliseconds. Whether a kept statement is there
// depends only on the owner's own earlier queries and the bounds chosen
// for them, which their answers report.
type kept struct {
	mu   sync.Mutex
	gen  uint64 // moves on at each change of a table
	idle map[keptKey][]*Prepared
	n    int
	// refilling marks the keys being prepared again: one at a time.
	refilling map[keptKey]bool
}

type keptKey struct{ owner, sql string }

// keepUnder is the longest run after which a statement is kept: binding
// and planning cost a fraction of a millisecond, which matters for small
// queries only, while DuckDB holds memory for a kept statement of a large
// one (the working memory of its last run) that later queries need.
const keepUnder = 20 * time.Millisecond

// maxKept bounds the statements kept, each holding a DuckDB connection
// (tens of kilobytes); when full, one kept for another SQL makes room.
const maxKept = 256

// take returns a kept statement for owner and sqlText, or nil.
func (k *kept) take(owner, sqlText string) *Prepared {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := keptKey{owner, sqlText}
	l := k.idle[key]
	if len(l) == 0 {
		return nil
	}
	p := l[len(l)-1]
	if len(l) == 1 {
		delete(k.idle, key)
	} else {
		k.idle[key] = l[:len(l)-1]
	}
	k.n--
	return p
}

// generation is the current generation, read before a statement is
// prepared.
func (k *kept) generation() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.gen
}

// give keeps p for its next use, and reports whether it did: not when a
// table changed since p was prepared.
func (k *kept) give(p *Prepared) bool {
	k.mu.Lock()
	if p.gen != k.gen {
		k.mu.Unlock()
		return false
	}
	if k.idle == nil {
		k.idle = map[keptKey][]*Prepared{}
	}
	var evicted *Prepared
	if k.n >= maxKept {
		for key, l := range k.idle { // an arbitrary other one
			evicted = l[len(l)-1]
			if len(l) == 1 {
				delete(k.idle, key)
			} else {
				k.idle[key] = l[:len(l)-1]
			}
			k.n--
			break
		}
	}
	key := keptKey{p.owner, p.sql}
	k.idle[key] = append(k.idle[key], p)
	k.n++
	k.mu.Unlock()
	if evicted != nil {
		evicted.release()
	}
	return true
}

// startRefill reports whether a statement for owner and sqlText should be
// prepared again at generation gen, and if so marks it in progress: not
// when a table changed since, one is kept already, or one is being
// prepared.
func (k *kept) startRefill(owner, sqlText string, gen uint64) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := keptKey{owner, sqlText}
	if gen != k.gen || len(k.idle[key]) > 0 || k.refilling[key] || k.n >= maxKept {
		return false
	}
	if k.refilling == nil {
		k.refilling = map[keptKey]bool{}
	}
	k.refilling[key] = true
	return true
}

func (k *kept) endRefill(owner, sqlText string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.refilling, keptKey{owner, sqlText})
}

// drop closes every kept statement: a table changed.
func (k *kept) drop() {
	k.mu.Lock()
	k.gen++
	var all []*Prepared
	for _, l := range k.idle {
		all = append(all, l...)
	}
	k.idle, k.n = nil, 0
	k.mu.Unlock()
	for _, p := range all {
		p.release()
	}
}

// PrepareFor is Prepare for one owner (the release's grant), whose
// statement, once closed, is kept for the owner's next query of the same
// SQL, which then skips DuckDB's binding and planning.
func (e *Engine) PrepareFor(ctx context.Context, owner, sqlText string) (*Prepared, error) {
	if p := e.kept.take(owner, sqlText); p != nil {
		return p, nil
	}
	gen := e.kept.generation()
	p, err := e.Prepare(ctx, sqlText)
	if err != nil {
		return nil, err
	}
	p.e, p.owner, p.sql, p.gen = e, owner, sqlText, gen
	return p, nil
}

// refill prepares sqlText for owner again, in the engine's background, in
// place of a statement of generation gen that ran too long to be kept (see
// kept). Nothing is prepared once the engine is closing.
func (e *Engine) refill(owner, sqlText string, gen uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closing.Err() != nil || !e.kept.startRefill(owner, sqlText, gen) {
		return
	}
	e.background.Add(1)
	go func() {
		defer e.background.Done()
		defer e.kept.endRefill(owner, sqlText)
		p, err := e.Prepare(e.closing, sqlText)
		if err != nil {
			return // the next query prepares it, and sees any error itself
		}
		p.e, p.owner, p.sql, p.gen = e, owner, sqlText, gen
		if !e.kept.give(p) {
			p.release()
		}
	}()
}
