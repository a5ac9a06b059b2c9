"""The intake: lock-free lanes between ``emit`` and the worker.

``emit`` may run on any thread, inside a signal handler, ``__del__`` or a GC
callback that interrupted another ``emit`` on the same thread. So nothing here
takes a lock: every operation a caller performs is one atomic step under the
GIL (``deque.append``/``pop``, ``next()`` on a counter, ``SimpleQueue.put``,
which is documented reentrant). The byte total is an estimate kept by plain
arithmetic from both sides; a lost update costs one item's size and is wiped
whenever the lanes are seen empty.

Lanes, each in sequence order: ``low`` (DEBUG/INFO), ``high`` (WARNING and up),
``ctrl`` (run rows and rows for other tables: never shed) and ``assist``
(entries a caller built itself, down to their spool frame, because memory was
full and the spool can take them: the worker only has to write the bytes; see
``offer``). Records refused here are counted in ``drops`` by reason and level
(one ``itertools.count`` per pair: bounded memory, however many are refused).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue as queue_mod
from collections import deque
from collections.abc import Callable
from typing import Any

from .snapshot import KIND, LOG, RUN_ID, SEQ, SIZE

_WARNING = logging.WARNING
_FRAME = 7  # an assisted entry ends with its spool frame, built by the caller too
Item = tuple[Any, ...]

# Why a record was refused (the keys of ``stats()["dropped"]``).
QUEUE_FULL = "queue_full"  # memory full and the spool disabled, full or not writable
OVERLOAD = "overload"  # memory full and the spool behind by half a queue's worth
AFTER_CLOSE = "after_close"  # logged after the process's last drain
OWN_THREAD = "own_thread"  # made by the handler's own threads (never stored: no feedback)
NO_RUN = "no_run"  # no run to put it in (implicit runs disabled)
EMIT_ERROR = "emit_error"  # the record could not be read (see handleError's output)


class Drops:
    """Records refused by ``emit``, counted per (reason, levelno) without a lock."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], itertools.count[int]] = {}
        self.last_run: str | None = None  # where the "N records dropped" row goes

    def add(self, reason: str, levelno: int, run_id: str | None = None) -> None:
        key = (reason, levelno)
        counter = self._counts.get(key)
        if counter is None:
            counter = self._counts.setdefault(key, itertools.count(1))  # atomic: one wins
        next(counter)
        if run_id is not None:
            self.last_run = run_id

    def totals(self) -> dict[tuple[str, int], int]:
        """How many so far, per (reason, levelno)."""
        return {key: int(repr(c)[6:-1]) - 1 for key, c in list(self._counts.items())}


