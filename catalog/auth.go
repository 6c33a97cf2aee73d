package catalog

import (
	"slices"
	"time"
)

// Sessions: the store remembers, for a short while, who holds each token
// that authenticated (a memo keyed by the token's hash), so that a
// researcher's stream of queries does not read the token, the person and
// the organisation back from the database on every request.
//
// It is correct because every change that can refuse a token or change
// what its holder may do goes through the store, which forgets every
// session once such a change has committed: revoking a token, changing a
// person's roles or activity, confirming a change, redeeming an
// enrolment, an organisation's export assessment or details.

// session is who holds a token, and the token's id.
type session struct {
	p       Person
	tokenID string
}

// sessionTTL bounds how long a remembered token is trusted without
// reading it again.
const sessionTTL = 5 * time.Second

// maxSessions bounds the entries; when full, the memo starts over.
const maxSessions = 10000

func newSessions() *memo[session] {
	return newMemo(sessionTTL, maxSessions, func(s session) session {
		s.p.Roles = slices.Clone(s.p.Roles)
		return s
	})
}
