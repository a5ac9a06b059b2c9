"""Where rows end up. A sink stores rows in a named table and reads them back.

Every sink is used by one thread at a time (the sender, or a reading command),
writes idempotently (a row whose id is already stored is left alone, a run's
final state overwrites its earlier one), and raises only the project's
:class:`~supabase_log_handler.errors.DeliveryError` kinds.
"""

from __future__ import annotations

from typing import Any, Protocol

Filter = tuple[str, str, Any]  # (column, op, value); op in eq, neq, gt, gte, lt, lte, in, not_null


class Sink(Protocol):
    """The one protocol every destination implements."""

    name: str

    def insert_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Store rows, skipping any whose id is already stored."""

    def upsert_run(self, table: str, row: dict[str, Any], *, final: bool) -> None:
        """Create a run (``final=False``: only if absent) or write its final state."""

    def select(
        self,
        table: str,
        *,
        filters: list[Filter] = ...,
        order: list[tuple[str, bool]] = ...,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rows matching every filter, ordered by (column, descending) pairs."""

    def prepare(self) -> None:
        """Load and create what the sink needs (the ``supabase`` client); no network I/O."""

    def close(self) -> None:
        """Release connections; safe twice."""
