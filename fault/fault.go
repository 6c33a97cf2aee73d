// Package fault is the gateway's one error type. Every refusal the gateway makes
// carries a Kind, and each Kind has exactly one stable code, so that
// researchers' scripts can branch on the code. Which HTTP status a kind is
// sent with is the API's business (api/status). An error may also carry the
// operation that failed (Op), for logs.
package fault

import (
	"errors"
	"fmt"
)

// Kind classifies an error by what the caller can do about it.
type Kind int

// The kinds. Internal is the zero value so that an unclassified error is never
// mistaken for the caller's fault.
const (
	Internal        Kind = iota // a fault of the gateway; the caller can retry later
	Unauthenticated             // no or unknown credentials
	Forbidden                   // authenticated, but not allowed
	Invalid                     // the request is malformed
	QueryRejected               // the SQL breaks a privacy or sandbox rule
	BudgetExhausted             // the grant's privacy budget cannot pay for the query
	QuotaExceeded               // the Article 11 line for a core dataset is reached
	Timeout                     // the query ran past its wall-clock limit
	ResourceLimit               // the query needs more memory, groups or rows than allowed
	NotFound                    // no such object, or not visible to the caller
	Conflict                    // the object is in a state that does not allow the action
	TooLarge                    // the request body is over the size limit
	Unavailable                 // a federation node could not be reached or failed mid-query
	RateLimited                 // too many requests from one address without a valid token
	// StoreUnavailable: the metadata store cannot read or write (a full
	// disk, a read-only volume, a database server down). It is the
	// operator's to fix; the caller can retry later. Distinct from
	// Unavailable (node_unavailable), which names a federation node.
	StoreUnavailable
	// TooManyQueries: the caller already has as many queries running as
	// one person may; retry when one has answered.
	TooManyQueries
)

var codes = map[Kind]string{
	Internal:         "internal",
	Unauthenticated:  "unauthenticated",
	Forbidden:        "forbidden",
	Invalid:          "invalid_request",
	QueryRejected:    "query_rejected",
	BudgetExhausted:  "budget_exhausted",
	QuotaExceeded:    "quota_exceeded",
	Timeout:          "query_timeout",
	ResourceLimit:    "resource_limit",
	NotFound:         "not_found",
	Conflict:         "conflict",
	TooLarge:         "request_too_large",
	Unavailable:      "node_unavailable",
	RateLimited:      "rate_limited",
	StoreUnavailable: "unavailable",
	TooManyQueries:   "too_many_queries",
}

// Code is the stable machine-readable code of k, as listed in CONTRACT.md.
func (k Kind) Code() string { return codes[k] }

// KindOfCode is the kind whose code is code, or Internal: how a gateway
// reads another gateway's error answer.
func KindOfCode(code string) Kind {
	for k, c := range codes {
		if c == code {
			return k
		}
	}
	return Internal
}

func (k Kind) String() string { return k.Code() }

// Error is an error with a Kind. Msg is written for the caller: it says what
// was wrong and, where the caller can fix it, how.
type Error struct {
	Op   Op // the operation that failed, for logs; never shown to the caller
	Kind Kind
	Msg  string
	Err  error // underlying cause, kept for logs; never shown to the caller
}

// Op names an operation, as "release.reserve".
type Op string

// In attaches op to err: a gateway error keeps its kind and message and
// gains the operation; any other error becomes an internal one caused by
// err. In(op, nil) is nil.
func In(op Op, err error) error {
	if err == nil {
		return nil
	}
	if e, ok := err.(*Error); ok {
		c := *e
		if c.Op == "" {
			c.Op = op
		}
		return &c
	}
	return &Error{Op: op, Kind: KindOf(err), Err: err}
}

func (e *Error) Error() string {
	if e.Op != "" {
		c := *e
		c.Op = ""
		return string(e.Op) + ": " + c.Error()
	}
	switch {
	case e.Msg == "" && e.Err != nil:
		return e.Err.Error()
	case e.Err != nil:
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// E builds an error of kind k with a formatted message for the caller.
func E(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

// Wrap builds an error of kind k whose cause is err.
func Wrap(k Kind, err error, format string, args ...any) error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...), Err: err}
}

// KindOf returns the kind of the first *Error in err's chain, or Internal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// Message returns what the caller may be shown about err: the message of the
// first *Error in its chain, or a generic text for internal errors so that no
// internal detail leaks.
func Message(err error) string {
	var e *Error
	for errors.As(err, &e) && e.Kind != Internal {
		if e.Msg != "" {
			return e.Msg
		}
		err = e.Err // an operation added by In: the message is further in
	}
	return "internal error; the incident is logged, retry later or contact the gateway operator"
}

// Is reports whether err has kind k.
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }
