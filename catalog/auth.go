package catalog

import (
	"slices"
	"sync"
	"time"
)

// sessions remembers, for a short while, who holds each token that
// authenticated, so that a researcher's stream of queries does not read
// the token, the person and the organisation back from the database on
// every request.
//
// It is correct because every change that can refuse a token or change
// what its holder may do goes through the store, which forgets everything
// once such a change has committed (forget): revoking a token, changing a
// person's roles or activity, confirming a change, redeeming an enrolment,
// an organisation's export assessment or details. A change made by another
// process is not seen, so the cache is kept only with SQLite, which one
// gateway owns, and even there an entry lives at most sessionTTL.
type sessions struct {
	mu  sync.Mutex
	gen uint64 // moves on at each forget; an entry of an older one is stale
	m   map[string]session
}

type session struct {
	p       Person
	tokenID string
	gen     uint64
	at      time.Time
}

// sessionTTL bounds how long a remembered token is trusted without
// reading it again.
const sessionTTL = 5 * time.Second

// maxSessions bounds the entries; when full, the cache starts over.
const maxSessions = 10000

func newSessions() *sessions { return &sessions{m: map[string]session{}} }

// generation is the current generation, to be read before the database is,
// and handed to put with what was read.
func (c *sessions) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

func (c *sessions) get(hash string, now time.Time) (Person, string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[hash]
	if !ok || e.gen != c.gen || now.Sub(e.at) > sessionTTL || now.Before(e.at) {
		return Person{}, "", false
	}
	p := e.p
	p.Roles = slices.Clone(p.Roles)
	return p, e.tokenID, true
}

// put remembers what was read at generation gen, unless a change has
// committed since.
func (c *sessions) put(hash string, p Person, tokenID string, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if len(c.m) >= maxSessions {
		c.m = map[string]session{}
	}
	p.Roles = slices.Clone(p.Roles)
	c.m[hash] = session{p: p, tokenID: tokenID, gen: gen, at: now}
}

// forget drops every entry; the store calls it after each change to
// tokens, people or organisations, committed or not.
func (c *sessions) forget() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.m)
}
