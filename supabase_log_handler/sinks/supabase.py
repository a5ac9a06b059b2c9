"""The Supabase sink: rows go through PostgREST with the official ``supabase`` client.

The client is imported and created on first use, on the thread that uses it (the
import alone takes most of a second). Its own retry is turned off, because
retrying is the sender's job, and an httpx client with a hard timeout and a
response hook is injected, so the HTTP status and ``Retry-After`` are known when
PostgREST's error body is not enough. Every failure is mapped once, here, to
TransientError, SetupError or DataError.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
from typing import Any

from ..errors import DataError, DeliveryError, SetupError, TransientError
from . import Filter

_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524}
_TRANSIENT_CODES = {"PGRST000", "PGRST001", "PGRST002", "PGRST003", "57014", "57P01", "57P03"}
_TRANSIENT_CLASSES = ("08", "40", "53", "55P03")

FIX_MIGRATIONS = "apply the migrations: `supabase-log migrate` (or paste `supabase-log migrate --print` into the SQL editor)"
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
    code: str, message: str, status: int | None, retry_after: str | None = None
) -> DeliveryError:
    """Map a PostgREST error (code, message, HTTP status) to the project's error kinds."""
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


class SupabaseSink:
    """Writes and reads ``runs``/``logs`` through PostgREST."""

    name = "supabase"

    def __init__(
        self, url: str, key: str, *, schema: str = "public", request_timeout_s: float = 10.0
    ) -> None:
        self._url = url
        self._key = key
        self._schema = schema
        self._timeout_s = request_timeout_s
        self._client: Any = None
        self._http: Any = None
        self._status: int | None = None
        self._retry_after: str | None = None

    def _get_client(self) -> Any:
        if self._client is None:
            import httpx
            from supabase import create_client
            from supabase.lib.client_options import SyncClientOptions

            def remember(response: httpx.Response) -> None:
                self._status = response.status_code
                self._retry_after = response.headers.get("retry-after")

            self._http = httpx.Client(
                timeout=httpx.Timeout(self._timeout_s, connect=min(self._timeout_s, 5.0)),
                event_hooks={"response": [remember]},
            )
            options = SyncClientOptions(
                schema=self._schema,
                httpx_client=self._http,
                postgrest_client_retry=False,
                auto_refresh_token=False,
                persist_session=False,
            )
            self._client = create_client(self._url, self._key, options)
            self._client.postgrest  # noqa: B018 - initialise now, on this thread
        return self._client

    def prepare(self) -> None:
        self._get_client()

    def _run(self, build: Any) -> Any:
        self._status = None
        self._retry_after = None
        try:
            return build(self._get_client()).execute()
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise classify(exc, self._status, self._retry_after) from exc

    def insert_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._run(
                lambda c: c.table(table).upsert(
                    rows, on_conflict="id", ignore_duplicates=True, returning="minimal"
                )
            )

    def upsert_run(self, table: str, row: dict[str, Any], *, final: bool) -> None:
        self._run(
            lambda c: c.table(table).upsert(
                [row], on_conflict="id", ignore_duplicates=not final, returning="minimal"
            )
        )

    def select(
        self,
        table: str,
        *,
        filters: list[Filter] | None = None,
        order: list[tuple[str, bool]] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        def build(c: Any) -> Any:
            q = c.table(table).select("*")
            for column, op, value in filters or []:
                if op == "in":
                    q = q.in_(column, list(value))
                elif op == "not_null":
                    q = q.not_.is_(column, "null")
                else:
                    q = getattr(q, op)(column, value)
            for column, desc in order or []:
                q = q.order(column, desc=desc)
            if limit is not None:
                q = q.limit(limit)
            return q

        result = self._run(build)
        return list(result.data or [])

    def close(self) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None:
            with contextlib.suppress(Exception):
                http.close()
