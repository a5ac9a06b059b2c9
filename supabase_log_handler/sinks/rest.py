"""The Supabase sink: rows go to PostgREST (``/rest/v1``) over one httpx client.

Requests are the ones the official ``supabase`` client sends for the same calls
(``table(t).upsert(rows, on_conflict="id", ignore_duplicates=..., returning=
"minimal")``, ``select``, ``rpc``): same path, query, ``apikey`` and
``Authorization`` headers, ``Accept-Profile``/``Content-Profile`` and ``Prefer``;
a test compares them with what the client itself sends. Building them here
spares every job the import of the whole client (most of a second) and lets the
body be the rows' JSON exactly as they were encoded once by the worker. A
table partitioned by ``migrate --partitioned`` has the key ``(id, timestamp)``
(``(id, created_at)`` for calls): its first write answers 42P10, and from then on
the sink names that key as ``on_conflict``.

httpx is imported on first use, on the thread that uses it. Every failure is
mapped to the project's error kinds by ``classify.py``. ``transport_factory``
(a zero-argument callable returning an httpx transport) replaces the network,
for benchmarks.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import DeliveryError
from . import DictRows, Filter
from .classify import classify, classify_response

transport_factory: Callable[[], Any] | None = None
CLIENT_INFO = "supabase-log-handler/0.2.0"
# Set while this package makes a request on a caller's thread (reads), so the
# HTTP client's own log records are never shown to, or stored by, the caller's handlers.
own_request: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "supabase_log_handler.own", default=False
)


THREAD_PREFIX = "supabase-log-"  # the pipeline's threads
CLIENT_LOGGERS = ("httpx", "httpcore", "hpack", "h2", "h11")
_CLIENT_PREFIXES = tuple(n + "." for n in CLIENT_LOGGERS)


def _not_from_us(record: logging.LogRecord) -> bool:
    return not (str(record.threadName).startswith(THREAD_PREFIX) or own_request.get())


def quiet_client_loggers() -> None:
    """The HTTP client's records about our own requests reach no handler (not even the
    application's console); its records about the application's requests are untouched.

    A logger's filters apply to the records it makes itself, so every logger of the
    client's packages gets one (httpcore makes its records in ``httpcore.http11`` ...).
    """
    names = [n for n in list(logging.Logger.manager.loggerDict)
             if n in CLIENT_LOGGERS or n.startswith(_CLIENT_PREFIXES)]  # fmt: skip
    for name in {*CLIENT_LOGGERS, *names}:
        logger = logging.getLogger(name)
        if _not_from_us not in logger.filters:
            logger.addFilter(_not_from_us)


def quote_columns(columns: Sequence[str]) -> str:
    return ",".join(f'"{c}"' for c in columns)


class SupabaseSink(DictRows):
    """Writes and reads tables through PostgREST with the service role key."""

    name = "supabase"

    def __init__(
        self,
        url: str,
        key: str,
        *,
        schema: str = "public",
        request_timeout_s: float = 10.0,
        service_key: bool = True,
    ) -> None:
        self._base = url.rstrip("/") + "/rest/v1"
        self._key = key
        self._schema = schema
        self._timeout_s = request_timeout_s
        self._service_key = service_key
        self._http: Any = None
        self._conflict: dict[str, str] = {}  # table -> on_conflict, when not "id" (partitioned)

    def _client(self) -> Any:
        if self._http is None:
            import httpx

            client = httpx.Client(
                base_url=self._base,
                headers={
                    "apikey": self._key,
                    "Authorization": f"Bearer {self._key}",
                    "X-Client-Info": CLIENT_INFO,
                    "Accept-Profile": self._schema,
                    "Content-Profile": self._schema,
                },
                timeout=httpx.Timeout(self._timeout_s, connect=min(self._timeout_s, 5.0)),
                transport=transport_factory() if transport_factory is not None else None,
            )
            quiet_client_loggers()  # after the client: its transport imports httpcore (httpx 0.28)
            self._http = client
        return self._http

    def prepare(self) -> None:
        self._client()

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        content: bytes | None = None,
        prefer: str | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        headers = {"Content-Type": "application/json"} if content is not None else {}
        if prefer:
            headers["Prefer"] = prefer
        kwargs: dict[str, Any] = {}
        if timeout_s is not None:
            kwargs["timeout"] = max(min(timeout_s, self._timeout_s), 0.05)
        token = own_request.set(True)
        try:
            response = self._client().request(
                method, path, params=params, content=content, headers=headers, **kwargs
            )
        except Exception as exc:
            raise classify(exc) from exc
        finally:
            own_request.reset(token)
        if response.status_code < 300:
            return response
        raise self._error(response)

    def _error(self, response: Any) -> DeliveryError:
        code, message = str(response.status_code), response.reason_phrase or "error"
        with contextlib.suppress(ValueError, AttributeError):
            body = response.json()
            if isinstance(body, dict):
                code = str(body.get("code") or code)
                message = str(body.get("message") or message)
        return classify_response(
            code,
            message,
            response.status_code,
            response.headers.get("retry-after"),
            service_key=self._service_key,
        )

    def write(
        self,
        table: str,
        rows: Sequence[bytes],
        *,
        merge: bool,
        columns: Sequence[str],
        timeout_s: float | None = None,
    ) -> None:
        """Upsert rows given as JSON objects: new ids inserted; existing ones kept or merged."""
        if not rows:
            return
        resolution = "merge-duplicates" if merge else "ignore-duplicates"
        content = b"[" + b",".join(rows) + b"]"
        for attempt in range(2):
            key = self._conflict.get(table, "id")
            try:
                self._request(
                    "POST",
                    f"/{table}",
                    params=[("on_conflict", key), ("columns", quote_columns(columns))],
                    content=content,
                    prefer=f"return=minimal,resolution={resolution}",
                    timeout_s=timeout_s,
                )
                return
            except DeliveryError as exc:
                wider = _partitioned_key(columns)
                if exc.code != "42P10" or attempt or key != "id" or wider is None:
                    raise
                self._conflict[table] = wider  # a partitioned table: its key has the time too

    def update(
        self,
        table: str,
        row_id: str,
        values: bytes,
        *,
        only_if: tuple[str, str],
        timeout_s: float | None = None,
    ) -> None:
        """``table(t).update(values).eq("id", row_id).eq(*only_if)``, returning nothing."""
        column, value = only_if
        self._request(
            "PATCH",
            f"/{table}",
            params=[("id", f"eq.{row_id}"), (column, f"eq.{value}")],
            content=_without_id(values),
            prefer="return=minimal",
            timeout_s=timeout_s,
        )

    def select(
        self,
        table: str,
        *,
        filters: list[Filter] | None = None,
        order: list[tuple[str, bool]] | None = None,
        limit: int | None = None,
        columns: str = "*",
    ) -> list[dict[str, Any]]:
        params: list[tuple[str, str]] = [("select", columns)]
        for column, op, value in filters or []:
            params.append((column, _filter_value(op, value)))
        if order:
            params.append(("order", ",".join(f"{c}.{'desc' if d else 'asc'}" for c, d in order)))
        if limit is not None:
            params.append(("limit", str(int(limit))))
        data = self._request("GET", f"/{table}", params=params).json()
        return list(data or [])

    def rpc(self, function: str, params: dict[str, Any] | None = None) -> Any:
        """Call a database function (``POST /rpc/<name>``) and return its JSON result."""
        body = json.dumps(params or {}, ensure_ascii=False).encode("utf-8")
        response = self._request("POST", f"/rpc/{function}", content=body)
        return response.json() if response.content else None

    def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            token = own_request.set(True)
            try:
                with contextlib.suppress(Exception):
                    http.close()
            finally:
                own_request.reset(token)


def _without_id(values: bytes) -> bytes:
    row = json.loads(values)
    row.pop("id", None)
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _filter_value(op: str, value: Any) -> str:
    if op == "not_null":
        return "not.is.null"
    if op == "in":
        return "in.(" + ",".join(_quote(v) for v in value) + ")"
    return f"{op}.{_text(value)}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _quote(value: Any) -> str:
    text = _text(value)
    if any(ch in text for ch in ',()"\\ ') or text == "":
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _partitioned_key(columns: Sequence[str]) -> str | None:
    """The key of this project's partitioned tables (``migrate --partitioned``): the id and
    the partition column, ``timestamp`` for logs and ``created_at`` for calls."""
    for time_column in ("timestamp", "created_at"):
        if time_column in columns:
            return f"id,{time_column}"
    return None
