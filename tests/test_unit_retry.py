"""Unit tests of ``supabase_log_handler.retry``: call_with_retry and the circuit Breaker."""

from __future__ import annotations

import threading
import time

import pytest

from supabase_log_handler.errors import DataError, DeliveryError, SetupError, TransientError
from supabase_log_handler.retry import Breaker, call_with_retry

EVENT_DEADLINE_S = 5.0


class Flaky:
    """A callable that raises the given exceptions in turn, then returns "ok"; records call times."""

    def __init__(self, *failures: BaseException, forever: BaseException | None = None) -> None:
        self.failures = list(failures)
        self.forever = forever
        self.calls: list[float] = []
        self.first_call = threading.Event()

    def __call__(self) -> str:
        self.calls.append(time.monotonic())
        self.first_call.set()
        if self.failures:
            raise self.failures.pop(0)
        if self.forever is not None:
            raise self.forever
        return "ok"


# -- call_with_retry ----------------------------------------------------------------------
def test_success_without_retry() -> None:
    """A call that succeeds at once is made once and its value returned."""
    fn = Flaky()
    assert call_with_retry(fn, deadline_s=5, max_wait_s=0.05, abort=threading.Event()) == "ok"
    assert len(fn.calls) == 1


def test_transient_errors_are_retried_until_success() -> None:
    """TransientError is retried; on_retry sees each failure; the eventual value is returned."""
    first, second = TransientError("down"), TransientError("still down")
    fn = Flaky(first, second)
    seen: list[BaseException | None] = []
    result = call_with_retry(
        fn, deadline_s=5, max_wait_s=0.05, abort=threading.Event(), on_retry=seen.append
    )
    assert result == "ok"
    assert len(fn.calls) == 3
    assert seen == [first, second]


def test_stops_at_deadline_and_reraises() -> None:
    """A call that keeps failing transiently stops at the deadline and re-raises the last error."""
    last = TransientError("never up")
    fn = Flaky(forever=last)
    start = time.monotonic()
    with pytest.raises(TransientError) as info:
        call_with_retry(fn, deadline_s=0.4, max_wait_s=0.05, abort=threading.Event())
    elapsed = time.monotonic() - start
    assert info.value is last
    assert 0.4 <= elapsed < 1.5
    assert len(fn.calls) >= 3


def test_retry_after_is_honoured() -> None:
    """The wait after a TransientError with retry_after_s is at least that long."""
    fn = Flaky(TransientError("rate limited", status=429, retry_after_s=0.3))
    assert call_with_retry(fn, deadline_s=5, max_wait_s=0.05, abort=threading.Event()) == "ok"
    assert len(fn.calls) == 2
    assert fn.calls[1] - fn.calls[0] >= 0.3


def test_retry_after_capped_by_deadline() -> None:
    """A Retry-After far beyond the deadline does not make the call outlive the deadline much."""
    fn = Flaky(forever=TransientError("busy", retry_after_s=600))
    start = time.monotonic()
    with pytest.raises(TransientError):
        call_with_retry(fn, deadline_s=0.3, max_wait_s=0.05, abort=threading.Event())
    assert time.monotonic() - start < 1.5


@pytest.mark.parametrize(
    "error",
    [
        DataError("bad row", code="23502"),
        SetupError("no table", fix="migrate", code="PGRST205"),
        DeliveryError("plain"),
        RuntimeError("bug"),
    ],
    ids=["DataError", "SetupError", "DeliveryError", "RuntimeError"],
)
def test_non_transient_errors_not_retried(error: Exception) -> None:
    """Anything but TransientError is raised at once, after a single call."""
    fn = Flaky(error)
    with pytest.raises(type(error)) as info:
        call_with_retry(fn, deadline_s=5, max_wait_s=0.05, abort=threading.Event())
    assert info.value is error
    assert len(fn.calls) == 1


def test_abort_from_another_thread_stops_promptly() -> None:
    """Setting abort from another thread wakes the retry wait and ends the call promptly."""
    fn = Flaky(forever=TransientError("down", retry_after_s=30))
    abort = threading.Event()
    aborted_at: list[float] = []

    def shutdown() -> None:
        if fn.first_call.wait(EVENT_DEADLINE_S):
            aborted_at.append(time.monotonic())
            abort.set()

    threading.Thread(target=shutdown, daemon=True).start()
    with pytest.raises(TransientError):
        call_with_retry(fn, deadline_s=60, max_wait_s=0.05, abort=abort)
    assert aborted_at
    assert time.monotonic() - aborted_at[0] < 1.0
    # At most the one attempt already under way when the wait woke up.
    assert len(fn.calls) <= 2