class Intake:
    """Bounded by rows and bytes; see the module docstring."""

    def __init__(self, *, max_rows: int, max_bytes: int) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.low: deque[Item] = deque()
        self.high: deque[Item] = deque()
        self.ctrl: deque[Item] = deque()
        self.assist: deque[tuple[Any, ...]] = deque()
        self.drops = Drops()
        self.seq = itertools.count(1)
        self.nbytes = 0
        self.assist_bytes = 0
        self.wake: queue_mod.SimpleQueue[None] = queue_mod.SimpleQueue()
        self.wake_pending = False
        # Set by the pipeline: builds an entry on the caller's thread (no I/O), or None
        # when the spool cannot take more (then a full queue sheds instead).
        self.assist_builder: Callable[[Item], tuple[Any, ...]] | None = None

    # -- caller side -------------------------------------------------------------------
    def offer(self, item: Item, levelno: int) -> None:
        """Queue a log item, or assist, or shed, as room allows. Never blocks."""
        low, high = self.low, self.high
        if len(low) + len(high) < self.max_rows and self.nbytes < self.max_bytes:
            (high if levelno >= _WARNING else low).append(item)
            self.nbytes += item[SIZE]
            return
        build = self.assist_builder
        if build is not None:
            if self.assist_bytes < self.max_bytes // 2:  # what waits to be written to the spool
                entry = build(item)
                self.assist.append(entry)
                self.assist_bytes += len(entry[_FRAME])
                self.nudge()
                return
            self.drops.add(OVERLOAD, levelno, item[RUN_ID])
            return
        if levelno >= _WARNING:
            try:
                evicted = low.pop()  # the newest DEBUG/INFO item makes room
            except IndexError:
                self.drops.add(QUEUE_FULL, levelno, item[RUN_ID])
                return
            self.nbytes -= evicted[SIZE]
            self.drops.add(QUEUE_FULL, evicted[2], evicted[RUN_ID])
            high.append(item)
            self.nbytes += item[SIZE]
            return
        self.drops.add(QUEUE_FULL, levelno, item[RUN_ID])

    def put_control(self, item: Item) -> None:
        """Queue a run row or another table's row: never refused, never shed."""
        self.ctrl.append(item)
        self.nbytes += item[SIZE]

    def nudge(self) -> None:
        """Wake the worker (reentrant; at most one pending token)."""
        if not self.wake_pending:
            self.wake_pending = True
            self.wake.put(None)

    def next_seq(self) -> int:
        return next(self.seq)

    # -- worker side -------------------------------------------------------------------
    def wait(self, timeout_s: float) -> None:
        """Sleep until nudged or ``timeout_s``; then take every pending token."""
        with contextlib.suppress(queue_mod.Empty):
            self.wake.get(timeout=max(timeout_s, 0.0))
        self.wake_pending = False
        while True:
            try:
                self.wake.get_nowait()
            except queue_mod.Empty:
                return

    def take(self, max_rows: int, max_bytes: int) -> list[Item]:
        """Up to the limits, oldest first across the three lanes (worker only)."""
        out: list[Item] = []
        nbytes = 0
        low, high, ctrl = self.low, self.high, self.ctrl
        while len(out) < max_rows and nbytes < max_bytes:
            lane = _oldest(low, high, ctrl)
            if lane is None:
                break
            try:
                item = lane.popleft()
            except IndexError:  # a WARNING evicted it just now
                continue
            out.append(item)
            nbytes += item[SIZE]
        self.nbytes -= nbytes
        if not (low or high or ctrl):
            self.nbytes = 0
        return out

    def take_assist(self, max_rows: int) -> list[tuple[Any, ...]]:
        out = []
        pop = self.assist.popleft
        for _ in range(max_rows):
            try:
                out.append(pop())
            except IndexError:
                break
        self.assist_bytes -= sum(len(e[_FRAME]) for e in out)
        if not self.assist:
            self.assist_bytes = 0
        return out

    def take_all(self) -> tuple[list[Item], list[tuple[Any, ...]]]:
        """Everything queued (the closer seizing what is left)."""
        return self.take(1 << 62, 1 << 62), self.take_assist(1 << 62)

    def head_seq(self) -> int | None:
        """The lowest sequence number still queued, or None."""
        heads = []
        for lane in (self.low, self.high, self.ctrl, self.assist):
            with contextlib.suppress(IndexError):
                heads.append(lane[0][SEQ])
        return min(heads) if heads else None

    def counts(self) -> tuple[int, int, list[Item]]:
        """(log items queued, assisted entries queued, control items) at this instant."""
        return len(self.low) + len(self.high), len(self.assist), list(self.ctrl)

    @property
    def rows(self) -> int:
        return len(self.low) + len(self.high) + len(self.ctrl)

    def pressure(self) -> float:
        """How full the queue is, 0.0 to 1.0 or more (the larger of rows and bytes)."""
        return max(self.rows / self.max_rows, self.nbytes / self.max_bytes)


def _oldest(*lanes: deque[Item]) -> deque[Item] | None:
    best: deque[Item] | None = None
    best_seq = 0
    for lane in lanes:
        try:
            seq = lane[0][SEQ]
        except IndexError:
            continue
        if best is None or seq < best_seq:
            best, best_seq = lane, seq
    return best


def is_log(item: Item) -> bool:
    return bool(item[KIND] == LOG)
