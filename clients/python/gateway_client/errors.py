"""Typed errors for the gateway's refusals.

Every refusal from the gateway is ``{"error": {"code", "message"}}`` with a
stable code; each code has its own exception class, all subclasses of
:class:`GatewayError`, so that a study can catch exactly what it can handle::

    try:
        df = gw.query(sql, epsilon=0.5)
    except BudgetExhausted as e:
        print("no budget left:", e.message)
"""


class GatewayError(Exception):
    """A refusal or failure from the gateway.

    ``code`` is the gateway's stable error code (``query_rejected``,
    ``budget_exhausted``, ...), ``message`` its explanation, which says what
    to change when the caller can fix it, and ``status`` the HTTP status
    (``None`` when the gateway could not be reached).
    """

    code = "internal"

    def __init__(self, message, code=None, status=None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.status = status

    def __str__(self):
        return "%s: %s" % (self.code, self.message)


class Unauthenticated(GatewayError):
    """The token is missing, unknown, expired or revoked."""

    code = "unauthenticated"


class Forbidden(GatewayError):
    """The caller's roles or grants do not allow the call."""

    code = "forbidden"


class InvalidRequest(GatewayError):
    """The request is malformed; the message says what to change."""

    code = "invalid_request"


class NotSupported(InvalidRequest):
    """The gateway does not offer what the client asked for (yet)."""

    code = "invalid_request"


class QueryRejected(GatewayError):
    """The analysis refused the SQL (an identifier selected, no aggregate, ...)."""

    code = "query_rejected"


class BudgetExhausted(GatewayError):
    """The grant cannot pay the epsilon or delta asked for."""

    code = "budget_exhausted"


class QuotaExceeded(GatewayError):
    """The dataset reached its Article 11 line for releases to other entities."""

    code = "quota_exceeded"


class QueryTimeout(GatewayError):
    """The query took longer than the gateway allows."""

    code = "query_timeout"


class ResourceLimit(GatewayError):
    """The query was stopped by the sandbox's run-time limits; its budget is spent."""

    code = "resource_limit"


class NotFound(GatewayError):
    """The thing named does not exist, or is not the caller's to see."""

    code = "not_found"


class Conflict(GatewayError):
    """The request conflicts with the current state."""

    code = "conflict"


class RequestTooLarge(GatewayError):
    """The request body is over the gateway's limit."""

    code = "request_too_large"


class RateLimited(GatewayError):
    """Too many requests; wait and try again."""

    code = "rate_limited"


class TooManyQueries(GatewayError):
    """The caller already has as many queries running as one person may."""

    code = "too_many_queries"


class Unavailable(GatewayError):
    """The gateway, its store or a federation node is unavailable."""

    code = "unavailable"


_BY_CODE = {
    cls.code: cls
    for cls in (
        Unauthenticated, Forbidden, InvalidRequest, QueryRejected, BudgetExhausted,
        QuotaExceeded, QueryTimeout, ResourceLimit, NotFound, Conflict,
        RequestTooLarge, RateLimited, TooManyQueries, Unavailable,
    )
}
_BY_CODE["node_unavailable"] = Unavailable


def from_response(status, body):
    """The exception for an error response: its code picks the class."""
    code, message = "internal", ""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code") or code
        message = body["error"].get("message") or ""
    if not message:
        message = "the gateway answered HTTP %d" % status
    cls = _BY_CODE.get(code, GatewayError)
    return cls(message, code=code, status=status)
