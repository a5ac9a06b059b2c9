"""The bounded in-memory queue between ``emit`` and the worker.

Callers ``put`` from any thread without blocking; the worker ``take``s chunks in
the order they were put. Items live in two tiers, DEBUG/INFO and WARNING-and-up
(run control items ride in the upper tier and are never shed), so that when the
queue is full a WARNING can evict the newest DEBUG or INFO item in O(1).

Every item gets a sequence number. Taken chunks stay "in flight" until the worker
or sender calls ``done``; ``wait_done(seq)`` is how ``flush`` waits for everything
put before it, with a deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

# (seq, size_bytes, levelno, kind, *fields): one flat tuple, so that the garbage
# collector stops tracking it at its first pass (it untracks one nesting level per pass).
Item = tuple[Any, ...]
CONTROL_LEVEL = 1_000
REPORT_PRESSURE = 0.25  # drops are reported once the queue is this empty
RUN_ID_FIELD = 12  # position of run_id in a ("log", *snapshot fields) payload  # sorts above every logging level: control items are never shed


class RecordQueue:
    """Two-tier FIFO bounded by rows and bytes, with in-flight tracking for flush."""

    def __init__(self, *, max_rows: int, max_bytes: int) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._space = threading.Condition(self._lock)
        self._low: deque[Item] = deque()
        self._high: deque[Item] = deque()
        self._urgent: deque[Item] = deque()  # filled without the lock (signal handlers)
        self._seq = itertools.count(1)
        self._bytes = 0
        self._in_flight: dict[int, int] = {}  # token -> lowest seq of a taken chunk
        self._tokens = itertools.count(1)
        self.dropped: dict[str, int] = {}
        self.dropped_unreported = 0
        self.last_drop_run: str | None = None  # the run the "N records dropped" row goes to
        self.last_report_seq = 0

    # -- caller side -------------------------------------------------------------------
    def put(self, payload: tuple[Any, ...], size: int, levelno: int) -> bool:
        """Add ``payload`` (``(kind, *fields)``); False when there is no room (dropped and counted)."""
        with self._lock:
            if len(self._low) + len(self._high) >= self.max_rows or self._bytes >= self.max_bytes:
                if payload[0] == "log" and len(payload) > RUN_ID_FIELD:
                    self.last_drop_run = payload[RUN_ID_FIELD]
                if levelno < logging.WARNING or not self._low:
                    self._count_drop(levelno)
                    return False
                old = self._low.pop()  # evict the newest low item
                old_size, old_level = old[1], old[2]
                self._bytes -= old_size
                self._count_drop(old_level)
            item = (next(self._seq), size, levelno, *payload)
            (self._high if levelno >= logging.WARNING else self._low).append(item)
            self._bytes += size
            return True

    def full(self) -> bool:
        """True when a low-level item would be dropped now (read without the lock: a hint)."""
        return len(self._low) + len(self._high) >= self.max_rows or self._bytes >= self.max_bytes

    def put_control(self, payload: tuple[Any, ...]) -> None:
        """Add a run control item; never refused, never shed, safe inside a signal handler."""
        item = (next(self._seq), 64, CONTROL_LEVEL, *payload)
        if self._lock.acquire(blocking=False):
            try:
                self._high.append(item)
                self._bytes += 64
            finally:
                self._lock.release()
        else:  # the interrupted thread holds the lock: use the lock-free lane
            self._urgent.append(item)

    def wait_for_space(self, timeout_s: float) -> bool:
        """Block (``overflow="block"``) until there is room, at most ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._space:
            while (
                len(self._low) + len(self._high) >= self.max_rows or self._bytes >= self.max_bytes
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._space.wait(remaining)
            return True

    def last_seq(self) -> int:
        """The sequence number the next item would get, minus one (a flush target)."""
        with self._lock:
            target = next(self._seq)
            # The number consumed here is never given to an item; sequence gaps are harmless.
            return target - 1

    # -- worker side -------------------------------------------------------------------
    def take(self, max_rows: int, max_bytes: int) -> tuple[int, list[Item]]:
        """Oldest items first, up to the limits; returns (token, items) for ``done``."""
        out: list[Item] = []
        nbytes = 0
        with self._lock:
            if self._urgent:  # items put from a signal handler: merge them in sequence order
                merged: list[Item] = list(self._high)
                while self._urgent:
                    item = self._urgent.popleft()
                    merged.append(item)
                    self._bytes += item[1]
                merged.sort(key=lambda i: i[0])
                self._high = deque(merged)
            low, high = self._low, self._high
            while (low or high) and len(out) < max_rows and nbytes < max_bytes:
                if high and (not low or high[0][0] < low[0][0]):
                    item = high.popleft()
                else:
                    item = low.popleft()
                out.append(item)
                nbytes += item[1]
            self._bytes -= nbytes
            token = 0
            if out:
                token = next(self._tokens)
                self._in_flight[token] = min(i[0] for i in out)
                self._space.notify_all()
            return token, out

    def done(self, *tokens: int) -> None:
        """Mark taken chunks as finished (delivered, spooled, dead-lettered or shed)."""
        with self._lock:
            for token in tokens:
                self._in_flight.pop(token, None)
            self._changed.notify_all()

    def _lowest_pending(self) -> int | None:
        heads = [d[0][0] for d in (self._low, self._high) if d]
        with contextlib.suppress(IndexError):
            heads.append(self._urgent[0][0])
        heads.extend(self._in_flight.values())
        return min(heads) if heads else None

    def wait_done(self, seq: int, timeout_s: float) -> bool:
        """Wait until every item numbered ``seq`` or lower is done; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                lowest = self._lowest_pending()
                if lowest is None or lowest > seq:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.5))

    # -- accounting ----------------------------------------------------------------------
    def _count_drop(self, levelno: int) -> None:
        name = logging.getLevelName(levelno) if levelno < CONTROL_LEVEL else "CONTROL"
        self.dropped[name] = self.dropped.get(name, 0) + 1
        self.dropped_unreported += 1

    def count_dropped(self, levelno: int, n: int = 1) -> None:
        """Count rows dropped elsewhere (e.g. by the worker when the spool is full)."""
        with self._lock:
            for _ in range(n):
                self._count_drop(levelno)

    def take_drop_report(self) -> tuple[int, dict[str, int]]:
        """Drops not yet reported in a row, and the totals per level; resets the former."""
        with self._lock:
            n, self.dropped_unreported = self.dropped_unreported, 0
            return n, dict(self.dropped)

    def put_drop_report(
        self, build: Callable[[int, dict[str, int]], tuple[Any, ...]], size: int
    ) -> bool:
        """Queue the "N records dropped" row and reset the count, as one step (see flush)."""
        with self._lock:
            n = self.dropped_unreported
            if not n:
                return False
            item = (next(self._seq), size, logging.WARNING, *build(n, dict(self.dropped)))
            self.last_report_seq = item[0]
            self._high.append(item)
            self._bytes += size
            self.dropped_unreported = 0
            return True

    def report_pending(self) -> bool:
        """True while drops wait to be reported and the queue is calm enough to report them."""
        return bool(self.dropped_unreported) and self.pressure() <= REPORT_PRESSURE

    def wait_changed(self, timeout_s: float) -> None:
        """Sleep until something is marked done, at most ``timeout_s``."""
        with self._changed:
            self._changed.wait(timeout_s)

    @property
    def rows(self) -> int:
        return len(self._low) + len(self._high) + len(self._urgent)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def pressure(self) -> float:
        """How full the queue is, 0.0 to 1.0 (the larger of rows and bytes)."""
        return max(self.rows / self.max_rows, self._bytes / self.max_bytes)
