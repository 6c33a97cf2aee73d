package api

import (
	"sync"
	"time"
)

// limiter counts requests per client address in fixed windows. It keeps
// at most max addresses: when full, expired windows are dropped, and if
// none has expired the counts start over (the limit then errs towards
// letting requests through; their audit entries stay small either way).
type limiter struct {
	mu     sync.Mutex
	per    int
	window time.Duration
	max    int
	now    func() time.Time
	seen   map[string]*window
}

type window struct {
	start time.Time
	n     int
}

func newLimiter(per int, every time.Duration, max int) *limiter {
	return &limiter{per: per, window: every, max: max, now: time.Now, seen: map[string]*window{}}
}

// allow counts a request from addr and reports whether it is within the
// limit, and, when it is not, whether it is the first one over it in this
// window.
func (l *limiter) allow(addr string) (allowed, firstOver bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	w, ok := l.seen[addr]
	if !ok || now.Sub(w.start) >= l.window {
		if !ok && len(l.seen) >= l.max {
			l.prune(now)
		}
		w = &window{start: now}
		l.seen[addr] = w
	}
	w.n++
	if w.n <= l.per {
		return true, false
	}
	return false, w.n == l.per+1
}

func (l *limiter) prune(now time.Time) {
	for a, w := range l.seen {
		if now.Sub(w.start) >= l.window {
			delete(l.seen, a)
		}
	}
	if len(l.seen) >= l.max {
		clear(l.seen)
	}
}
