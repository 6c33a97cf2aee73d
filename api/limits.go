package api

import (
	"sync"

	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/fault"
)

// running counts each person's queries in flight, so that one person
// cannot occupy every engine thread: over the cap a query is refused with
// too_many_queries (429) before it reads anything or spends budget.
type running struct {
	mu  sync.Mutex
	max int
	n   map[string]int
}

func newRunning(max int) *running { return &running{max: max, n: map[string]int{}} }

func (r *running) acquire(person string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n[person] >= r.max {
		return false
	}
	r.n[person]++
	return true
}

func (r *running) release(person string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n[person]--; r.n[person] <= 0 {
		delete(r.n, person)
	}
}

// limitQueries holds the caller's place among their queries in flight for
// the length of the request.
func (s *Server) limitQueries(c *gin.Context) {
	p := person(c)
	if !s.running.acquire(p.ID) {
		s.refuse(c, p, "query", fault.E(fault.TooManyQueries, "you already have %d queries running, the most one person may; send the next when one has answered", s.running.max))
		c.Abort()
		return
	}
	defer s.running.release(p.ID)
	c.Next()
}
