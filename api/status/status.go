// Package status maps the gateway's error kinds to HTTP statuses: the one
// table, for the REST API and the federation's HTTP endpoints alike. The
// kinds and their stable codes live in fault, which knows nothing of HTTP.
package status

import (
	"net/http"

	"github.com/hospital/gateway/fault"
)

var statuses = map[fault.Kind]int{
	fault.Internal:         http.StatusInternalServerError,
	fault.Unauthenticated:  http.StatusUnauthorized,
	fault.Forbidden:        http.StatusForbidden,
	fault.Invalid:          http.StatusBadRequest,
	fault.QueryRejected:    http.StatusBadRequest,
	fault.BudgetExhausted:  http.StatusForbidden,
	fault.QuotaExceeded:    http.StatusForbidden,
	fault.Timeout:          http.StatusRequestTimeout,
	fault.ResourceLimit:    http.StatusUnprocessableEntity,
	fault.NotFound:         http.StatusNotFound,
	fault.Conflict:         http.StatusConflict,
	fault.TooLarge:         http.StatusRequestEntityTooLarge,
	fault.Unavailable:      http.StatusServiceUnavailable,
	fault.RateLimited:      http.StatusTooManyRequests,
	fault.StoreUnavailable: http.StatusServiceUnavailable,
	fault.TooManyQueries:   http.StatusTooManyRequests,
}

// Of is the HTTP status of an error of kind k.
func Of(k fault.Kind) int {
	if s, ok := statuses[k]; ok {
		return s
	}
	return http.StatusInternalServerError
}
