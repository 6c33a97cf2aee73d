package catalog

import (
	"sync"
	"time"
)

// memo remembers what the store read, by key, between requests: who
// holds a token (sessions), a researcher's grants, a dataset's row for a
// researcher. A stream of queries then does not read and decode them from
// the database on every request.
//
// It is correct because every change to what it holds goes through the
// store, which, once the change has returned (committed or not), either
// forgets every entry (forget) or puts the changed value in place of the
// one key held (update). A read that began before a change is not kept:
// the reader takes a stamp before it reads the database and hands it to
// put, which refuses the value if anything was forgotten since, or the
// key was updated since. An entry lives at most ttl. A change made by
// another process is not seen, so memos are kept only with SQLite, which
// one gateway owns; with PostgreSQL the store has none (a nil memo
// remembers nothing).
//
// Whether a key's entry is there depends on that key's own reads and
// updates and on the catalog's changes that forget everything (a grant
// made or revoked, a dataset changed, tokens or people changed), never on
// another key's reads or updates (short of max keys, where the memo
// starts over): a researcher's speed tells nothing of another
// researcher's queries.
type memo[V any] struct {
	ttl   time.Duration
	max   int       // entries; when full, the memo starts over
	clone func(V) V // what get and put copy, so that no caller shares a value
	mu    sync.Mutex
	gen   uint64            // moves on at each forget
	keys  map[string]uint64 // key -> its updates since the last forget
	m     map[string]memoEntry[V]
}

type memoEntry[V any] struct {
	v  V
	at time.Time
}

// stamp is when a read began: the memo's generation and the key's
// updates.
type stamp struct{ gen, key uint64 }

func newMemo[V any](ttl time.Duration, max int, clone func(V) V) *memo[V] {
	return &memo[V]{ttl: ttl, max: max, clone: clone, keys: map[string]uint64{}, m: map[string]memoEntry[V]{}}
}

// stamp is the stamp of a read of key that begins now.
func (c *memo[V]) stamp(key string) stamp {
	if c == nil {
		return stamp{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return stamp{c.gen, c.keys[key]}
}

// through returns what is remembered for key, or else what load reads,
// which it remembers when load succeeds. A nil memo always loads.
func (c *memo[V]) through(key string, load func() (V, error)) (V, error) {
	if v, ok := c.get(key, time.Now()); ok {
		return v, nil
	}
	st := c.stamp(key)
	v, err := load()
	if err == nil {
		c.put(key, v, st, time.Now())
	}
	return v, err
}

// get returns a copy of what is remembered for key.
func (c *memo[V]) get(key string, now time.Time) (V, bool) {
	var zero V
	if c == nil {
		return zero, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || now.Sub(e.at) > c.ttl || now.Before(e.at) {
		return zero, false
	}
	return c.clone(e.v), true
}

// put remembers v, read since st, for key, unless the memo forgot or
// the key was updated since.
func (c *memo[V]) put(key string, v V, st stamp, now time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st != (stamp{c.gen, c.keys[key]}) {
		return
	}
	if len(c.m) >= c.max {
		c.m = map[string]memoEntry[V]{}
	}
	c.m[key] = memoEntry[V]{v: c.clone(v), at: now}
}

// update records a committed change to what key holds: fn is given the
// remembered value, to change in place, and reports whether the value
// was the one the change was made to; if not, the entry is dropped.
func (c *memo[V]) update(key string, fn func(*V) bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.keys) >= c.max {
		c.forgetLocked()
	}
	c.keys[key]++
	e, ok := c.m[key]
	if !ok {
		return
	}
	if !fn(&e.v) {
		delete(c.m, key)
		return
	}
	c.m[key] = e
}

// forget drops every entry; the store calls it after each change to
// what the memo holds, committed or not.
func (c *memo[V]) forget() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forgetLocked()
}

func (c *memo[V]) forgetLocked() {
	c.gen++
	clear(c.keys)
	clear(c.m)
}
