"""Where rows end up. A sink stores rows in a named table and reads them back.

Every sink is used by one thread at a time (the sender, or a reading command),
writes idempotently by ``id`` (``merge=False``: a row whose id is stored is left
alone; ``merge=True``: it is overwritten with the given columns), takes rows as
the JSON objects the worker encoded once, and raises only the project's
:class:`~supabase_log_handler.errors.DeliveryError` kinds.
``factory.make_sink`` picks the one the settings name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

Filter = tuple[str, str, Any]  # (column, op, value); op in eq, neq, gt, gte, lt, lte, in, not_null
LOG_COLUMNS = ("id", "run_id", "timestamp", "level", "step", "message", "meta")


class Sink(Protocol):
    """The one protocol every destination implements."""

    name: str

    def write(
        self,
        table: str,
        rows: Sequence[bytes],
        *,
        merge: bool,
        columns: Sequence[str],
        timeout_s: float | None = None,
    ) -> None:
        """Store rows (JSON objects with the given ``columns``), idempotently by ``id``."""

    def update(
        self,
        table: str,
        row_id: str,
        values: bytes,
        *,
        only_if: tuple[str, str],
        timeout_s: float | None = None,
    ) -> None:
        """Set ``values`` (a JSON object) on row ``row_id`` if its ``only_if`` column has that value."""

    def select(
        self,
        table: str,
        *,
        filters: list[Filter] | None = None,
        order: list[tuple[str, bool]] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rows matching every filter, ordered by (column, descending) pairs."""

    def prepare(self) -> None:
        """Load and create what the sink needs; no network I/O."""

    def close(self) -> None:
        """Release connections; safe twice."""


class DictRows:
    """Writing rows given as dicts (commands and tests); the pipeline writes encoded rows."""

    def write(
        self,
        table: str,
        rows: Sequence[bytes],
        *,
        merge: bool,
        columns: Sequence[str],
        timeout_s: float | None = None,
    ) -> None:
        raise NotImplementedError

    def insert_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Store rows, skipping any whose id is already stored."""
        from .._jsonsafe import encode

        if rows:
            columns = tuple(dict.fromkeys(k for r in rows for k in r))
            self.write(table, [encode(r) for r in rows], merge=False, columns=columns)

    def upsert_run(self, table: str, row: dict[str, Any], *, final: bool) -> None:
        """Create a run (``final=False``: only if absent) or write its whole state."""
        from .._jsonsafe import encode

        self.write(table, [encode(row)], merge=final, columns=tuple(row))
