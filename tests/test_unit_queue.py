"""Unit tests of ``supabase_log_handler.queue.RecordQueue``: order, bounds, shedding, flush waits."""

from __future__ import annotations

import logging
import threading
import time

from supabase_log_handler.queue import CONTROL_LEVEL, RecordQueue

DEBUG, INFO, WARNING, ERROR = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR
EVENT_DEADLINE_S = 5.0
BIG = 10**9


def put(q: RecordQueue, name: object, size: int, levelno: int) -> bool:
    """Put a log item whose payload is ``("log", name)``."""
    return q.put(("log", name), size, levelno)


def put_control(q: RecordQueue, name: object) -> None:
    """Put a control item whose payload is ``("run_final", name)``."""
    q.put_control(("run_final", name))


def payloads(items: list[tuple[object, ...]]) -> list[object]:
    """The names of taken items (items are ``(seq, size, levelno, kind, *fields)``)."""
    return [item[4] for item in items]


def test_fifo_across_tiers_by_sequence() -> None:
    """take() returns items in put order, whatever tier (level) they went to."""
    q = RecordQueue(max_rows=100, max_bytes=BIG)
    order = [("a", INFO), ("b", WARNING), ("c", DEBUG), ("d", ERROR), ("e", INFO), ("f", WARNING)]
    for name, level in order:
        assert put(q, name, 10, level)
    put_control(q, "ctl")
    _, items = q.take(100, BIG)
    assert payloads(items) == ["a", "b", "c", "d", "e", "f", "ctl"]
    seqs = [item[0] for item in items]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


def test_take_on_empty_queue() -> None:
    """take() on an empty queue returns token 0 and no items."""
    assert RecordQueue(max_rows=10, max_bytes=BIG).take(10, BIG) == (0, [])


def test_bounded_by_rows() -> None:
    """Once max_rows items are held, an INFO put is refused and counted as dropped."""
    q = RecordQueue(max_rows=3, max_bytes=BIG)
    assert all(put(q, i, 1, INFO) for i in range(3))
    assert not put(q, "x", 1, INFO)
    assert q.rows == 3
    assert q.dropped == {"INFO": 1}


def test_bounded_by_bytes() -> None:
    """Once max_bytes are held, a DEBUG put is refused even with rows to spare."""
    q = RecordQueue(max_rows=1000, max_bytes=100)
    assert put(q, "a", 60, INFO)
    assert put(q, "b", 60, INFO)  # the byte bound is checked before adding: approximate by one item
    assert q.nbytes == 120
    assert not put(q, "c", 1, DEBUG)
    assert q.dropped == {"DEBUG": 1}


def test_debug_and_info_dropped_when_full() -> None:
    """DEBUG and INFO puts into a full queue are dropped and counted per level."""
    q = RecordQueue(max_rows=1, max_bytes=BIG)
    put(q, "keep", 1, INFO)
    assert not put(q, "d", 1, DEBUG)
    assert not put(q, "i", 1, INFO)
    assert not put(q, "d2", 1, DEBUG)
    assert q.dropped == {"DEBUG": 2, "INFO": 1}
    _, items = q.take(10, BIG)
    assert payloads(items) == ["keep"]


def test_warning_evicts_newest_low_item() -> None:
    """A WARNING into a full queue evicts the newest DEBUG/INFO item, counted under its level."""
    q = RecordQueue(max_rows=3, max_bytes=BIG)
    put(q, "old-info", 10, INFO)
    put(q, "debug", 10, DEBUG)
    put(q, "new-info", 10, INFO)
    assert put(q, "warn", 10, WARNING)
    assert q.dropped == {"INFO": 1}
    assert q.rows == 3
    assert q.nbytes == 30
    _, items = q.take(10, BIG)
    assert payloads(items) == ["old-info", "debug", "warn"]


def test_error_evicts_debug_counted_as_debug() -> None:
    """The evicted item's own level is what the drop is counted under."""
    q = RecordQueue(max_rows=2, max_bytes=BIG)
    put(q, "info", 1, INFO)
    put(q, "debug", 1, DEBUG)
    assert put(q, "error", 1, ERROR)
    assert q.dropped == {"DEBUG": 1}