def test_abort_already_set_means_one_attempt() -> None:
    """With abort already set, a failing call is tried once and raised without waiting."""
    abort = threading.Event()
    abort.set()
    fn = Flaky(forever=TransientError("down", retry_after_s=30))
    start = time.monotonic()
    with pytest.raises(TransientError):
        call_with_retry(fn, deadline_s=60, max_wait_s=5, abort=abort)
    assert len(fn.calls) == 1
    assert time.monotonic() - start < 1.0


# -- Breaker ------------------------------------------------------------------------------
def test_breaker_starts_closed() -> None:
    """A new breaker is closed, with no probe due."""
    b = Breaker(probe_interval_s=5)
    assert not b.is_open
    assert not b.probe_due()
    assert b.seconds_to_probe() == 0.0
    assert b.reason is None


def test_trip_opens_and_schedules_probe() -> None:
    """trip() opens the breaker, keeps the reason, and schedules a probe one interval away."""
    b = Breaker(probe_interval_s=5)
    b.trip("backend down")
    assert b.is_open
    assert b.reason == "backend down"
    assert not b.probe_due()
    assert 4.5 < b.seconds_to_probe() <= 5.0


def test_probe_becomes_due_after_interval() -> None:
    """probe_due() turns true once the probe interval has passed, not before."""
    b = Breaker(probe_interval_s=0.2)
    start = time.monotonic()
    b.trip("down")
    assert not b.probe_due()
    deadline = start + EVENT_DEADLINE_S
    while not b.probe_due():
        assert time.monotonic() < deadline, "probe never became due"
        threading.Event().wait(0.01)
    assert time.monotonic() - start >= 0.2


def test_interval_doubles_up_to_max() -> None:
    """Each trip while open doubles the probe interval, up to the maximum."""
    b = Breaker(probe_interval_s=10, max_probe_interval_s=35)
    waits = []
    for _ in range(4):
        b.trip("down")
        waits.append(b.seconds_to_probe())
    expected = [10, 20, 35, 35]
    for got, want in zip(waits, expected, strict=True):
        assert want - 0.5 < got <= want


def test_trip_at_least() -> None:
    """trip(at_least_s=...) schedules the probe no sooner than that (e.g. a Retry-After)."""
    b = Breaker(probe_interval_s=1)
    b.trip("rate limited", at_least_s=30)
    assert 29.5 < b.seconds_to_probe() <= 30


def test_reset_closes_and_restores_base_interval() -> None:
    """reset() closes the breaker, clears the reason, and the next trip starts from the base interval."""
    b = Breaker(probe_interval_s=2, max_probe_interval_s=60)
    for _ in range(3):
        b.trip("down")
    b.reset()
    assert not b.is_open
    assert b.reason is None
    assert not b.probe_due()
    assert b.seconds_to_probe() == 0.0
    b.trip("down again")
    assert 1.5 < b.seconds_to_probe() <= 2


def test_max_interval_never_below_base() -> None:
    """A maximum below the base interval is raised to the base interval."""
    b = Breaker(probe_interval_s=10, max_probe_interval_s=1)
    b.trip("down")
    b.trip("down")
    assert 9.5 < b.seconds_to_probe() <= 10


def test_every_row_given_up_is_said_once_even_when_the_rate_limit_holds_lines_back(
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Lines about lost rows are rate-limited, rows are not: the counts on stderr add up."""
    from supabase_log_handler.diagnostics import Diagnostics

    diag = Diagnostics(interval_s=3600.0)
    for n in (3, 4, 5):
        diag.rows_lost(n, "the disk is full")
    diag.rows_lost(0, "nothing")
    first = capsys.readouterr().err
    assert first.count("rows could not be kept") == 1 and "3 rows" in first
    diag.say_unsaid_losses()
    diag.say_unsaid_losses()  # nothing left to say
    later = capsys.readouterr().err
    assert later.count("rows could not be kept") == 1 and "9 rows" in later
    diag.rows_lost(2, "again")  # the limit starts over after a summary
    assert "2 rows could not be kept: again" in capsys.readouterr().err
