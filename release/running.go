package release

import (
	"sync"

	"github.com/hospital/gateway/fault"
)

// running counts each person's queries in flight, whatever adapter they
// came through (REST, Flight SQL), so that one person cannot occupy every
// engine thread: over the cap a query is refused with too_many_queries
// before it reads anything or spends budget. The refusal depends on the
// person's own load only.
type running struct {
	mu  sync.Mutex
	max int
	n   map[string]int
}

func newRunning(max int) *running { return &running{max: max, n: map[string]int{}} }

// acquire takes one of the person's places, or refuses.
func (r *running) acquire(person string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n[person] >= r.max {
		return fault.E(fault.TooManyQueries, "you already have %d queries running, the most one person may; send the next when one has answered", r.max)
	}
	r.n[person]++
	return nil
}

func (r *running) release(person string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n[person]--; r.n[person] <= 0 {
		delete(r.n, person)
	}
}
