"""The handlers the benchmark compares, each with its network faked at the lowest seam.

Used inside the benchmark's child processes (``_subject.py`` and the start-up
children), never by the package. Every subject reports what reached its fake
network (or, for the real gateway, what the gateway accepted) to a
:class:`Delivery`, so the child knows when everything it logged was delivered.

* ``null``: ``logging.NullHandler``.
* ``queue``: ``QueueHandler`` + ``QueueListener``; the listener's handler encodes
  each record as JSON and writes it to ``/dev/null`` (one system call a record,
  the equivalent of a network write).
* ``otel``: OpenTelemetry's ``LoggingHandler`` + ``BatchLogRecordProcessor`` +
  the OTLP/HTTP log exporter; its ``requests`` session has a transport adapter
  that answers 200.
* ``watchtower``: ``CloudWatchLogHandler`` on a real boto3 ``logs`` client whose
  HTTP session (botocore's ``Endpoint.http_session``) answers what CloudWatch Logs
  answers to CreateLogGroup, CreateLogStream and PutLogEvents.
* ``supabase-fake``: ``SupabaseHandler`` whose httpx transport is an
  ``httpx.MockTransport`` answering 201 with an empty body to POSTs (204 to PATCH
  and DELETE, ``[]`` to GET); everything above the transport is real.
* ``supabase-gateway``: ``SupabaseHandler`` talking to the real gateway and
  PostgreSQL; its transport is wrapped only to count accepted rows.

How the fake reaches SupabaseHandler: when ``supabase_log_handler.sinks.rest``
exists, its ``transport_factory`` global is set; otherwise ``httpx.Client.__init__``
is patched in this process so that ``transport=`` defaults to the fake.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import logging.handlers
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

#: Counted once per row in a ``POST .../logs`` body (every logs row carries it).
ROW_MARKER = b'"run_id"'
#: Counted once per event in a PutLogEvents body.
EVENT_MARKER = b'"timestamp"'


class Delivery:
    """How many records reached the (fake or real) backend, and when the last one did."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reached = threading.Condition(self._lock)
        self.count = 0
        self.last_ns = 0
        self.requests = 0
        self.sizes: Counter[int] = Counter()  # requests (or batches handed over) by records in them

    def add(self, n: int) -> None:
        with self._lock:
            self.count += n
            self.requests += 1
            self.sizes[n] += 1
            self.last_ns = time.perf_counter_ns()
            self._reached.notify_all()

    def snapshot(self) -> tuple[int, int, Counter[int]]:
        """``(count, requests, sizes)`` at one instant."""
        with self._lock:
            return self.count, self.requests, Counter(self.sizes)

    def wait_for(
        self,
        target: int,
        timeout_s: float,
        idle_s: float,
        dropped: Callable[[], int] = lambda: 0,
    ) -> bool:
        """Block until ``count + dropped() >= target`` (``dropped``: what the handler itself
        reports as dropped, which will never arrive). Gives up after ``timeout_s``, or after
        ``idle_s`` without progress (records that vanish without being counted)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self.count + dropped() < target:
                before = self.count
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._reached.wait(min(1.0, idle_s, remaining))
                idle_ns = time.perf_counter_ns() - self.last_ns
                if self.count == before and idle_ns > idle_s * 1e9:
                    return self.count + dropped() >= target
            return True


class Subject:
    """One handler on its logger, plus how to flush and close it."""

    def __init__(
        self,
        handler: logging.Handler,
        flush: Callable[[], object],
        close: Callable[[], object],
        info: dict[str, Any] | None = None,
    ) -> None:
        self.handler = handler
        self.flush = flush
        self.close = close
        self.info = info or {}


# --------------------------------------------------------------------------- stdlib


def null_subject(delivery: Delivery, **_: Any) -> Subject:
    """NullHandler delivers nothing: a record counts as delivered when its call returns."""
    return Subject(logging.NullHandler(), lambda: None, lambda: None, {"delivered_on_return": True})


class _DevNullWriter(logging.Handler):
    """The listener's handler: JSON-encodes each record and writes it to /dev/null."""

    def __init__(self, delivery: Delivery) -> None:
        super().__init__()
        self.delivery = delivery
        self.fd = os.open(os.devnull, os.O_WRONLY)

    def emit(self, record: logging.LogRecord) -> None:
        data = json.dumps(
            {
                "ts": record.created,
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
                "meta": getattr(record, "meta", None),
            },
            default=str,
        ).encode()
        os.write(self.fd, data)
        self.delivery.add(1)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        super().close()


