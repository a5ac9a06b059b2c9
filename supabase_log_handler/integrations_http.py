"""Recording HTTP calls automatically: an httpx transport wrapper and a requests adapter.

``instrument_httpx(client, service=...)`` wraps the transports of an ``httpx.Client``
or ``httpx.AsyncClient``; ``instrument_requests(session, service=...)`` wraps the
adapters of a ``requests.Session`` (``requests`` is imported only here, and only
then). Below the client, they see every attempt, timeouts and refused connections
included. Each request records its method, host and path (a bot token in the path and
secrets in the query masked), the status, the duration and the error, as one
``integration_logs`` row written when it ends (``integrations.Call``); inside an open
call of the same service (``with record_call(...)``) the attempts update that call's
row instead: an attempt after a failed one marks it ``retrying``.

Bodies and headers are recorded only with ``record_payloads=True``, capped at
``max_payload_bytes``; a response body is captured while the application reads it,
so streaming is untouched.
"""

from __future__ import annotations

import functools
import json
import re
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlsplit

from ._redact import MASK
from .call_values import describe_error
from .integrations import Call, current_call

if TYPE_CHECKING:
    import httpx

    from .handler import SupabaseHandler

# Query keys masked here even though the redactor would keep them (it masks api_key, token, ...).
_QUERY_SECRETS = frozenset({"key", "sig", "signature", "code", "hash"})
_BOT_TOKEN = re.compile(r"/bot\d+:[A-Za-z0-9_-]+")  # Telegram: /bot<id>:<token>/sendMessage


class Recorder:
    """What one instrumented client records, and where (settings of ``instrument_*``)."""

    def __init__(
        self, *, service: str, action: str | None, record_payloads: bool,
        max_payload_bytes: int, handler: SupabaseHandler | None,
    ) -> None:  # fmt: skip
        if not isinstance(service, str) or not service.strip():
            raise ValueError("instrument: service must be a non-empty name, e.g. 'amocrm'")
        if type(max_payload_bytes) is not int or max_payload_bytes < 0:
            raise ValueError("instrument: max_payload_bytes must be an int >= 0")
        self.service = service.strip()
        self.action = action
        self.record_payloads = record_payloads
        self.max_payload_bytes = max_payload_bytes
        self.handler = handler

    def begin(self, method: str, url: str, headers: Any, body: bytes | None) -> Attempt:
        """Start recording one attempt (never raises)."""
        started = time.monotonic()
        try:
            info, path = self._request_info(method, url, headers, body)
            open_call = current_call()
            if (
                open_call is not None
                and not open_call.finished
                and open_call.service == self.service
            ):
                open_call.attempt_begins(info)
                return Attempt(self, open_call, owned=False, started=started)
            call = Call(
                self.service, self.action or f"{method} {path}", request=info,
                handler=self.handler, max_payload_bytes=self.max_payload_bytes,
            )  # fmt: skip
            return Attempt(self, call, owned=True, started=started)
        except Exception:  # recording never breaks the request: this one goes unrecorded
            return Attempt(self, None, owned=False, started=started)

    def _request_info(
        self, method: str, url: str, headers: Any, body: bytes | None
    ) -> tuple[dict[str, Any], str]:
        parts = urlsplit(url)
        path = _BOT_TOKEN.sub("/bot" + MASK, parts.path or "/")
        info: dict[str, Any] = {"method": method, "url": f"{parts.scheme}://{parts.hostname}"
                                + (f":{parts.port}" if parts.port else "") + path}  # fmt: skip
        if parts.query:
            info["query"] = {k: MASK if k.lower() in _QUERY_SECRETS else v
                             for k, v in parse_qsl(parts.query, keep_blank_values=True)}  # fmt: skip
        if self.record_payloads:
            info["headers"] = dict(headers.items()) if headers is not None else {}
            if body:
                info["body"] = body_value(body, None, len(body), self.max_payload_bytes)
        return info, path


