package flight

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

	"github.com/hospital/gateway/fault"
)

// handles keeps values on the server under random ids, each for one
// person, for at most ttl; it holds at most max at once.
type handles[T any] struct {
	mu   sync.Mutex
	what string // what the values are, for the refusal when full
	max  int
	ttl  time.Duration
	now  func() time.Time
	m    map[string]held[T]
}

type held[T any] struct {
	person  string
	value   T
	expires time.Time
}

func newHandles[T any](what string, max int, ttl time.Duration) *handles[T] {
	return &handles[T]{what: what, max: max, ttl: ttl, now: time.Now, m: map[string]held[T]{}}
}

// reserve makes room for one more value, or refuses before any work is
// done for it.
func (h *handles[T]) reserve() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.room()
}

// put keeps v for person and returns its id. It does not refuse: room
// was made by reserve before the work that made v, and only queries in
// flight (a bounded number) can overtake it.
func (h *handles[T]) put(person string, v T) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b[:])
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.m) >= h.max {
		h.prune()
	}
	if len(h.m) >= h.max {
		return "", fault.E(fault.TooManyQueries, "%d answers are waiting to be fetched, the most this gateway keeps; fetch them or retry in a few minutes", h.max)
	}
	h.m[id] = held[T]{person: person, value: v, expires: h.now().Add(h.ttl)}
	return id, nil
}

// get returns the value under id when it is person's and has not expired;
// take removes it too. Another person's id is as unknown as a wrong one.
func (h *handles[T]) get(person, id string, take bool) (T, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.m[id]
	var zero T
	if !ok || e.person != person {
		return zero, false
	}
	if !h.now().Before(e.expires) {
		delete(h.m, id)
		return zero, false
	}
	if take {
		delete(h.m, id)
	}
	return e.value, true
}

// drop removes person's value under id.
func (h *handles[T]) drop(person, id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e, ok := h.m[id]; ok && e.person == person {
		delete(h.m, id)
	}
}

// room prunes expired values when full and refuses when still full.
func (h *handles[T]) room() error {
	if len(h.m) >= h.max {
		h.prune()
	}
	if len(h.m) >= h.max {
		return fault.E(fault.TooManyQueries, "%d %s, the most this gateway keeps; fetch or close them, or retry in a few minutes", h.max, h.what)
	}
	return nil
}

func (h *handles[T]) prune() {
	now := h.now()
	for id, e := range h.m {
		if !now.Before(e.expires) {
			delete(h.m, id)
		}
	}
}