def queue_subject(delivery: Delivery, **_: Any) -> Subject:
    q: queue.Queue[Any] = queue.Queue(-1)
    writer = _DevNullWriter(delivery)
    listener = logging.handlers.QueueListener(q, writer)
    listener.start()

    def close() -> None:
        listener.stop()
        writer.close()

    return Subject(logging.handlers.QueueHandler(q), lambda: None, close)


# --------------------------------------------------------------------------- OpenTelemetry


def otel_subject(delivery: Delivery, **_: Any) -> Subject:
    import requests
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from requests.adapters import BaseAdapter
    from requests.structures import CaseInsensitiveDict

    class OkAdapter(BaseAdapter):
        """requests' transport seam: every export answers 200 with an empty body."""

        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            response = requests.Response()
            response.status_code = 200
            response.reason = "OK"
            response._content = b""
            response.headers = CaseInsensitiveDict({"Content-Type": "application/x-protobuf"})
            response.url = request.url
            response.request = request
            return response

        def close(self) -> None:
            pass

    session = requests.Session()
    session.mount("http://", OkAdapter())
    session.mount("https://", OkAdapter())
    exporter = OTLPLogExporter(endpoint="http://127.0.0.1:4318/v1/logs", session=session)
    export = exporter.export

    def counted_export(batch: Any) -> Any:
        result = export(batch)
        if getattr(result, "name", "") == "SUCCESS":
            delivery.add(len(batch))
        return result

    exporter.export = counted_export  # type: ignore[method-assign]
    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    handler = LoggingHandler(level=logging.NOTSET, logger_provider=provider)
    # force_flush returns when everything queued was exported: what has not arrived then
    # was dropped, so the child need not wait long for it.
    return Subject(
        handler, lambda: provider.force_flush(120_000), provider.shutdown, {"idle_s": 3.0}
    )


# --------------------------------------------------------------------------- watchtower


class _RawBody:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        yield self.body


