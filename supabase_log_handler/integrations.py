"""Recording calls to external services: one ``integration_logs`` row per logical call.

``record_call`` returns a :class:`Call`, used as a context manager, a decorator (a
fresh call per invocation, ``async def`` too) or a plain object. Its row moves
``pending -> retrying -> success | failed`` in place, by a client-made id: the first
state is queued as an insert, every later one as a merge, so a retried batch, a
replayed spool or a repeated ``push`` never adds a second row, and the database's
trigger ``integration_logs_state_order`` keeps a late, older state from replacing a
newer one. Rows go through ``SupabaseHandler.submit_row`` on every live handler (or
the one given; ``call_route.py``), so they ride the same queue, spool and replay
as log rows; building one is CPU only and never raises into the job.

Payloads are made JSON-safe (``_jsonsafe``), masked by each handler's redactor
(authorization headers, tokens, passwords, the service key) and then capped at
``max_payload_bytes`` with a marker: ``{"truncated": true, "bytes": n, "text": ...}``.
The current call lives in a context variable, so the HTTP instrumentation
(``integrations_http.py``) and the tenacity hook (``call_before_sleep``) update its
row instead of making their own.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
import inspect
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import _jsonsafe, call_route, runs
from ._ids import new_id
from .call_values import (
    clamp_int,
    code_of,
    describe_error,
    entity_of,
    http_payload,
    http_status,
    name_of,
    prepared_payload,
    reason_of,
)
from .local_integration import CALL_COLUMNS

if TYPE_CHECKING:
    from ._redact import Redactor
    from .handler import SupabaseHandler

F = TypeVar("F", bound=Callable[..., Any])

TABLE_KEY = "integration_logs"  # the handler maps it to the integration_logs_table setting
_UNSET: Any = object()

_current: contextvars.ContextVar[Call | None] = contextvars.ContextVar(
    "supabase_log_current_call", default=None
)


def current_call() -> Call | None:
    """The call open in this context (inside ``with record_call(...)`` or a decorated function)."""
    return _current.get()


class Call:
    """One logical call: a context manager, a decorator, or an object finished by hand.

    ``with record_call(...) as call:`` queues the ``pending`` row at once; leaving the
    block writes ``success``, or ``failed`` with the exception's (or the HTTP status')
    code and message. ``call.response = ...`` or ``call.succeed(response)``,
    ``call.fail(error, code=...)``, ``call.retrying(attempt, error)`` move it by hand;
    a finished call ignores further changes.

    ``entity``: ``("lead", lead_id)`` or just ``"lead"``. ``run``: the run to link
    (default: the current one, else the process's implicit run). ``handler``: write
    through this handler only (default: every live one; one is installed when there is
    none). ``record_payloads=False`` stores no request or response payload.
    """

    def __init__(
        self,
        service: str,
        action: str,
        *,
        entity: tuple[str, Any] | str | None = None,
        request: Any = None,
        run: runs.Run | str | None = None,
        handler: SupabaseHandler | None = None,
        record_payloads: bool = True,
        max_payload_bytes: int = 16384,
    ) -> None:
        if not isinstance(service, str) or not service.strip():
            raise ValueError("record_call: service must be a non-empty name, e.g. 'amocrm'")
        if not isinstance(action, str) or not action.strip():
            raise ValueError("record_call: action must be a non-empty name, e.g. 'sync_lead'")
        if type(max_payload_bytes) is not int or max_payload_bytes < 0:
            raise ValueError("record_call: max_payload_bytes must be an int >= 0")
        self.id = new_id()
        self.service = name_of(service)
        self.action = name_of(action)
        self.entity_type, self.entity_id = entity_of(entity)
        self.status = "pending"
        self.retry_count = 0
        self.error_message: str | None = None
        self.error_code: str | None = None
        self.duration_ms: int | None = None
        self.run_id: str | None = None
        self.record_payloads = record_payloads
        self.max_payload_bytes = max_payload_bytes
        self._run = run
        self._handler = handler
        self._request: Any = None
        self._response: Any = None
        self._response_status: int | None = None  # an HTTP response given as the response
        self._response_reason = ""
        self._response_given = False  # by the job (or a decorated function's result)
        self._prepared: dict[tuple[str, int], Any] = {}
        self._t0 = time.monotonic()
        self.created_at = dt.datetime.now(dt.timezone.utc)
        self._started = False
        self._targets: list[SupabaseHandler] = []
        self._tokens: list[contextvars.Token[Call | None]] = []
        self._lock = threading.RLock()
        self._attempts = 0  # HTTP attempts seen by the instrumentation inside this call
        self._last_failure: tuple[str | None, str] | None = None
        if request is not None:
            self.request = request

    # -- payloads ----------------------------------------------------------------------
    @property
    def request(self) -> Any:
        """The request payload as it will be stored (JSON-safe, before masking and cap)."""
        return self._request

    @request.setter
    def request(self, value: Any) -> None:
        if self.record_payloads:
            self._request = _jsonsafe.to_jsonable(value)
            self._forget_prepared("request")

    @property
    def response(self) -> Any:
        """The response payload; an HTTP response object is stored as ``{"status", "body"}``."""
        return self._response

    @response.setter
    def response(self, value: Any) -> None:
        status = http_status(value)
        self._response_given = True
        self._response_status = status
        self._response_reason = reason_of(value) if status is not None else ""
        if self.record_payloads:
            self._response = _jsonsafe.to_jsonable(http_payload(value) if status else value)
            self._forget_prepared("response")

    def _forget_prepared(self, which: str) -> None:
        for key in [k for k in self._prepared if k[0] == which]:
            del self._prepared[key]

    # -- states ------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.status in ("success", "failed")

    def start(self) -> Call:
        """Queue the ``pending`` row now and start the clock (``with`` does this); idempotent."""
        with self._lock:
            if not self._started:
                self._begin()
                self._submit(merge=False)
        return self

    def succeed(self, response: Any = _UNSET) -> Call:
        """Finish as ``success`` (whatever an HTTP status says), with ``response`` if given."""
        with self._lock:
            if response is not _UNSET:
                self.response = response
            self._finish("success", None, None)
        return self

    def fail(
        self, error: BaseException | str | None = None, *, code: str | int | None = None,
        response: Any = _UNSET,
    ) -> Call:  # fmt: skip
        """Finish as ``failed``: message and code from ``error`` (an exception or a text)
        unless ``code`` is given."""
        with self._lock:
            if response is not _UNSET:
                self.response = response
            found_code, message = describe_error(error) if error is not None else (None, None)
            self._finish("failed", code_of(code) if code is not None else found_code, message)
        return self

    def retrying(
        self, attempt: int | None = None, error: BaseException | str | None = None, *,
        code: str | int | None = None,
    ) -> Call:  # fmt: skip
        """Mark the call ``retrying``: ``attempt`` attempts have failed so far (default:
        one more than before), so ``retry_count`` becomes ``attempt``; never lowers it."""
        with self._lock:
            if self.finished:
                return self
            if not self._started:
                self.start()
            count = self.retry_count + 1 if attempt is None else clamp_int(attempt)
            if self.status == "retrying" and count <= self.retry_count:
                return self  # already told (the instrumentation and tenacity both say it)
            if error is not None:
                self.error_code, self.error_message = describe_error(error)
            if code is not None:
                self.error_code = code_of(code)
            self.status = "retrying"
            self.retry_count = max(self.retry_count, count)
            self.duration_ms = self._elapsed_ms()
            self._submit(merge=True)
        return self

    def before_sleep(self, retry_state: Any) -> None:
        """tenacity's ``before_sleep``: ``@retry(before_sleep=call.before_sleep)``."""
        outcome = getattr(retry_state, "outcome", None)
        error: BaseException | str | None = None
        code: str | None = None
        with contextlib.suppress(Exception):
            if outcome is not None and outcome.failed:
                error = outcome.exception()
            elif outcome is not None:
                status = http_status(outcome.result())
                if status is not None:
                    code, error = str(status), f"HTTP {status}"
        attempt = getattr(retry_state, "attempt_number", None)
        self.retrying(attempt if isinstance(attempt, int) else None, error, code=code)

    def _begin(self) -> None:
        self._started = True
        self._t0 = time.monotonic()
        self.created_at = dt.datetime.now(dt.timezone.utc)
        self._resolve()

    def _finish(self, status: str, code: str | None, message: str | None) -> None:
        if self.finished:
            return
        if not self._started:  # finished without a pending row: one row, the final one
            t0, created = self._t0, self.created_at
            self._begin()
            self._t0, self.created_at = t0, created
        self.status = status
        self.error_code, self.error_message = (
            (None, None) if status == "success" else (code, message)
        )
        self.duration_ms = self._elapsed_ms()
        self._submit(merge=True)

    def _elapsed_ms(self) -> int:
        return clamp_int(round((time.monotonic() - self._t0) * 1000))

    # -- the instrumentation's view (integrations_http.py) ------------------------------
    def attempt_begins(self, request_info: dict[str, Any] | None) -> None:
        """An HTTP attempt starts inside this call: after a failed one it is a retry."""
        with self._lock:
            if self.finished:
                return
            if not self._started:
                self.start()
            if self._attempts and self._last_failure is not None:
                code, message = self._last_failure
                self.retrying(self._attempts, message, code=code)
            self._attempts += 1
            if self._request is None and request_info is not None:
                self.request = request_info

    def attempt_ended(
        self, failure: tuple[str | None, str] | None, response_info: dict[str, Any] | None
    ) -> None:
        """An HTTP attempt inside this call ended (``failure``: its code and message)."""
        with self._lock:
            if self.finished:
                return
            self._last_failure = failure
            if response_info is not None and self.record_payloads and not self._response_given:
                self._response = _jsonsafe.to_jsonable(response_info)
                self._forget_prepared("response")

    # -- context manager and decorator --------------------------------------------------
    def __enter__(self) -> Call:
        self.start()
        self._tokens.append(_current.set(self))
        return self

    def __exit__(self, etype: Any, exc: BaseException | None, tb: Any) -> None:
        if self._tokens:
            with contextlib.suppress(ValueError):  # left in another context than entered
                _current.reset(self._tokens.pop())
        with self._lock:
            if self.finished:
                return
            if exc is not None:
                self.fail(exc)
            elif self._response_status is not None and self._response_status >= 400:
                status = self._response_status
                self.fail(f"HTTP {status} {self._response_reason}".strip(), code=status)
            elif self._last_failure is not None:
                code, message = self._last_failure
                self.fail(message, code=code)
            else:
                self.succeed()

    async def __aenter__(self) -> Call:
        return self.__enter__()

    async def __aexit__(self, etype: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(etype, exc, tb)

    def __call__(self, func: F) -> F:
        """Use as a decorator: each invocation is a new call with these settings; the
        function's return value becomes the response unless one was set."""
        template = self
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                with template._clone() as call:
                    result = await func(*args, **kwargs)
                    call._returned(result)
                    return result

            return awrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with template._clone() as call:
                result = func(*args, **kwargs)
                call._returned(result)
                return result

        return wrapper  # type: ignore[return-value]

    def _clone(self) -> Call:
        call = Call(
            self.service, self.action, run=self._run, handler=self._handler,
            record_payloads=self.record_payloads, max_payload_bytes=self.max_payload_bytes,
        )  # fmt: skip
        call.entity_type, call.entity_id = self.entity_type, self.entity_id
        call._request = self._request
        return call

    def _returned(self, result: Any) -> None:
        if result is not None and not self._response_given:
            self.response = result

    # -- rows --------------------------------------------------------------------------
    def _resolve(self) -> None:
        """The handlers to write through and the run to link, fixed when the call starts."""
        self._targets = call_route.targets(self._handler)
        self.run_id = call_route.link_run(self._run, self._targets)

    def row(self, redactor: Redactor | None = None) -> dict[str, Any]:
        """The call's current state as an ``integration_logs`` row (every column, in order)."""
        mask = redactor.text if redactor is not None else str
        values = {
            "id": self.id,
            "service_name": self.service,
            "action": mask(self.action),
            "status": self.status,
            "related_entity_type": self.entity_type,
            "related_entity_id": self.entity_id,
            "request_payload": prepared_payload(
                self._prepared, "request", self._request, redactor, self.max_payload_bytes),
            "response_payload": prepared_payload(
                self._prepared, "response", self._response, redactor, self.max_payload_bytes),
            "error_message": None if self.error_message is None else mask(self.error_message),
            "error_code": None if self.error_code is None else mask(self.error_code),
            "duration_ms": self.duration_ms,
            "retry_count": self.retry_count,
            "created_at": self.created_at.isoformat(),
            "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "run_id": self.run_id,
        }
        return {c: values[c] for c in CALL_COLUMNS}

    def _submit(self, *, merge: bool) -> None:
        call_route.submit(self._targets, TABLE_KEY, self.row, merge=merge, what=self.service)

    def __repr__(self) -> str:
        return f"<Call {self.service}.{self.action} {self.id} {self.status}>"


record_call = Call  # what jobs write: record_call("amocrm", "sync_lead", entity=("lead", lead_id))


def call_before_sleep(retry_state: Any) -> None:
    """tenacity's ``before_sleep`` for the current call: ``@retry(before_sleep=call_before_sleep)``
    inside ``with record_call(...)`` or under ``@record_call(...)``; nothing without one."""
    call = _current.get()
    if call is not None:
        call.before_sleep(retry_state)
