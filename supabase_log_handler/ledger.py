"""The ledger: who holds each row, and how every accepted row ended.

From the moment the worker takes items from the intake until they are settled,
they belong to exactly one :class:`Holding`, and a holding to exactly one stage:
the worker (building a batch), the slot (waiting for the sender), the sender (in
flight), or a closer (``close()``, the exit drain, SIGTERM) that seized it when
its deadline came. Only the current owner may settle a holding; a thread whose
holding was seized drops its result, so nothing is counted twice and nothing is
left between stages. Every outcome is counted, per table::

    accepted = delivered + spooled_pending + dead_lettered + dropped + in_memory

``accepted`` and ``in_memory`` are derived from the intake and the holdings, so
the identity holds by construction at every quiet point; tests compare it with
what PostgreSQL and the spool really hold. One re-entrant lock guards it (only
the handler's threads and ``flush``/``close`` take it, never ``emit``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from .queue import Intake, Item
from .rows import E_LEVEL, E_PAYLOAD, E_SEQ, E_TABLE, Entry
from .snapshot import KIND, LEVEL, LOG, ROW, ROW_TABLE, RUN_OPEN, SEQ

WORKER, SLOT, SENDER, CLOSER, SETTLED = "worker", "slot", "sender", "closer", "settled"
QUIET_REASONS = frozenset({"own_thread", "after_close", "cancelled"})  # no "N dropped" row


def level_name(levelno: int) -> str:
    if levelno >= 1000:
        return "CONTROL"
    name = logging.getLevelName(levelno)
    return name if isinstance(name, str) else f"Level {levelno}"


class Holding:
    """Rows one stage holds: items not built yet (``raw``) and built entries."""

    __slots__ = ("entries", "id", "raw", "stage", "started")

    def __init__(self, stage: str, hid: int) -> None:
        self.stage = stage
        self.id = hid
        self.raw: list[Item] = []
        self.entries: list[Entry] = []
        self.started = time.monotonic()

    @property
    def rows(self) -> int:
        return len(self.raw) + len(self.entries)

    @property
    def nbytes(self) -> int:
        return sum(len(e[E_PAYLOAD]) for e in self.entries) + sum(int(i[1]) for i in self.raw)

    def min_seq(self) -> int | None:
        seqs = [i[SEQ] for i in self.raw[:1]] + [e[E_SEQ] for e in self.entries if e[E_SEQ]]
        return min(seqs) if seqs else None


class Ledger:
    """See the module docstring."""

    def __init__(self, intake: Intake, *, runs_table: str, logs_table: str) -> None:
        self.intake = intake
        self.runs_table = runs_table
        self.logs_table = logs_table
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._ids = itertools.count(1)
        self.holdings: dict[int, Holding] = {}
        self.slot: Holding | None = None
        self.taken: Counter[str] = Counter()  # rows taken from the intake, per table
        self.delivered: Counter[str] = Counter()
        self.spooled: Counter[str] = Counter()  # spooled and still pending
        self.dead: Counter[str] = Counter()
        self.dropped: Counter[tuple[str, str, str]] = Counter()  # (table, reason, level)
        self.refused: Counter[str] = Counter()  # dropped by emit itself, never taken
        self._drops_seen: dict[tuple[str, int], int] = {}
        self.unreported_drops = 0
        self.last_drop_run: str | None = None
        self.replayed_foreign = 0
        self.drop_reports = 0  # "N records dropped" rows the worker added (they are accepted rows)
        self.on_settled: Callable[[list[Entry]], None] = lambda entries: None
        self.last_report_seq = 0

    # -- holdings ----------------------------------------------------------------------
    def take(self, max_rows: int, max_bytes: int, holding: Holding | None = None) -> Holding:
        """Move items from the intake into a (new or given) worker holding."""
        with self.lock:
            items = self.intake.take(max_rows, max_bytes)
            if holding is None:
                holding = self.hold(WORKER)
            holding.raw.extend(items)
            self._count_taken(items)
            return holding

    def take_assist(self, max_rows: int) -> Holding | None:
        with self.lock:
            entries = self.intake.take_assist(max_rows)
            if not entries:
                return None
            holding = self.hold(WORKER)
            holding.entries.extend(entries)
            self.taken[self.logs_table] += len(entries)
            return holding

    def hold(self, stage: str) -> Holding:
        with self.lock:
            holding = Holding(stage, next(self._ids))
            self.holdings[holding.id] = holding
            return holding

    def built(self, holding: Holding, raw: list[Item], entries: list[Entry]) -> bool:
        """Replace ``raw`` by the entries built from it, if the holding is still the worker's."""
        with self.lock:
            if holding.stage != WORKER or holding.raw is not raw:
                return False
            holding.raw = []
            holding.entries.extend(entries)
            return True

    def drop_raw(self, holding: Holding, items: Iterable[Item], reason: str) -> None:
        """Items that produce no row (a cancelled run): counted, removed from the holding."""
        with self.lock:
            for item in items:
                self.dropped[(self._table_of(item), reason, level_name(item[LEVEL]))] += 1

    def offer_slot(self, holding: Holding) -> bool:
        """Hand a worker batch to the sender if the slot is free."""
        with self.lock:
            if self.slot is not None or holding.stage != WORKER:
                return False
            holding.stage = SLOT
            self.slot = holding
            return True

    def take_slot(self) -> Holding | None:
        with self.lock:
            holding, self.slot = self.slot, None
            if holding is not None:
                holding.stage = SENDER
            return holding

    def seize(self) -> list[Holding]:
        """Every unsettled holding, plus everything queued, now owned by the caller."""
        with self.lock:
            seized = [h for h in self.holdings.values() if h.stage != CLOSER]
            for h in seized:
                h.stage = CLOSER
            self.slot = None
            items, assisted = self.intake.take_all()
            if items or assisted:
                rest = self.hold(CLOSER)
                rest.raw.extend(items)
                rest.entries.extend(assisted)
                self._count_taken(items)
                self.taken[self.logs_table] += len(assisted)
                seized.append(rest)
            return seized

    def settle(
        self,
        holding: Holding,
        stage: str,
        *,
        delivered: Iterable[Entry] = (),
        spooled: Iterable[Entry] = (),
        dead: Iterable[Entry] = (),
        dropped: Iterable[Entry] = (),
        reason: str = "",
    ) -> bool:
        """Record how a holding ended; False (and nothing counted) if ``stage`` lost it."""
        delivered, spooled, dead, dropped = list(delivered), list(spooled), list(dead), list(dropped)
        with self.lock:
            if holding.stage != stage:
                return False
            self.delivered.update(e[E_TABLE] for e in delivered)
            self.spooled.update(e[E_TABLE] for e in spooled)
            self.dead.update(e[E_TABLE] for e in dead)
            for e in dropped:
                self.dropped[(e[E_TABLE], reason, level_name(e[E_LEVEL]))] += 1
                self.unreported_drops += 1
            holding.stage = SETTLED
            self.holdings.pop(holding.id, None)
            self.changed.notify_all()
        self.on_settled(delivered + spooled + dead + dropped)
        return True

    def replayed(self, own: Counter[str], dead: Counter[str], foreign: int) -> None:
        """Spooled rows delivered (or refused for good) by a replay."""
        with self.lock:
            for table, n in own.items():
                moved = min(n, self.spooled[table])
                self.spooled[table] -= moved
                self.delivered[table] += moved
            for table, n in dead.items():
                moved = min(n, self.spooled[table])
                self.spooled[table] -= moved
                self.dead[table] += moved
            self.replayed_foreign += foreign
            self.changed.notify_all()

    # -- accounting ----------------------------------------------------------------------
    def _table_of(self, item: Item) -> str:
        kind = item[KIND]
        if kind == LOG:
            return self.logs_table
        if kind == RUN_OPEN:
            return self.runs_table
        return str(item[ROW_TABLE]) if kind == ROW else "?"

    def _count_taken(self, items: list[Item]) -> None:
        for item in items:
            self.taken[self._table_of(item)] += 1

    def collect_drops(self) -> None:
        """Fold the drops ``emit`` counted into the ledger."""
        with self.lock:
            for (reason, levelno), total in self.intake.drops.totals().items():
                new = total - self._drops_seen.get((reason, levelno), 0)
                if new <= 0:
                    continue
                self._drops_seen[(reason, levelno)] = total
                self.dropped[(self.logs_table, reason, level_name(levelno))] += new
                self.refused[self.logs_table] += new
                if reason not in QUIET_REASONS:
                    self.unreported_drops += new
                    self.last_drop_run = self.intake.drops.last_run or self.last_drop_run

    def lowest_unsettled(self) -> int | None:
        """The lowest sequence number not yet settled (None when nothing is pending)."""
        with self.lock:
            seqs = [s for s in (h.min_seq() for h in self.holdings.values()) if s is not None]
            head = self.intake.head_seq()
            if head is not None:
                seqs.append(head)
            return min(seqs) if seqs else None

    def wait_settled(self, target_seq: int, deadline: float) -> bool:
        """Wait until everything numbered below ``target_seq`` is settled, or the deadline."""
        with self.changed:
            while True:
                lowest = self.lowest_unsettled()
                if lowest is None or lowest >= target_seq:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(min(remaining, 0.05))

    def unsettled_rows(self) -> int:
        with self.lock:
            logs, assisted, ctrl = self.intake.counts()
            return logs + assisted + len(ctrl) + sum(h.rows for h in self.holdings.values())

    def snapshot(self) -> dict[str, Any]:
        """The counters and the identity's terms, overall and per table."""
        self.collect_drops()
        with self.lock:
            in_memory: Counter[str] = Counter()
            logs, assisted, ctrl = self.intake.counts()
            in_memory[self.logs_table] += logs + assisted
            for item in ctrl:
                in_memory[self._table_of(item)] += 1
            for h in self.holdings.values():
                for item in h.raw:
                    in_memory[self._table_of(item)] += 1
                for e in h.entries:
                    in_memory[e[E_TABLE]] += 1
            queued: Counter[str] = Counter()
            queued[self.logs_table] += logs + assisted
            for item in ctrl:
                queued[self._table_of(item)] += 1
            dropped_by_table: Counter[str] = Counter()
            for (table, _, _), n in self.dropped.items():
                dropped_by_table[table] += n
            tables = set(self.taken) | set(queued) | set(self.refused) | set(in_memory)
            by_table = {}
            for t in sorted(tables):
                by_table[t] = {
                    "accepted": self.taken[t] + queued[t] + self.refused[t],
                    "delivered": self.delivered[t],
                    "spooled_pending": self.spooled[t],
                    "dead_lettered": self.dead[t],
                    "dropped": dropped_by_table[t],
                    "in_memory": in_memory[t],
                }
            dropped: dict[str, dict[str, int]] = {}
            for (_, reason, level), n in sorted(self.dropped.items()):
                dropped.setdefault(reason, {})
                dropped[reason][level] = dropped[reason].get(level, 0) + n
            total = {k: sum(v[k] for v in by_table.values()) for k in _TERMS}
            return {**total, "dropped": dropped, "dropped_total": total["dropped"],
                    "by_table": by_table, "replayed_foreign": self.replayed_foreign,
                    "drop_reports": self.drop_reports}  # fmt: skip


_TERMS = ("accepted", "delivered", "spooled_pending", "dead_lettered", "dropped", "in_memory")
