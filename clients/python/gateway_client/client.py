"""The gateway's REST API from Python, with answers as pandas DataFrames."""

import json
import os
import urllib.error
import urllib.parse
import urllib.request

from . import errors

try:  # pandas is optional: without it everything but DataFrames works.
    import pandas as _pd
except ImportError:  # pragma: no cover - depends on the machine
    _pd = None

DEMO_CREDENTIALS = os.path.join("gateway-data", "demo-credentials.json")

_INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
                  "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}


class Gateway:
    """A connection to one gateway as one person.

    ``url`` is the gateway's base URL (``http://127.0.0.1:8080``) and
    ``token`` the person's bearer token. Refusals raise the subclass of
    :class:`gateway_client.GatewayError` named for their stable code.
    """

    def __init__(self, url, token, timeout=120.0):
        if not url:
            raise ValueError("url is required, e.g. http://127.0.0.1:8080")
        if not token:
            raise ValueError("token is required: a bearer token the gateway issued")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def __repr__(self):
        return "Gateway(%r)" % self.url

    @classmethod
    def from_env(cls, person="researcher_internal", credentials=None, timeout=120.0):
        """The gateway named by ``GATEWAY_URL`` and ``GATEWAY_TOKEN``.

        What they leave unset comes from the demo's credentials file: the
        ``credentials`` path when given, else ``gateway-data/demo-credentials.json``
        in the current directory or the nearest parent that has one; its
        token is ``person``'s.
        """
        url, token = os.environ.get("GATEWAY_URL"), os.environ.get("GATEWAY_TOKEN")
        if not (url and token):
            path = credentials or _find_upwards(DEMO_CREDENTIALS)
            if path is None:
                raise errors.GatewayError(
                    "set GATEWAY_URL and GATEWAY_TOKEN, or start `gateway demo` so that %s exists"
                    % DEMO_CREDENTIALS, code="unauthenticated")
            with open(path, encoding="utf-8") as f:
                creds = json.load(f)
            url = url or creds.get("base_url")
            token = token or creds.get("tokens", {}).get(person)
            if not token:
                raise errors.GatewayError("%s has no token for %r" % (path, person), code="unauthenticated")
        return cls(url, token, timeout=timeout)

    # Queries.

    def answer(self, sql, epsilon=None, delta=None, grant_id=None, exact=False):
        """The protected answer to ``sql`` as the gateway sends it: a dict
        with ``columns``, ``rows`` (always a list), ``privacy``, ``budget``,
        ``query_id`` and, when the gateway signs answers, ``receipt``.

        ``epsilon`` and ``delta`` are what to spend (the grant's default
        when ``None``; a positive ``delta`` selects Gaussian noise),
        ``grant_id`` names the grant when several cover the query. Asking
        the same question again returns the stored answer at no cost.
        """
        ans = self._post_query(_query_body(sql, epsilon, delta, grant_id, exact))
        if ans.get("rows") is None:
            ans["rows"] = []
        return ans

    def query(self, sql, epsilon=None, delta=None, grant_id=None, exact=False):
        """The protected answer to ``sql`` as a pandas DataFrame.

        The columns are the query's, holding the noisy values, typed from
        their SQL types. Each aggregate column ``c`` is followed by
        ``c_low`` and ``c_high``, the bounds of its 95% interval: per cell
        from the answer's ``intervals`` when the gateway sends them (noise
        and bounding bias together), else derived as value +/- the column's
        ``privacy.columns[c].ci95``, which covers the noise only and, for
        derived statistics (means, variances, quantiles), is the widest
        over the groups. ``df.attrs["intervals"]`` says which: ``"server"``
        or ``"ci95"``.

        ``df.attrs`` also holds ``query_id``, ``grant_id``, ``grade``,
        ``cached``, ``privacy`` (the privacy report), ``budget`` (the
        grant's budget after this answer), ``receipt`` and ``columns``.
        The arguments are those of :meth:`answer`.
        """
        return to_frame(self.answer(sql, epsilon=epsilon, delta=delta, grant_id=grant_id, exact=exact))

    def estimate(self, sql, epsilon=None, delta=None, grant_id=None):
        """What ``sql`` would cost and how noisy it would be, without running
        it or spending anything: the gateway's dry-run answer, a dict with
        ``cost`` and ``privacy``.

        Raises :class:`gateway_client.NotSupported` when the gateway does
        not offer dry runs.
        """
        body = _query_body(sql, epsilon, delta, grant_id, False)
        body["dry_run"] = True
        try:
            ans = self._post_query(body)
        except errors.InvalidRequest as e:
            if "dry_run" in e.message:
                raise errors.NotSupported("this gateway does not estimate queries yet (%s)" % e.message,
                                          code=e.code, status=e.status) from None
            raise
        if ans.get("dry_run") is not True:
            raise errors.NotSupported("the gateway answered a dry run with a released answer; "
                                      "it does not estimate queries", code="invalid_request")
        return ans

    def _post_query(self, body):
        return self._call("POST", "/v1/queries", body)

    # Budgets, datasets, access.

    def budgets(self):
        """The caller's grants and their budgets, a list of dicts with
        ``grant_id``, ``datasets``, ``epsilon_total``, ``epsilon_spent``,
        ``epsilon_remaining``, ``delta_total``, ``delta_spent``,
        ``expires_at`` and ``live``."""
        return self._call("GET", "/v1/budgets")["budgets"]

    def datasets(self):
        """The datasets the caller may see, with their grade, tables and
        column policies; never any value."""
        return self._call("GET", "/v1/datasets")["datasets"]

    def request_access(self, datasets, purpose, epsilon, expires_at, columns=None, processing_method=None,
                       delta=None):
        """Apply for a grant: a dict with the new request's ``id`` and
        ``state`` (``pending``). A steward approves it and an approver, a
        different person, verifies it before the grant exists.

        ``datasets`` is a list of dataset names (a single name is
        accepted), ``epsilon`` the total budget asked for, ``expires_at``
        when the grant should end (an ISO 8601 time or a datetime, in the
        future), ``columns`` the columns needed when not all of them."""
        if isinstance(datasets, str):
            datasets = [datasets]
        if hasattr(expires_at, "isoformat"):
            if getattr(expires_at, "tzinfo", None) is None and hasattr(expires_at, "hour"):
                raise ValueError("expires_at needs a time zone, e.g. datetime.now(timezone.utc) + timedelta(days=180)")
            expires_at = expires_at.isoformat()
        body = {"datasets": list(datasets), "purpose": purpose, "epsilon": epsilon, "expires_at": expires_at}
        if columns is not None:
            body["columns"] = list(columns)
        if processing_method is not None:
            body["processing_method"] = processing_method
        if delta is not None:
            body["delta"] = delta
        return self._call("POST", "/v1/access-requests", body)

    def access_request(self, request_id):
        """One access request and its state."""
        return self._call("GET", "/v1/access-requests/" + urllib.parse.quote(request_id, safe=""))

    def access_requests(self):
        """The caller's access requests and their states."""
        return self._call("GET", "/v1/access-requests")["access_requests"]

    # Transport.

    def _call(self, method, path, body=None):
        data = None
        headers = {"Authorization": "Bearer " + self.token, "Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            raise errors.from_response(e.code, parsed) from None
        except (urllib.error.URLError, OSError) as e:
            raise errors.Unavailable("cannot reach the gateway at %s: %s" % (self.url, getattr(e, "reason", e)),
                                     code="unavailable") from None
        return json.loads(raw)


def _query_body(sql, epsilon, delta, grant_id, exact):
    body = {"sql": sql}
    if epsilon is not None:
        body["epsilon"] = epsilon
    if delta is not None:
        body["delta"] = delta
    if grant_id is not None:
        body["grant_id"] = grant_id
    if exact:
        body["exact"] = True
    return body


def _find_upwards(rel):
    d = os.getcwd()
    while True:
        p = os.path.join(d, rel)
        if os.path.isfile(p):
            return p
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def to_frame(answer):
    """A DataFrame from a JSON answer, as :meth:`Gateway.query` describes."""
    if _pd is None:
        raise ImportError("Gateway.query needs pandas (Debian: apt-get install python3-pandas; "
                          "else pip install pandas); Gateway.answer returns the answer as a dict without it")
    columns = answer.get("columns") or []
    names = [c["name"] for c in columns]
    rows = answer.get("rows") or []
    privacy = answer.get("privacy") or {}
    reports = privacy.get("columns") or {}
    intervals = answer.get("intervals")

    frame = _pd.DataFrame(rows, columns=names)
    out = {}
    for j, col in enumerate(columns):
        name = col["name"]
        values = _typed(frame[name], col.get("type", ""))
        out[name] = values
        if name not in reports:
            continue  # a group key
        if intervals is not None:
            low = [iv[j][0] if iv[j] is not None else None for iv in intervals]
            high = [iv[j][1] if iv[j] is not None else None for iv in intervals]
            out[name + "_low"] = _pd.Series(low, dtype="float64")
            out[name + "_high"] = _pd.Series(high, dtype="float64")
        else:
            ci = float(reports[name].get("ci95", 0.0))
            numbers = values.astype("float64")
            out[name + "_low"] = numbers - ci
            out[name + "_high"] = numbers + ci
    df = _pd.DataFrame(out, columns=list(out))
    df.attrs.update({
        "query_id": answer.get("query_id"),
        "grant_id": answer.get("grant_id"),
        "grade": answer.get("grade"),
        "cached": answer.get("cached"),
        "privacy": privacy,
        "budget": answer.get("budget"),
        "receipt": answer.get("receipt"),
        "columns": columns,
        "intervals": "server" if intervals is not None else "ci95",
    })
    return df


def _typed(series, sql_type):
    t = sql_type.upper()
    has_null = bool(series.isna().any())
    if t in _INTEGER_TYPES:
        return series.astype("Int64" if has_null else "int64")
    if t in ("DOUBLE", "FLOAT", "REAL") or t.startswith("DECIMAL"):
        return series.astype("float64")
    if t == "BOOLEAN":
        return series.astype("boolean" if has_null else "bool")
    if t == "DATE":
        return _pd.to_datetime(series, errors="coerce")
    if t.startswith("TIMESTAMP"):
        return _pd.to_datetime(series, errors="coerce", utc=True)
    return series
