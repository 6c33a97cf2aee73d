package catalog

import (
	"sync"
	"time"
)

// memo remembers what the store read, by key, between requests: who
// holds a token (sessions), a researcher's grants, a dataset's row. A
// stream of queries then does not read and decode them from the database
// on every request.
//
// It is correct because every change to what it holds goes through the
// store, which forgets everything once the change has committed,
// committed or not (forget), or puts the changed value in place (update).
// A read that began before a change is not kept: the reader takes the
// generation before it reads the database and hands it to put, which
// refuses it if anything changed since. An entry lives at most ttl. A
// change made by another process is not seen, so memos are kept only
// with SQLite, which one gateway owns; with PostgreSQL the store has
// none (a nil memo remembers nothing).
type memo[V any] struct {
	ttl   time.Duration
	max   int       // entries; when full, the memo starts over
	clone func(V) V // what get and put copy, so that no caller shares a value
	mu    sync.Mutex
	gen   uint64 // moves on at each change; a read of an older one is not kept
	m     map[string]memoEntry[V]
}

type memoEntry[V any] struct {
	v  V
	at time.Time
}

func newMemo[V any](ttl time.Duration, max int, clone func(V) V) *memo[V] {
	return &memo[V]{ttl: ttl, max: max, clone: clone, m: map[string]memoEntry[V]{}}
}

// generation is the current generation, to be read before the database
// is, and handed to put with what was read. A nil memo's is 0.
func (c *memo[V]) generation() uint64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// through returns what is remembered for key, or else what load reads,
// which it remembers when load succeeds. A nil memo always loads.
func (c *memo[V]) through(key string, load func() (V, error)) (V, error) {
	if v, ok := c.get(key, time.Now()); ok {
		return v, nil
	}
	gen := c.generation()
	v, err := load()
	if err == nil {
		c.put(key, v, gen, time.Now())
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

// put remembers v, read at generation gen, for key, unless something
// changed since.
func (c *memo[V]) put(key string, v V, gen uint64, now time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
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
	c.gen++
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
	c.gen++
	clear(c.m)
}
