"""The sender thread: the only user of the sink.

It takes the batch the worker left in the ledger's slot, delivers it
(``delivery.py``) and settles it: delivered rows, dead letters (kept in the
spool's ``.dead`` file with the server's error) and the rest, which goes to the
spool when delivery failed. When the slot is empty it replays the spool at the
sink's speed, this process's segments first, then any segment another process
left behind. A failure opens the breaker: batches then go straight to the spool,
and the backend is probed every ``probe_interval_s`` (doubling up to a ceiling).
"""

from __future__ import annotations

import contextlib
import json
import queue as queue_mod
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ._jsonsafe import encode
from .delivery import Deliverer, Outcome
from .diagnostics import Diagnostics
from .errors import DeliveryError, SetupError
from .ledger import SENDER, Holding, Ledger
from .rows import E_MERGE, E_PAYLOAD, E_SEQ, E_TABLE, MERGE, Entry
from .spool import Spool, SpoolError

NO_SPOOL = "no_spool"  # undeliverable and the spool is disabled
SPOOL_FAILED = "spool_failed"  # undeliverable and the spool could not take it (see last_error)


class Sender:
    """Delivers batches and replays the spool; see the module docstring."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        deliverer: Deliverer,
        spool: Spool | None,
        diagnostics: Diagnostics,
        run_row: Callable[[str], bytes | None],
        wake_worker: Callable[[], None],
        counters: Counter[str],
        replay_rows: int,
        replay_bytes: int,
    ) -> None:
        self.ledger = ledger
        self.deliverer = deliverer
        self.breaker = deliverer.breaker
        self.spool = spool
        self.diag = diagnostics
        self.run_row = run_row
        self.wake_worker = wake_worker
        self.counters = counters
        self.replay_rows = replay_rows
        self.replay_bytes = replay_bytes
        self.wake: queue_mod.SimpleQueue[None] = queue_mod.SimpleQueue()
        self.ready = threading.Event()  # the sink's client is loaded
        self.stopping = False
        self.replay_requested = False  # flush(): try the spool now, whatever the breaker says
        self.replay_foreign = False  # ... including segments other processes left behind
        self.busy = False  # a live batch is being delivered
        self.replay_round = threading.Condition()
        self.replay_rounds = 0
        self.last_round_sent = 0
        self._next_foreign_scan = 0.0

    # -- thread ------------------------------------------------------------------------
    def run(self) -> None:
        self.prepare()
        while True:
            holding = self.ledger.take_slot()
            if holding is not None:
                self.busy = True
                try:
                    self.deliver(holding, SENDER)
                finally:
                    self.busy = False
                self.wake_worker()
                continue
            if self.stopping:
                return
            if self._idle():
                continue
            self._sleep(self._idle_wait_s())

    def prepare(self) -> None:
        """Load the HTTP client now, before the first batch, and keep its records quiet."""
        try:
            self.deliverer.sink.prepare()
        except Exception as exc:
            self.diag.report("client", f"cannot create the HTTP client: {exc!r}")
        finally:
            self.ready.set()

    def nudge(self) -> None:
        self.wake.put(None)

    def _sleep(self, timeout_s: float) -> None:
        with contextlib.suppress(queue_mod.Empty):
            self.wake.get(timeout=max(timeout_s, 0.0))

    def request_stop(self) -> None:
        self.stopping = True
        self.nudge()

    def request_replay(self, *, foreign: bool = False) -> int:
        """Ask for one replay attempt now; returns the round to wait past."""
        with self.replay_round:
            self.replay_requested = True
            self.replay_foreign = self.replay_foreign or foreign
            rounds = self.replay_rounds
        self.nudge()
        return rounds

    def replay_now(self, deadline: float, foreign_s: float = 0.0) -> None:
        """Called by another thread (flush, close): have this sender's thread send the
        process's spooled rows now, if the backend takes them, then (for at most
        ``foreign_s``) rows other processes left behind; wait for it within ``deadline``."""
        spool = self.spool
        if spool is None:
            return
        tries = 0
        foreign_until = min(time.monotonic() + foreign_s, deadline)
        while time.monotonic() < deadline:
            own = spool.has_own_pending()
            foreign = not own and time.monotonic() < foreign_until
            if not (own or foreign):
                return
            if self.breaker.is_open and (tries or not self.breaker.early_probe_allowed()):
                return  # still down: the rows stay safely in the spool
            if self.busy:
                return  # a batch is being sent (maybe retried until its deadline): replay later
            tries += 1
            start = self.request_replay(foreign=foreign)
            with self.replay_round:
                while self.replay_rounds <= start and time.monotonic() < deadline:
                    self.replay_round.wait(min(deadline - time.monotonic(), 0.5))
                if foreign and not self.last_round_sent:
                    return

    def _idle_wait_s(self) -> float:
        if self.breaker.is_open:
            return max(min(self.breaker.seconds_to_probe(), 1.0), 0.05)
        return 1.0

    def _idle(self) -> bool:
        """Replay a chunk if there is one and the backend may take it; True if it sent one."""
        with self.replay_round:
            forced, self.replay_requested = self.replay_requested, False
            wanted_foreign, self.replay_foreign = self.replay_foreign, False
        sent = 0
        if self.spool is not None and not self.deliverer.abort.is_set():
            waiting = self.breaker.is_open and not self.breaker.probe_due()
            if not waiting or (forced and self.breaker.early_probe_allowed()):
                now = time.monotonic()
                foreign = wanted_foreign or now >= self._next_foreign_scan
                # Spooled rows are safe: retry briefly, then let the breaker pace the next try.
                retry_s = min(self.deliverer.retry_deadline_s, self.breaker.base_interval_s)
                sent = self.replay_once(foreign=foreign, retry_s=retry_s)
                if foreign and not sent:
                    self._next_foreign_scan = now + 30.0  # others may leave rows for us later
        with self.replay_round:
            self.last_round_sent = sent
            self.replay_rounds += 1
            self.replay_round.notify_all()
        return sent > 0

    # -- live batches --------------------------------------------------------------------
    def deliver(self, holding: Holding, stage: str, deadline: float | None = None) -> None:
        """Deliver a batch held by ``stage`` and settle it. Never raises."""
        entries = holding.entries
        try:
            if self.breaker.parked or (
                self.breaker.is_open and not self.breaker.probe_due() and self.spool is not None
            ):
                self.settle_undelivered(holding, stage, [], [], entries, self.breaker.reason)
                return
            outcome = self.deliverer.deliver(self._with_summaries(entries), deadline)
            self._after(outcome)
            self.settle_undelivered(
                holding, stage, outcome.delivered, outcome.dead, outcome.left,
                str(outcome.error) if outcome.error else None,
            )  # fmt: skip
        except Exception as exc:  # a bug must not kill the thread or lose the batch
            self.diag.report("sender-bug", f"unexpected error in the sender: {exc!r}")
            self.settle_undelivered(holding, stage, [], [], entries, repr(exc))

    def settle_undelivered(
        self,
        holding: Holding,
        stage: str,
        delivered: Sequence[Entry],
        dead: Sequence[tuple[Entry, DeliveryError]],
        left: list[Entry],
        reason: str | None,
    ) -> None:
        """Keep dead letters and spool what is left, then settle the holding."""
        if self.ledger.holdings.get(holding.id) is not holding or holding.stage != stage:
            return  # seized by a closer: it spools them
        for entry, error in dead:
            self._bury(entry, error)
        spooled, dropped, why = self.spool_entries(left)
        if dropped:
            self.diag.rows_lost(len(dropped), f"{reason}; {why}")
        self.ledger.settle(
            holding, stage, delivered=delivered, dead=[e for e, _ in dead], spooled=spooled,
            dropped=dropped, reason=NO_SPOOL if self.spool is None else SPOOL_FAILED,
        )  # fmt: skip

    def spool_entries(self, entries: list[Entry]) -> tuple[list[Entry], list[Entry], str]:
        """(spooled, could not be kept, why)."""
        if not entries:
            return [], [], ""
        if self.spool is None:
            return [], entries, "the spool is disabled"
        try:
            self.spool.append(entries, self.run_row)
            return entries, [], ""
        except SpoolError as exc:
            self.diag.report("spool", f"{exc}; to fix: {exc.fix}")
            return [], entries, str(exc)
        except OSError as exc:
            self.diag.report("spool", f"cannot write the spool: {exc!r}")
            return [], entries, repr(exc)

    def _bury(self, entry: Entry, error: DeliveryError) -> None:
        self.diag.report(
            "dead-letter",
            f"the database refused a row of {entry[E_TABLE]} ({error}); kept as a dead letter",
        )
        if self.spool is not None:
            try:
                self.spool.dead_letter(entry[E_TABLE], entry[E_PAYLOAD], error.code, str(error),
                                       mode=entry[E_MERGE])  # fmt: skip
            except (OSError, ValueError) as exc:
                self.diag.report("spool", f"cannot keep a dead letter: {exc!r}")

    def _after(self, outcome: Outcome) -> None:
        error = outcome.error
        if error is None:
            if outcome.delivered:
                self.breaker.reset()
                self.counters["batches"] += 1
            return
        if isinstance(error, SetupError):
            self.diag.report("setup", f"Supabase refused the rows: {error}. To fix: {error.fix}")
            self.breaker.trip(str(error), at_least_s=30.0, needs_person=True)
        else:
            where = "keeping rows in the spool" if self.spool is not None else (
                "the spool is disabled, so rows that cannot wait in memory are dropped")  # fmt: skip
            self.diag.report("outage", f"cannot deliver to Supabase ({error}); {where}")
            self.breaker.trip(str(error))

    def _with_summaries(self, entries: list[Entry]) -> list[Entry]:
        """A run's final row carries the handler's delivery counters (``metadata.log_delivery``)."""
        runs = self.ledger.runs_table
        if not any(e[E_TABLE] == runs and e[E_MERGE] == MERGE and e[E_SEQ] for e in entries):
            return entries
        totals = self.ledger.snapshot()
        summary = {k: totals[k] for k in ("accepted", "delivered", "spooled_pending", "dropped_total",
                                          "dead_lettered")}  # fmt: skip
        # The rows ahead of it in this batch are stored before it, or it is not sent at all.
        summary["delivered"] += sum(1 for e in entries if not (e[E_TABLE] == runs and e[E_MERGE]))
        out = []
        for e in entries:
            if e[E_TABLE] == runs and e[E_MERGE] == MERGE and e[E_SEQ]:
                row = json.loads(e[E_PAYLOAD])
                if isinstance(row.get("metadata"), dict) or "status" in row:
                    row["metadata"] = {**(row.get("metadata") or {}), "log_delivery": summary}
                    e = (*e[:E_PAYLOAD], encode(row))
            out.append(e)
        return out

    # -- replay --------------------------------------------------------------------------
    def replay_once(
        self, *, foreign: bool = True, deadline: float | None = None, retry_s: float | None = None
    ) -> int:
        """Send one chunk of the spool; returns how many entries were delivered or buried."""
        if self.spool is None:
            return 0
        try:
            seg = self.spool.claim(foreign=foreign)
            if seg is None:
                return 0
            entries, end = self.spool.read(seg, self.replay_rows, self.replay_bytes)
        except OSError as exc:
            self.diag.report("spool", f"cannot read the spool: {exc!r}")
            return 0
        outcome = self.deliverer.deliver(entries, deadline, retry_s)
        self._after(outcome)
        try:
            if outcome.error is not None:  # the whole chunk is tried again later (ids: no doubles)
                self.spool.release(seg)
                return 0
            for entry, error in outcome.dead:
                self._bury(entry, error)
            self.spool.commit(seg, end)
        except OSError as exc:
            self.diag.report("spool", f"cannot update the spool: {exc!r}")
            return 0
        delivered = Counter(e[E_TABLE] for e in outcome.delivered)
        dead = Counter(e[E_TABLE] for e, _ in outcome.dead)
        if seg.own:
            self.ledger.replayed(delivered, dead, 0)
        else:
            self.ledger.replayed(Counter(), Counter(), sum(delivered.values()))
        return len(entries)


def describe(value: Any) -> str:
    return f"{type(value).__name__}: {value}"
