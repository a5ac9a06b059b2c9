"""What a failed PostgREST call means: TransientError, SetupError or DataError.

Every failure of the Supabase sink is mapped once, here: network errors and
timeouts, PostgREST's error codes (``PGRST...``), PostgreSQL's SQLSTATEs and the
HTTP status, with ``Retry-After`` when the server sent one. The retry and spool
logic then reasons about those three kinds only.
"""

from __future__ import annotations

import email.utils
import time

from ..errors import DataError, DeliveryError, SetupError, TransientError

_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524}
_TRANSIENT_CODES = {"PGRST000", "PGRST001", "PGRST002", "PGRST003", "57014", "57P01", "57P03"}
_TRANSIENT_CLASSES = ("08", "40", "53", "55P03")

FIX_MIGRATIONS = "apply the migrations: `supabase-log migrate` (or paste `supabase-log migrate --print` into the SQL editor)"
FIX_GRANTS = (
    "the service role lacks a privilege on the table: run `supabase-log migrate --repair` "
    "(it restores the grants and policies), then `supabase-log doctor`"
)
FIX_KEY = (
    "use the service role (secret) key from the project's API settings as SUPABASE_SERVICE_ROLE_KEY"
)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def classify(
    exc: BaseException, status: int | None = None, retry_after: str | None = None
) -> DeliveryError:
    """Map any failure of a PostgREST call to the project's error kinds."""
    import httpx

    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(f"request timed out ({type(exc).__name__})", code="timeout")
    if isinstance(exc, (httpx.TransportError, ConnectionError, OSError)):
        return TransientError(
            f"cannot reach Supabase ({type(exc).__name__}: {exc})", code="network"
        )
    if isinstance(exc, (ValueError, UnicodeError)) and not _is_api_error(exc):
        return DataError(f"the client refused the rows: {exc}", code="client")
    if not _is_api_error(exc):
        return TransientError(f"unexpected {type(exc).__name__}: {exc}", code="unexpected")
    code = str(getattr(exc, "code", None) or "")
    message = str(getattr(exc, "message", None) or exc)
    if status is None and code.isdigit() and len(code) == 3:
        status = int(code)
    return classify_response(code, message, status, retry_after)


def _is_api_error(exc: BaseException) -> bool:
    return type(exc).__name__ == "APIError" and hasattr(exc, "code")


def classify_response(
    code: str,
    message: str,
    status: int | None,
    retry_after: str | None = None,
    *,
    service_key: bool = False,
) -> DeliveryError:
    """Map a PostgREST error (code, message, HTTP status) to the project's error kinds.

    ``service_key``: the request used the service role key, so "permission denied"
    from the database means a missing grant, not a wrong key.
    """
    if len(code) == 3 and code.isdigit():  # a non-JSON error body: postgrest puts the status here
        status = status or int(code)
        code = ""
    if code.startswith("54"):  # program limit exceeded: this payload will never fit
        return DataError(message, code=code, status=status)
    if (
        code in _TRANSIENT_CODES
        or code.startswith(_TRANSIENT_CLASSES)
        or (status in _TRANSIENT_STATUS)
    ):
        return TransientError(
            message, code=code or None, status=status, retry_after_s=parse_retry_after(retry_after)
        )
    if code in ("PGRST205", "42P01") or (status == 404 and not code.startswith("PGRST")):
        return SetupError(
            f"the table is missing ({message})", fix=FIX_MIGRATIONS, code=code, status=status
        )
    if code in ("PGRST204", "42703"):
        return SetupError(
            f"a column is missing ({message})", fix=FIX_MIGRATIONS, code=code, status=status
        )
    if code == "PGRST106":
        return SetupError(
            f"the schema is not exposed ({message})",
            fix="expose the schema in the API settings, or set SUPABASE_LOG_SCHEMA",
            code=code,
            status=status,
        )
    if code == "42501" and service_key:
        return SetupError(f"permission denied ({message})", fix=FIX_GRANTS, code=code, status=status)
    if code.startswith("PGRST3") or code == "42501" or status in (401, 403):
        return SetupError(f"permission denied ({message})", fix=FIX_KEY, code=code, status=status)
    if code[:2] in ("22", "23") or code in ("PGRST102", "P0001") or status in (400, 409, 413, 422):
        return DataError(message, code=code or None, status=status)
    if status is not None and 300 <= status < 500:
        return SetupError(
            f"unexpected HTTP {status} ({message})",
            fix="check SUPABASE_URL",
            code=code,
            status=status,
        )
    return TransientError(message, code=code or None, status=status)
