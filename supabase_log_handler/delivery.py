"""Delivering a list of entries to the sink: order, retries, bad rows.

Used by the sender for live batches and for spool replay, and by ``push``.
Entries are sent in groups, in the order the foreign key needs: run rows that
create runs (and the rows of runs the group's log rows point at, when this
sender has not created them yet), then plain inserts per table, then merges
(final run states, updated rows) per table and column set, keeping only the
newest state of an id. Transient failures are retried (``retry.py``); when one
persists the rest is returned, undelivered, with the error. A group the
database refuses is halved until the bad row is found; it is retried once
sanitised (text cleaned and cut, JSON values of any table kept as text), then
reported as dead with the server's error, so one bad row never costs the others.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from ._jsonsafe import clean_text, to_jsonable
from .errors import DataError, DeliveryError, SetupError, TransientError
from .retry import Breaker, call_with_retry
from .rows import E_ID, E_MERGE, E_PAYLOAD, E_RUN, E_TABLE, Entry, encode, sanitise_row
from .sinks import LOG_COLUMNS, Sink

ENSURED_RUNS_KEPT = 4096


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
        self._ensured: OrderedDict[str, None] = OrderedDict()

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
    def deliver(self, entries: list[Entry], deadline: float | None = None) -> Outcome:
        """Send ``entries``; never raises."""
        delivered: list[Entry] = []
        dead: list[tuple[Entry, DataError]] = []
        groups = self._groups(entries)
        for i, (table, merge, columns, group) in enumerate(groups):
            try:
                if table == self.runs_table and not merge:
                    self._send(table, False, columns, group, delivered, dead, deadline)
                    self._remember(e[E_ID] for e in group)
                    continue
                if table != self.runs_table:
                    self._ensure_runs(group, deadline)
                self._send(table, merge, columns, group, delivered, dead, deadline)
            except (TransientError, SetupError) as exc:
                left = [e for _, _, _, g in groups[i:] for e in g]
                done = {id(e) for e in delivered} | {id(e) for e, _ in dead}
                return Outcome(delivered, dead, [e for e in left if id(e) not in done], exc)
        return Outcome(delivered, dead, [], None)

    def _groups(self, entries: list[Entry]) -> list[tuple[str, bool, tuple[str, ...], list[Entry]]]:
        opens: dict[tuple[str, ...], list[Entry]] = {}
        inserts: dict[tuple[str, tuple[str, ...]], list[Entry]] = {}
        merges: dict[tuple[str, tuple[str, ...]], list[Entry]] = {}
        for e in entries:
            table = e[E_TABLE]
            columns = LOG_COLUMNS if table == self.logs_table else _columns(e[E_PAYLOAD])
            if e[E_MERGE]:
                merges.setdefault((table, columns), []).append(e)
            elif table == self.runs_table:
                opens.setdefault(columns, []).append(e)
            else:
                inserts.setdefault((table, columns), []).append(e)
        out = [(self.runs_table, False, c, g) for c, g in opens.items()]
        out += [(t, False, c, g) for (t, c), g in inserts.items()]
        out += [(t, True, c, g) for (t, c), g in merges.items()]
        return out

    def _ensure_runs(self, group: list[Entry], deadline: float | None) -> None:
        """Create the runs these rows point at, if this sender has not yet (idempotent)."""
        missing = {e[E_RUN] for e in group if e[E_RUN]} - self._ensured.keys()
        rows = [r for r in (self.run_row(run_id) for run_id in sorted(missing)) if r is not None]
        by_columns: dict[tuple[str, ...], list[bytes]] = {}
        for row in rows:
            by_columns.setdefault(_columns(row), []).append(row)
        for columns, part in by_columns.items():
            self._call(lambda c=columns, p=part: self.sink.write(  # type: ignore[misc]
                self.runs_table, p, merge=False, columns=c, timeout_s=_left(deadline)), "runs")  # fmt: skip
        self._remember(sorted(missing))

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
            fixed = sanitised(entry[E_PAYLOAD])
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
            deadline_s=self.retry_deadline_s,
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


def sanitised(payload: bytes, max_chars: int = 10_000) -> bytes:
    """The last-resort copy of a refused row of any table.

    ``rows.sanitise_row`` fixes a log's text and ``meta`` and a run's ``metadata``; other
    JSON values (a call's request and response payloads) become
    ``{"sanitised": true, "text": <their JSON, cleaned and cut>}`` and other text is
    cleaned, so a payload PostgreSQL refuses (a NUL, say) cannot cost the row itself.
    """
    row = sanitise_row(json.loads(payload), max_chars)
    for key, value in row.items():
        if key in ("meta", "metadata"):
            continue
        if isinstance(value, (dict, list)):
            text = json.dumps(to_jsonable(value), ensure_ascii=False)
            row[key] = {"sanitised": True, "text": text[:max_chars]}
        elif isinstance(value, str):
            row[key] = clean_text(value)
    return encode(row)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.05)
