"""A Python client for the Gateway, a privacy-preserving SQL analytics gateway.

    from gateway_client import Gateway
    gw = Gateway("http://127.0.0.1:8080", token)
    df = gw.query("SELECT sex, count(*) AS n FROM patients GROUP BY sex", epsilon=0.1)

``df`` holds the noisy values with ``n_low``/``n_high`` interval columns, and
``df.attrs`` the privacy report, the budget left, the query id and the
receipt. Refusals raise :class:`GatewayError` subclasses carrying ``.code``.
It needs only the standard library; pandas, when present, for DataFrames.
"""

from .client import Gateway, to_frame
from .errors import (
    BudgetExhausted, Conflict, Forbidden, GatewayError, InvalidRequest, NotFound,
    NotSupported, QueryRejected, QueryTimeout, QuotaExceeded, RateLimited,
    RequestTooLarge, ResourceLimit, TooManyQueries, Unauthenticated, Unavailable,
)

__version__ = "0.1.0"

__all__ = [
    "Gateway", "to_frame", "GatewayError", "BudgetExhausted", "Conflict", "Forbidden",
    "InvalidRequest", "NotFound", "NotSupported", "QueryRejected", "QueryTimeout",
    "QuotaExceeded", "RateLimited", "RequestTooLarge", "ResourceLimit", "TooManyQueries",
    "Unauthenticated", "Unavailable",
]