class _FakeCloudWatchHttp:
    """botocore's HTTP seam (``Endpoint.http_session``): answers like CloudWatch Logs."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.token = 0

    def send(self, request: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        target = request.headers.get("X-Amz-Target", b"")
        target = target.decode() if isinstance(target, bytes) else str(target)
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, bytes):
            body = body.read()
        if target.endswith("PutLogEvents"):
            self.token += 1
            answer = {"nextSequenceToken": f"{self.token:056d}"}
            self.delivery.add(body.count(EVENT_MARKER))
        else:  # CreateLogGroup, CreateLogStream, PutRetentionPolicy, ...
            answer = {}
        headers = {
            "x-amzn-RequestId": "00000000-0000-4000-8000-000000000000",
            "Content-Type": "application/x-amz-json-1.1",
        }
        return AWSResponse(request.url, 200, headers, _RawBody(json.dumps(answer).encode()))

    def close(self) -> None:
        pass


def watchtower_subject(delivery: Delivery, **_: Any) -> Subject:
    import boto3
    import watchtower

    client = boto3.client(
        "logs",
        region_name="us-east-1",
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    )
    client._endpoint.http_session = _FakeCloudWatchHttp(delivery)
    handler = watchtower.CloudWatchLogHandler(
        log_group_name="bench", log_stream_name="bench", boto3_client=client
    )
    return Subject(handler, handler.flush, handler.close, {"idle_s": 3.0})


# --------------------------------------------------------------------------- supabase-log-handler


def _mock_answer(request: Any) -> Any:
    import httpx

    if request.method == "POST":
        return httpx.Response(201, content=b"")
    if request.method in ("PATCH", "DELETE"):
        return httpx.Response(204, content=b"")
    return httpx.Response(200, content=b"[]", headers={"Content-Type": "application/json"})


def counting_transport(inner: Any, delivery: Delivery) -> Any:
    """``inner`` (an httpx transport), counting the rows of every accepted POST to logs."""
    import httpx

    class Counting(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = inner.handle_request(request)
            if (
                request.method == "POST"
                and request.url.path.endswith("/logs")
                and 200 <= response.status_code < 300
            ):
                delivery.add(request.content.count(ROW_MARKER))
            return response

        def close(self) -> None:
            inner.close()

    return Counting()


def inject_supabase_transport(delivery: Delivery, *, fake: bool) -> str:
    """Put the counting (and, with ``fake``, mock) transport under SupabaseHandler's client.
    Returns how: ``"sinks.rest.transport_factory"`` or ``"httpx.Client.__init__"``."""
    import httpx

    try:
        rest: Any = importlib.import_module("supabase_log_handler.sinks.rest")
    except ImportError:
        rest = None
    if rest is not None and hasattr(rest, "transport_factory") and fake:
        rest.transport_factory = lambda: counting_transport(
            httpx.MockTransport(_mock_answer), delivery
        )
        return "sinks.rest.transport_factory"
    original = httpx.Client.__init__

    def patched(self: httpx.Client, *args: Any, **kwargs: Any) -> None:
        if fake:
            kwargs.setdefault("transport", httpx.MockTransport(_mock_answer))
        original(self, *args, **kwargs)
        self._transport = counting_transport(self._transport, delivery)

    httpx.Client.__init__ = patched  # type: ignore[method-assign]
    return "httpx.Client.__init__"


def supabase_subject(
    delivery: Delivery,
    *,
    fake: bool,
    url: str,
    key: str,
    spool_path: str,
    max_queue_rows: int | None = None,
    script_name: str = "bench",
    **_: Any,
) -> Subject:
    how = inject_supabase_transport(delivery, fake=fake)
    from supabase_log_handler import SupabaseHandler, start_run

    settings: dict[str, Any] = {}
    if max_queue_rows is not None:
        settings["max_queue_rows"] = max_queue_rows
    handler = SupabaseHandler(
        url=url,
        key=key,
        spool_path=spool_path,
        install_signal_handlers=False,
        capture_uncaught=False,
        script_name=script_name,
        **settings,
    )
    run = start_run(script_name)

    def close() -> None:
        run.finish()
        handler.close(30.0)

    return Subject(
        handler,
        lambda: handler.flush(600.0),
        close,
        {
            "injected_via": how,
            "stats": handler.stats,
            "dropped": lambda: count_dropped(handler.stats().get("dropped")),
            "run_id": str(run.id),
        },
    )


def count_dropped(value: Any) -> int:
    """A ``stats()["dropped"]`` figure as one number (an int, or counts by level/reason)."""
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return sum(count_dropped(v) for v in value.values())
    return 0


SUBJECTS: dict[str, Callable[..., Subject]] = {
    "null": null_subject,
    "queue": queue_subject,
    "otel": otel_subject,
    "watchtower": watchtower_subject,
    "supabase-fake": lambda delivery, **kw: supabase_subject(delivery, fake=True, **kw),
    "supabase-gateway": lambda delivery, **kw: supabase_subject(delivery, fake=False, **kw),
}

LABELS = {
    "null": "logging.NullHandler",
    "queue": "stdlib QueueHandler + QueueListener",
    "otel": "OpenTelemetry BatchLogRecordProcessor (OTLP/HTTP)",
    "watchtower": "watchtower (CloudWatch Logs)",
    "supabase-fake": "supabase-log-handler, fake transport",
    "supabase-gateway": "supabase-log-handler -> gateway -> PostgreSQL",
}
