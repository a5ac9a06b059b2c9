"""Counters the pipeline keeps about itself, read by ``SupabaseHandler.stats()``."""

from __future__ import annotations

import threading
from typing import Any

COUNTERS = (
    "enqueued",
    "sent",
    "batches",
    "requests",
    "retries",
    "spooled",
    "replayed",
    "sanitised",
    "dead_lettered",
    "lost",  # could be neither sent nor spooled (spool disabled or full)
)


class Stats:
    """Monotonic counters; each is written by one thread, read by any."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def __getattr__(self, name: str) -> int:
        try:
            return self.__dict__["_counts"][name]  # type: ignore[no-any-return]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict[str, Any]:
        return dict(self._counts)
