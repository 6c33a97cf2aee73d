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
type kept struct {
	mu   sync.Mutex
	gen  uint64 // moves on at each change of a table
	idle map[keptKey][]*Prepared
	n    int
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