class Attempt:
    """One HTTP attempt being recorded; ``done`` or ``failed`` settles it (first one wins)."""

    def __init__(
        self, recorder: Recorder, call: Call | None, *, owned: bool, started: float
    ) -> None:
        self.recorder = recorder
        self.call: Any = call
        self.owned = owned  # the attempt's own call (no call was open): finish it
        if call is not None and owned:
            call._t0 = started
        self._settled = call is None  # nothing to record
        self.captured = bytearray()
        self.total_bytes = 0

    def capture(self, chunk: bytes) -> None:
        self.total_bytes += len(chunk)
        room = self.recorder.max_payload_bytes + 1 - len(self.captured)
        if room > 0:
            self.captured += chunk[:room]

    def done(self, status: int, reason: str, headers: Any, body: Any = None) -> None:
        if self._settled:
            return
        self._settled = True
        try:
            info: dict[str, Any] = {"status": status}
            if self.recorder.record_payloads:
                info["headers"] = dict(headers.items()) if headers is not None else {}
                if body is not None:
                    info["body"] = body
            failure = (str(status), f"HTTP {status} {reason}".strip()) if status >= 400 else None
            if not self.owned:
                self.call.attempt_ended(failure, info)
                return
            self.call.response = info
            if failure is None:
                self.call.succeed()
            else:
                self.call.fail(failure[1], code=failure[0])
        except Exception:  # recording never breaks the request
            pass

    def failed(self, exc: BaseException) -> None:
        if self._settled:
            return
        self._settled = True
        try:
            if self.owned:
                self.call.fail(exc)
            else:
                self.call.attempt_ended(describe_error(exc), None)
        except Exception:
            pass

    def body(self, headers: Any) -> Any:
        """The captured response body (None when payloads are off or there was none)."""
        if not self.recorder.record_payloads or not self.total_bytes:
            return None
        encoding = (headers.get("content-encoding") or "").lower() if headers is not None else ""
        return body_value(
            bytes(self.captured), encoding, self.total_bytes, self.recorder.max_payload_bytes
        )


def body_value(raw: bytes, encoding: str | None, total_bytes: int, max_bytes: int) -> Any:
    """A body as JSON if it parses, else text; a cut one as the truncation marker."""
    if encoding in ("gzip", "deflate", "x-gzip"):
        try:
            raw = zlib.decompressobj(47).decompress(raw, max_bytes + 1)  # 47: gzip or zlib header
        except zlib.error:
            return {"encoding": encoding, "bytes": total_bytes}
    elif encoding and encoding != "identity":
        return {"encoding": encoding, "bytes": total_bytes}
    if total_bytes <= max_bytes and len(raw) <= max_bytes:
        text = raw.decode("utf-8", "replace")
        try:
            return json.loads(text)
        except ValueError:
            return text
    return {"truncated": True, "bytes": total_bytes,
            "text": raw[:max_bytes].decode("utf-8", "ignore")}  # fmt: skip


# -- httpx ------------------------------------------------------------------------------
def instrument_httpx(
    client: httpx.Client | httpx.AsyncClient, *, service: str, action: str | None = None,
    record_payloads: bool = False, max_payload_bytes: int = 4096,
    handler: SupabaseHandler | None = None,
) -> httpx.Client | httpx.AsyncClient:  # fmt: skip
    """Record every request ``client`` sends as a call to ``service``; returns the client.

    ``action`` names the calls (default ``"<METHOD> <path>"``). Instrumenting a client
    again replaces its settings.
    """
    import httpx

    recorder = Recorder(service=service, action=action, record_payloads=record_payloads,
                        max_payload_bytes=max_payload_bytes, handler=handler)  # fmt: skip
    if not hasattr(client, "_transport") or not hasattr(client, "_mounts"):
        raise TypeError(
            "instrument_httpx needs an httpx.Client or httpx.AsyncClient (httpx >= 0.20)"
        )
    is_async = isinstance(client, httpx.AsyncClient)
    wrap = functools.partial(_wrap_async if is_async else _wrap_sync, recorder=recorder)
    client._transport = wrap(client._transport)
    client._mounts = {
        pattern: None if t is None else wrap(t) for pattern, t in client._mounts.items()
    }
    return client


def _wrap_sync(transport: Any, *, recorder: Recorder) -> Any:
    cls = _httpx_classes()[0]
    return cls(_unwrapped(transport, cls), recorder)


def _wrap_async(transport: Any, *, recorder: Recorder) -> Any:
    cls = _httpx_classes()[1]
    return cls(_unwrapped(transport, cls), recorder)


def _unwrapped(layer: Any, cls: type) -> Any:
    """What an instrumented transport or adapter wraps (instrumenting twice replaces)."""
    return cast(Any, layer).inner if isinstance(layer, cls) else layer


