"""Counters the pipeline keeps about itself, read by ``SupabaseHandler.stats()``."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    """Monotonic counters; each is written by one thread, read by any."""

    enqueued: int = 0
    sent: int = 0
    batches: int = 0
    requests: int = 0
    retries: int = 0
    spooled: int = 0
    replayed: int = 0
    sanitised: int = 0
    dead_lettered: int = 0
    lost: int = 0  # could be neither sent nor spooled (spool disabled or full)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}
