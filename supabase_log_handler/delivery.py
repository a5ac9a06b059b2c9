"""Delivering a list of entries to the sink: order, retries, bad rows.

Used by the sender for live batches and for spool replay, and by ``push``.
Entries are sent in groups, in the order the foreign key needs: run rows that
create runs (and the rows of runs the group's log rows point at, when this
sender has not created them yet), then plain inserts per table, then merges
(final run states, updated rows) per table and column set, keeping only the
newest state of an id, and last the heartbeats of running runs (an update that
only applies while the run is still running, so a late one never undoes its
end). Transient failures are retried (``retry.py``); when one persists the rest is returned, undelivered, with the error. A group the
database refuses is halved until the bad row is found; it is retried once
sanitised (text cleaned and cut, JSON values of any table kept as text), then
reported as dead with the server's error, so one bad row never costs the others.
A table other than runs and logs (integration_logs) that is not set up costs
only its own rows: they become dead letters with the fix (``push --dead-letters``
sends them once it is made) and the table is tried again after
``ABSENT_RETRY_S``, while runs and logs go on.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from .errors import DataError, DeliveryError, SetupError, TransientError
from .retry import Breaker, call_with_retry
from .rows import ALIVE, E_ID, E_MERGE, E_PAYLOAD, E_RUN, E_TABLE, INSERT, MERGE, Entry
from .sanitise import sanitise
from .sinks import LOG_COLUMNS, Sink

ENSURED_RUNS_KEPT = 4096
ABSENT_RETRY_S = 60.0  # a table that is not set up is asked again after this long


class Outcome(NamedTuple):
    delivered: list[Entry]
    dead: list[tuple[Entry, DataError]]
    left: list[Entry]  # not delivered because of ``error``
    error: DeliveryError | None


class Deliverer:
    """Sends entries through one sink; see the module docstring."""

    def __init__(
        self,
        *,
        sink_factory: Callable[[], Sink],
        breaker: Breaker,
        runs_table: str,
        logs_table: str,
        retry_deadline_s: float,
        retry_max_wait_s: float,
        run_row: Callable[[str], bytes | None],
        on_request: Callable[[str], None] = lambda what: None,
    ) -> None:
        self._sink_factory = sink_factory
        self._sink: Sink | None = None
        self.breaker = breaker
        self.runs_table = runs_table
        self.logs_table = logs_table
        self.retry_deadline_s = retry_deadline_s
        self.retry_max_wait_s = retry_max_wait_s
        self.run_row = run_row
        self.on_request = on_request
        self.abort = threading.Event()  # cut retries short: a shutdown deadline is near
        self._budget = threading.local()  # this thread's retry budget for the current deliver()
        self.heartbeats = True  # False once the runs table proved to have no heartbeat column
        self._ensured: OrderedDict[str, None] = OrderedDict()
        self._absent: dict[str, tuple[float, DataError]] = {}  # table -> (ask again at, why)

    @property
    def sink(self) -> Sink:
        if self._sink is None:
            self._sink = self._sink_factory()
        return self._sink

    def close(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.close()

    # -- one list of entries -------------------------------------------------------------
    def deliver(
        self, entries: list[Entry], deadline: float | None = None, retry_s: float | None = None
    ) -> Outcome:
        """Send ``entries``, retrying transient failures for ``retry_s`` (default
        ``retry_deadline_s``) per request; never raises."""
        self._budget.s = self.retry_deadline_s if retry_s is None else retry_s
        delivered: list[Entry] = []
        dead: list[tuple[Entry, DataError]] = []
        groups = self._groups(entries)
        for i, (table, merge, columns, group) in enumerate(groups):
            try:
                if merge == ALIVE:
                    self._beat(table, group, delivered, dead, deadline)
                    continue
                if table == self.runs_table and not merge:
                    self._send(table, False, columns, group, delivered, dead, deadline)
                    self._remember(e[E_ID] for e in group)
                    continue
                if table != self.logs_table and self._refuse_absent(table, group, dead):
                    continue
                if table != self.runs_table:
                    self._ensure_runs(group, deadline)
                try:
                    self._send(table, merge == MERGE, columns, group, delivered, dead, deadline)
                except SetupError as exc:
                    if table == self.logs_table or not self._optional(table, exc):
                        raise
                    done = {id(e) for e in delivered} | {id(e) for e, _ in dead}
                    self._refuse_absent(table, [e for e in group if id(e) not in done], dead)
            except (TransientError, SetupError) as exc:
                left = [e for _, _, _, g in groups[i:] for e in g]
                done = {id(e) for e in delivered} | {id(e) for e, _ in dead}
                return Outcome(delivered, dead, [e for e in left if id(e) not in done], exc)
        return Outcome(delivered, dead, [], None)

    def _groups(self, entries: list[Entry]) -> list[tuple[str, int, tuple[str, ...], list[Entry]]]:
        opens: dict[tuple[str, ...], list[Entry]] = {}
        inserts: dict[tuple[str, tuple[str, ...]], list[Entry]] = {}
        merges: dict[tuple[str, tuple[str, ...]], list[Entry]] = {}
        alive: dict[str, list[Entry]] = {}
        for e in entries:
            table = e[E_TABLE]
            if e[E_MERGE] == ALIVE:
                alive.setdefault(table, []).append(e)
                continue
            columns = LOG_COLUMNS if table == self.logs_table else _columns(e[E_PAYLOAD])
            if e[E_MERGE]:
                merges.setdefault((table, columns), []).append(e)
            elif table == self.runs_table:
                opens.setdefault(columns, []).append(e)
            else:
                inserts.setdefault((table, columns), []).append(e)
        out: list[tuple[str, int, tuple[str, ...], list[Entry]]] = [
            (self.runs_table, INSERT, c, g) for c, g in opens.items()
        ]
        out += [(t, INSERT, c, g) for (t, c), g in inserts.items()]
        out += [(t, MERGE, c, g) for (t, c), g in merges.items()]
        out += [(t, ALIVE, (), g) for t, g in alive.items()]  # last: after a run's final row
        return out

    def _ensure_runs(self, group: list[Entry], deadline: float | None) -> None:
        """Create the runs these rows point at, if this sender has not yet (idempotent)."""
        missing = {e[E_RUN] for e in group if e[E_RUN]} - self._ensured.keys()
        found = {run_id: self.run_row(run_id) for run_id in sorted(missing)}
        by_columns: dict[tuple[str, ...], list[bytes]] = {}
        for row in found.values():
            if row is not None:
                by_columns.setdefault(_columns(row), []).append(row)
        for columns, part in by_columns.items():
            self._call(lambda c=columns, p=part: self.sink.write(  # type: ignore[misc]
                self.runs_table, p, merge=False, columns=c, timeout_s=_left(deadline)), "runs")  # fmt: skip
        self._remember(run_id for run_id, row in found.items() if row is not None)

    def _beat(
        self, table: str, group: list[Entry], delivered: list[Entry],
        dead: list[tuple[Entry, DataError]], deadline: float | None,
    ) -> None:  # fmt: skip
        """Heartbeats: the newest one of each run, and only while the run is still running."""
        newest = {e[E_ID]: e for e in group}
        for entry in group:
            if newest[entry[E_ID]] is not entry or not self.heartbeats:
                delivered.append(entry)  # superseded, or the table has no room for them
                continue
            try:
                self._call(lambda e=entry: self.sink.update(  # type: ignore[misc]
                    table, e[E_ID], e[E_PAYLOAD], only_if=("status", "running"),
                    timeout_s=_left(deadline)), table)  # fmt: skip
            except SetupError:  # e.g. the seeds' runs table, without heartbeat_at: stop trying
                self.heartbeats = False
            except DataError as exc:
                dead.append((entry, exc))
                continue
            delivered.append(entry)

    def _optional(self, table: str, exc: SetupError) -> bool:
        """A table beside runs and logs is not set up: note it, and say so (True)."""
        if table in (self.runs_table, self.logs_table):
            return False
        why = DataError(f"{exc.message}; to fix: {exc.fix}", code=exc.code or "setup",
                        status=exc.status)  # fmt: skip
        self._absent[table] = (time.monotonic() + ABSENT_RETRY_S, why)
        return True

    def _refuse_absent(
        self, table: str, group: list[Entry], dead: list[tuple[Entry, DataError]]
    ) -> bool:
        """Rows of a table known not to be set up go straight to the dead letters (True)."""
        absent = self._absent.get(table)
        if absent is None:
            return False
        if time.monotonic() >= absent[0] and not self.abort.is_set():
            del self._absent[table]
            return False
        dead.extend((e, absent[1]) for e in group)
        return True

    def _remember(self, run_ids: Any) -> None:
        for run_id in run_ids:
            self._ensured[run_id] = None
            self._ensured.move_to_end(run_id)
        while len(self._ensured) > ENSURED_RUNS_KEPT:
            self._ensured.popitem(last=False)

    def _send(
        self, table: str, merge: bool, columns: tuple[str, ...], group: list[Entry],
        delivered: list[Entry], dead: list[tuple[Entry, DataError]], deadline: float | None,
    ) -> None:  # fmt: skip
        """Write a group; halve it around refused rows (raises Transient/SetupError)."""
        sendable = group
        if merge:  # one request may not update a row twice: the newest state of an id wins
            latest: dict[str, int] = {e[E_ID]: i for i, e in enumerate(group) if e[E_ID]}
            sendable = [e for i, e in enumerate(group) if not e[E_ID] or latest[e[E_ID]] == i]
            if len(sendable) < len(group):
                kept = {id(e) for e in sendable}
                superseded = [e for e in group if id(e) not in kept]
                self._isolate(table, merge, columns, sendable, delivered, dead, deadline)
                delivered.extend(superseded)  # their newer state is stored
                return
        self._isolate(table, merge, columns, sendable, delivered, dead, deadline)

    def _isolate(
        self, table: str, merge: bool, columns: tuple[str, ...], group: list[Entry],
        delivered: list[Entry], dead: list[tuple[Entry, DataError]], deadline: float | None,
    ) -> None:  # fmt: skip
        payloads = [e[E_PAYLOAD] for e in group]
        try:
            self._call(lambda: self.sink.write(table, payloads, merge=merge, columns=columns,
                                               timeout_s=_left(deadline)), table)  # fmt: skip
            delivered.extend(group)
            return
        except DataError as exc:
            if len(group) > 1:
                mid = len(group) // 2
                self._isolate(table, merge, columns, group[:mid], delivered, dead, deadline)
                self._isolate(table, merge, columns, group[mid:], delivered, dead, deadline)
                return
            error = exc
        entry = group[0]
        if error.code == "23503" and entry[E_RUN]:  # its run row is not there: make it, once
            self._ensured.pop(entry[E_RUN], None)
            try:
                self._ensure_runs([entry], deadline)
                self._call(lambda: self.sink.write(table, payloads, merge=merge, columns=columns,
                                                   timeout_s=_left(deadline)), table)  # fmt: skip
                delivered.append(entry)
                return
            except DataError as again:
                error = again
        try:
            fixed = sanitise(entry[E_PAYLOAD])
            self._call(lambda: self.sink.write(table, [fixed], merge=merge, columns=_columns(fixed),
                                               timeout_s=_left(deadline)), table)  # fmt: skip
            delivered.append(entry)
        except DataError as final:
            dead.append((entry, final if final.code else error))

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        self.on_request(what)
        if self.breaker.is_open or self.abort.is_set():
            return fn()  # one attempt: this is a probe, or time is up
        return call_with_retry(
            fn,
            deadline_s=getattr(self._budget, "s", self.retry_deadline_s),
            max_wait_s=self.retry_max_wait_s,
            abort=self.abort,
            on_retry=lambda exc: self.on_request("retry"),
        )


def _columns(payload: bytes) -> tuple[str, ...]:
    try:
        row = json.loads(payload)
    except ValueError:
        return ("id",)
    return tuple(row) if isinstance(row, dict) else ("id",)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.05)
