package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// CookieName is the console's session cookie.
const CookieName = "gateway_session"

// CSRFHeader carries a session's CSRF token on every API call the console
// makes; a cookie without it authorizes nothing.
const CSRFHeader = "X-CSRF-Token"

// Session is one signed-in browser. It holds the person's API token on the
// server side only: the browser keeps an opaque id in an HttpOnly cookie.
type Session struct {
	ID      string
	Token   string
	CSRF    string
	Expires time.Time // absolute end, however active the session is
	seen    time.Time
}

// CheckCSRF reports whether header is the session's CSRF token.
func (s Session) CheckCSRF(header string) bool {
	return header != "" && subtle.ConstantTimeCompare([]byte(header), []byte(s.CSRF)) == 1
}

// SessionConfig bounds sessions.
type SessionConfig struct {
	// TTL is a session's longest life (default 8 hours); Idle ends it
	// sooner after that long without a request (default 30 minutes).
	TTL, Idle time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Sessions is the set of signed-in browsers, kept in memory: a restart
// signs everyone out, which the console treats like an expiry.
type Sessions struct {
	cfg SessionConfig
	mu  sync.Mutex
	m   map[string]*Session
}

// NewSessions returns an empty set.
func NewSessions(cfg SessionConfig) *Sessions {
	if cfg.TTL <= 0 {
		cfg.TTL = 8 * time.Hour
	}
	if cfg.Idle <= 0 {
		cfg.Idle = 30 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Sessions{cfg: cfg, m: map[string]*Session{}}
}

// Create opens a session for token.
func (ss *Sessions) Create(token string) Session {
	now := ss.cfg.Now()
	s := &Session{ID: randomID(), Token: token, CSRF: randomID(), Expires: now.Add(ss.cfg.TTL), seen: now}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for id, old := range ss.m {
		if !ss.live(old, now) {
			delete(ss.m, id)
		}
	}
	ss.m[s.ID] = s
	return *s
}

// Lookup finds the live session id names and counts the use against its
// idle limit.
func (ss *Sessions) Lookup(id string) (Session, bool) {
	now := ss.cfg.Now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[id]
	if !ok {
		return Session{}, false
	}
	if !ss.live(s, now) {
		delete(ss.m, id)
		return Session{}, false
	}
	s.seen = now
	return *s, true
}

// Delete ends the session id names.
func (ss *Sessions) Delete(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.m, id)
}

// TTL is a session's longest life.
func (ss *Sessions) TTL() time.Duration { return ss.cfg.TTL }

func (ss *Sessions) live(s *Session, now time.Time) bool {
	return now.Before(s.Expires) && now.Sub(s.seen) < ss.cfg.Idle
}

func randomID() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}
