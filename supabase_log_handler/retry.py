"""Retrying one delivery, and the circuit breaker that stops retry storms.

Retry is composed from tenacity's small strategies: retry only TransientError;
wait exponentially with jitter but never less than the server's Retry-After;
stop at a deadline or as soon as shutdown begins (the sleep itself wakes on that
event). When a delivery has used up its retries the breaker opens: the worker
sends everything straight to the spool, and the sender probes the backend every
``probe_interval_s`` (doubling up to a ceiling) until one request succeeds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import TransientError

T = TypeVar("T")


def _wait_retry_after(fallback: Any, cap_s: float) -> Any:
    """The fallback wait, or the server's Retry-After when that is longer (capped)."""
    from tenacity import RetryCallState
    from tenacity.wait import wait_base

    class wait_retry_after(wait_base):
        def __call__(self, retry_state: RetryCallState) -> float:
            wait = float(fallback(retry_state))
            outcome = retry_state.outcome
            exc = outcome.exception() if outcome is not None else None
            hinted = getattr(exc, "retry_after_s", None)
            if hinted is not None:
                wait = max(wait, min(float(hinted), cap_s))
            return wait

    return wait_retry_after()


def preload() -> None:
    """Import tenacity now (its import takes ``logging``'s module lock; see Sender._prepare)."""
    import tenacity  # noqa: F401


def call_with_retry(
    fn: Callable[[], T],
    *,
    deadline_s: float,
    max_wait_s: float,
    abort: threading.Event,
    on_retry: Callable[[BaseException | None], None] = lambda exc: None,
) -> T:
    """``fn()``, retried on TransientError until ``deadline_s`` or ``abort`` is set.

    The first attempt runs without tenacity, so a healthy backend never pays for
    importing it; after a failure the first wait honours ``Retry-After``.
    """
    started = time.monotonic()
    try:
        return fn()
    except TransientError as exc:
        if abort.is_set() or deadline_s <= 0:
            raise
        on_retry(exc)
        hinted = exc.retry_after_s or 0.0
        first_wait = min(max(hinted, 0.1), max(max_wait_s, deadline_s))
        if time.monotonic() - started + first_wait >= deadline_s:
            raise
        if abort.wait(first_wait):
            raise
    remaining = deadline_s - (time.monotonic() - started)
    from tenacity import (  # imported here: only once something failed
        RetryCallState,
        Retrying,
        retry_if_exception_type,
        sleep_using_event,
        stop_after_delay,
        stop_when_event_set,
        wait_exponential_jitter,
    )

    def before_sleep(state: RetryCallState) -> None:
        on_retry(state.outcome.exception() if state.outcome else None)

    retrying = Retrying(
        retry=retry_if_exception_type(TransientError),
        wait=_wait_retry_after(
            _backoff(wait_exponential_jitter, max_wait_s), cap_s=max(max_wait_s, deadline_s)
        ),
        stop=stop_after_delay(max(remaining, 0.0)) | stop_when_event_set(abort),
        sleep=sleep_using_event(abort),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(fn)


def _backoff(factory: Any, max_wait_s: float) -> Any:
    """Exponential backoff from 0.1 s with jitter (tenacity renamed ``initial`` to ``multiplier``)."""
    try:
        return factory(multiplier=0.1, max=max_wait_s, jitter=max_wait_s / 4)
    except TypeError:
        return factory(initial=0.1, max=max_wait_s, jitter=max_wait_s / 4)


class Breaker:
    """Open after a delivery fails for good; half-open when a probe is due."""

    def __init__(self, *, probe_interval_s: float, max_probe_interval_s: float = 30.0) -> None:
        self.base_interval_s = probe_interval_s
        self.max_interval_s = max(max_probe_interval_s, probe_interval_s)
        self._lock = threading.Lock()
        self._open = False
        self._interval_s = probe_interval_s
        self._next_probe = 0.0
        self._last_attempt = 0.0
        self.needs_person = False  # a setup error: only the probe schedule may retry it
        self.parked = False  # a configuration mistake: never probed in this process
        self.reason: str | None = None

    @property
    def is_open(self) -> bool:
        return self._open

    def trip(self, reason: str, *, at_least_s: float = 0.0, needs_person: bool = False) -> None:
        """Open (or stay open) and schedule the next probe."""
        with self._lock:
            self.needs_person = needs_person
            self._last_attempt = time.monotonic()
            if self._open:
                self._interval_s = min(self._interval_s * 2, self.max_interval_s)
            else:
                self._interval_s = self.base_interval_s
            self._open = True
            self.reason = reason
            self._next_probe = time.monotonic() + max(self._interval_s, at_least_s)

    def park(self, reason: str) -> None:
        """Open for good: nothing is sent until a person fixes the setup (a new process)."""
        with self._lock:
            self._open = True
            self.needs_person = True
            self.parked = True
            self.reason = reason
            self._next_probe = float("inf")

    def probe_due(self) -> bool:
        return self._open and time.monotonic() >= self._next_probe

    def early_probe_allowed(self) -> bool:
        """May flush() try now, ahead of schedule? Not for setup errors, and not more than
        once per base interval, so a job calling flush() often cannot cause a retry storm."""
        return (
            self._open
            and not self.needs_person
            and time.monotonic() - self._last_attempt >= self.base_interval_s
        )

    def seconds_to_probe(self) -> float:
        return max(self._next_probe - time.monotonic(), 0.0) if self._open else 0.0

    def reset(self) -> None:
        with self._lock:
            if self.parked:
                return
            self._open = False
            self.needs_person = False
            self._interval_s = self.base_interval_s
            self.reason = None


def describe(exc: BaseException | Any) -> str:
    return f"{type(exc).__name__}: {exc}"


__all__ = ["Breaker", "call_with_retry", "describe"]