@functools.cache
def _httpx_classes() -> tuple[type, type]:
    """The transport wrappers, made on first use so that importing the package never imports httpx."""
    import httpx

    class RecordingTransport(httpx.BaseTransport):
        """Records each request handled by ``inner``."""

        def __init__(self, inner: httpx.BaseTransport, recorder: Recorder) -> None:
            self.inner = inner
            self.recorder = recorder

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            attempt = self.recorder.begin(request.method, str(request.url), request.headers,
                                          _request_body(request))  # fmt: skip
            try:
                response = self.inner.handle_request(request)
            except BaseException as exc:
                attempt.failed(exc)
                raise
            response.stream = SyncStream(response, attempt)
            return response

        def close(self) -> None:
            self.inner.close()

    class AsyncRecordingTransport(httpx.AsyncBaseTransport):
        """Records each request handled by ``inner``."""

        def __init__(self, inner: httpx.AsyncBaseTransport, recorder: Recorder) -> None:
            self.inner = inner
            self.recorder = recorder

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            attempt = self.recorder.begin(request.method, str(request.url), request.headers,
                                          _request_body(request))  # fmt: skip
            try:
                response = await self.inner.handle_async_request(request)
            except BaseException as exc:
                attempt.failed(exc)
                raise
            response.stream = AsyncStream(response, attempt)
            return response

        async def aclose(self) -> None:
            await self.inner.aclose()

    class SyncStream(httpx.SyncByteStream):
        """The response's bytes, seen as the client reads them; the attempt ends at close."""

        def __init__(self, response: httpx.Response, attempt: Attempt) -> None:
            self.inner: Any = response.stream
            self.response = response
            self.attempt = attempt

        def __iter__(self) -> Iterator[bytes]:
            try:
                for chunk in self.inner:
                    self.attempt.capture(chunk)
                    yield chunk
            except BaseException as exc:
                self.attempt.failed(exc)
                raise

        def close(self) -> None:
            try:
                self.inner.close()
            finally:
                _done(self.response, self.attempt)

    class AsyncStream(httpx.AsyncByteStream):
        """The async form of ``SyncStream``."""

        def __init__(self, response: httpx.Response, attempt: Attempt) -> None:
            self.inner: Any = response.stream
            self.response = response
            self.attempt = attempt

        async def __aiter__(self) -> AsyncIterator[bytes]:
            try:
                async for chunk in self.inner:
                    self.attempt.capture(chunk)
                    yield chunk
            except BaseException as exc:
                self.attempt.failed(exc)
                raise

        async def aclose(self) -> None:
            try:
                await self.inner.aclose()
            finally:
                _done(self.response, self.attempt)

    return RecordingTransport, AsyncRecordingTransport


def _request_body(request: httpx.Request) -> bytes | None:
    try:
        return request.content  # raises RequestNotRead for a streamed upload: not recorded
    except Exception:
        return None


def _done(response: httpx.Response, attempt: Attempt) -> None:
    headers = response.headers
    attempt.done(response.status_code, response.reason_phrase, headers, attempt.body(headers))


# -- requests ---------------------------------------------------------------------------
def instrument_requests(
    session: Any, *, service: str, action: str | None = None, record_payloads: bool = False,
    max_payload_bytes: int = 4096, handler: SupabaseHandler | None = None,
) -> Any:  # fmt: skip
    """Record every request ``session`` (a ``requests.Session``) sends as a call to
    ``service``; returns the session. Instrumenting it again replaces its settings."""
    recorder = Recorder(service=service, action=action, record_payloads=record_payloads,
                        max_payload_bytes=max_payload_bytes, handler=handler)  # fmt: skip
    adapters = getattr(session, "adapters", None)
    if not isinstance(adapters, dict) or not hasattr(session, "mount"):
        raise TypeError("instrument_requests needs a requests.Session")
    cls = _adapter_class()
    for prefix, adapter in list(adapters.items()):
        session.mount(prefix, cls(_unwrapped(adapter, cls), recorder))
    return session


@functools.cache
def _adapter_class() -> type:
    import requests

    class RecordingAdapter(requests.adapters.BaseAdapter):
        """Records each request sent by ``inner``."""

        def __init__(self, inner: requests.adapters.BaseAdapter, recorder: Recorder) -> None:
            super().__init__()
            self.inner = inner
            self.recorder = recorder

        def send(
            self, request: requests.PreparedRequest, stream: bool = False,
            timeout: Any = None, verify: Any = True, cert: Any = None, proxies: Any = None,
        ) -> requests.Response:  # fmt: skip
            body = request.body.encode("utf-8") if isinstance(request.body, str) else request.body
            attempt = self.recorder.begin(
                request.method or "GET", request.url or "", request.headers,
                body if isinstance(body, bytes) else None,
            )  # fmt: skip
            try:
                response = self.inner.send(request, stream=stream, timeout=timeout,
                                           verify=verify, cert=cert, proxies=proxies)  # fmt: skip
                content = None
                if self.recorder.record_payloads and not stream:
                    content = response.content  # read now; the session reuses it
                    attempt.capture(content)
            except BaseException as exc:
                attempt.failed(exc)
                raise
            attempt.done(response.status_code, response.reason or "", response.headers,
                         None if content is None else attempt.body(None))  # fmt: skip
            return response

        def close(self) -> None:
            self.inner.close()

    return RecordingAdapter