def test_warning_dropped_when_full_of_warnings() -> None:
    """A WARNING is dropped (and counted) when nothing below WARNING is left to evict."""
    q = RecordQueue(max_rows=2, max_bytes=BIG)
    put(q, "w1", 1, WARNING)
    put(q, "e1", 1, ERROR)
    assert not put(q, "w2", 1, WARNING)
    assert q.dropped == {"WARNING": 1}
    _, items = q.take(10, BIG)
    assert payloads(items) == ["w1", "e1"]


def test_drop_report_counts_and_resets() -> None:
    """take_drop_report returns unreported drops with per-level totals, then resets the former."""
    q = RecordQueue(max_rows=1, max_bytes=BIG)
    put(q, "a", 1, INFO)
    put(q, "b", 1, INFO)
    q.count_dropped(ERROR, 2)
    assert q.take_drop_report() == (3, {"INFO": 1, "ERROR": 2})
    assert q.take_drop_report() == (0, {"INFO": 1, "ERROR": 2})


def test_control_items_never_refused() -> None:
    """Control items are accepted into a full queue and are never evicted by warnings."""
    q = RecordQueue(max_rows=1, max_bytes=10)
    put(q, "info", 100, INFO)
    for i in range(5):
        put_control(q, f"ctl{i}")
    assert put(q, "warn", 1, WARNING)  # evicts the INFO item, never a control item
    _, items = q.take(100, BIG)
    controls = [item for item in items if item[2] == CONTROL_LEVEL]
    assert payloads(controls) == [f"ctl{i}" for i in range(5)]
    assert payloads(items) == [*(f"ctl{i}" for i in range(5)), "warn"]
    assert q.dropped == {"INFO": 1}


def test_take_row_limit() -> None:
    """take() returns at most max_rows items, oldest first, leaving the rest."""
    q = RecordQueue(max_rows=100, max_bytes=BIG)
    for i in range(5):
        put(q, i, 1, INFO)
    _, first = q.take(2, BIG)
    _, second = q.take(2, BIG)
    assert payloads(first) == [0, 1]
    assert payloads(second) == [2, 3]
    assert q.rows == 1


def test_take_byte_limit() -> None:
    """take() stops once the taken bytes reach max_bytes, and frees those bytes."""
    q = RecordQueue(max_rows=100, max_bytes=BIG)
    for i in range(5):
        put(q, i, 30, INFO)
    _, items = q.take(100, 50)
    assert payloads(items) == [0, 1]
    assert q.nbytes == 90


def test_take_always_makes_progress() -> None:
    """An item larger than the byte limit is still taken on its own."""
    q = RecordQueue(max_rows=100, max_bytes=BIG)
    put(q, "huge", 1000, INFO)
    put(q, "small", 1, INFO)
    _, items = q.take(100, 10)
    assert payloads(items) == ["huge"]


def test_pressure() -> None:
    """pressure() is the fuller of the rows and bytes ratios."""
    q = RecordQueue(max_rows=10, max_bytes=100)
    put(q, "a", 50, INFO)
    assert q.pressure() == 0.5
    put(q, "b", 1, INFO)
    put(q, "c", 1, INFO)
    assert q.pressure() == 0.52


def _start_waiter(q: RecordQueue, seq: int, timeout_s: float) -> tuple[threading.Event, list[bool]]:
    finished = threading.Event()
    result: list[bool] = []

    def run() -> None:
        result.append(q.wait_done(seq, timeout_s))
        finished.set()

    threading.Thread(target=run, daemon=True).start()
    return finished, result


def test_wait_done_true_only_after_every_covering_chunk_is_done() -> None:
    """wait_done(seq) returns True only once every chunk holding items <= seq is done."""
    q = RecordQueue(max_rows=100, max_bytes=BIG)
    for i in range(3):
        put(q, i, 1, INFO)
    target = q.last_seq()
    token1, _ = q.take(2, BIG)
    token2, _ = q.take(2, BIG)
    finished, result = _start_waiter(q, target, EVENT_DEADLINE_S * 2)
    assert not finished.wait(0.3)  # both chunks in flight
    q.done(token2)
    assert not finished.wait(0.25)  # the first chunk is still in flight
    done_at = time.monotonic()
    q.done(token1)
    assert finished.wait(EVENT_DEADLINE_S)
    assert result == [True]
    assert time.monotonic() - done_at < 0.3  # woken by done(), not by a polling timeout


def test_wait_done_counts_queued_items_as_pending() -> None:
    """Items not yet taken keep wait_done from returning True."""
    q = RecordQueue(max_rows=100, max_bytes=BIG)
    put(q, "x", 1, INFO)
    assert not q.wait_done(q.last_seq(), 0.05)
    token, _ = q.take(10, BIG)
    assert not q.wait_done(q.last_seq(), 0.0)
    q.done(token)
    assert q.wait_done(q.last_seq(), 0.0)


def test_wait_done_ignores_later_items() -> None:
    """Items put after the target sequence do not hold up wait_done."""
    q = RecordQueue(max_rows=100, max_bytes=BIG)
    put(q, "before", 1, INFO)
    target = q.last_seq()
    put(q, "after", 1, WARNING)
    token, items = q.take(1, BIG)
    assert payloads(items) == ["before"]
    q.done(token)
    assert q.wait_done(target, 0.0)


def test_wait_done_deadline_returns_false() -> None:
    """wait_done returns False once its deadline passes with work still pending."""
    q = RecordQueue(max_rows=100, max_bytes=BIG)
    put(q, "x", 1, INFO)
    q.take(10, BIG)
    start = time.monotonic()
    assert q.wait_done(q.last_seq(), 0.3) is False
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 2.0


def test_wait_done_on_empty_queue_is_immediate() -> None:
    """With nothing pending, wait_done returns True at once."""
    q = RecordQueue(max_rows=10, max_bytes=BIG)
    assert q.wait_done(q.last_seq(), 0.0)


def test_wait_for_space_deadline() -> None:
    """wait_for_space on a full queue returns False after its deadline."""
    q = RecordQueue(max_rows=1, max_bytes=BIG)
    put(q, "x", 1, INFO)
    start = time.monotonic()
    assert q.wait_for_space(0.3) is False
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 2.0


def test_wait_for_space_wakes_when_worker_takes() -> None:
    """wait_for_space returns True as soon as another thread takes items."""
    q = RecordQueue(max_rows=1, max_bytes=BIG)
    put(q, "x", 1, INFO)
    waiting = threading.Event()
    finished = threading.Event()
    result: list[bool] = []

    def waiter() -> None:
        waiting.set()
        result.append(q.wait_for_space(EVENT_DEADLINE_S * 2))
        finished.set()

    threading.Thread(target=waiter, daemon=True).start()
    assert waiting.wait(EVENT_DEADLINE_S)
    assert not finished.wait(0.1)
    start = time.monotonic()
    q.take(1, BIG)
    assert finished.wait(EVENT_DEADLINE_S)
    assert result == [True]
    assert time.monotonic() - start < 1.0


def test_wait_for_space_immediate_when_room() -> None:
    """wait_for_space returns True at once when the queue has room."""
    assert RecordQueue(max_rows=2, max_bytes=BIG).wait_for_space(0.0)


def test_control_via_lock_free_lane_is_delivered() -> None:
    """A control item put while the queue lock is held (signal handler) is still taken and awaited."""
    q = RecordQueue(max_rows=10, max_bytes=BIG)
    with q._lock:  # what a signal handler interrupting put() sees
        put_control(q, "urgent")
    assert q.rows == 1
    target = q.last_seq()
    assert not q.wait_done(target, 0.0)
    token, items = q.take(10, BIG)
    assert payloads(items) == ["urgent"]
    q.done(token)
    assert q.wait_done(target, 0.0)


def test_control_via_lock_free_lane_keeps_fifo_order() -> None:
    """A control item put while the lock is held is taken before items put after it."""
    q = RecordQueue(max_rows=10, max_bytes=BIG)
    with q._lock:
        put_control(q, "urgent")
    put(q, "later-warning", 1, WARNING)
    _, items = q.take(10, BIG)
    assert payloads(items) == ["urgent", "later-warning"]


def test_byte_accounting_after_lock_free_control() -> None:
    """Byte accounting returns to zero after a lock-free control item is taken."""
    q = RecordQueue(max_rows=10, max_bytes=BIG)
    with q._lock:
        put_control(q, "urgent")
    q.take(10, BIG)
    assert q.nbytes == 0
