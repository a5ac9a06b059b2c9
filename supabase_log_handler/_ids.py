"""Time-ordered UUIDs (version 7 layout) made on the client.

Every row gets its id before its first send attempt and keeps it through retries,
the spool and replay, which is what makes delivery idempotent. Ids made later in
one process sort after earlier ones (a 12-bit counter orders ids within a
millisecond); 62 random bits from ``os.urandom`` keep processes, forks included,
from colliding.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> uuid.UUID:
    """A new UUIDv7, strictly greater than the previous one made by this process."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF  # leave room to count up
        else:
            _counter += 1
            if _counter > 0xFFF:  # more than ~3000 ids in one millisecond: borrow the next
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        counter = _counter
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    return uuid.UUID(int=value)


def new_id() -> str:
    """A new UUIDv7 as the canonical string."""
    return str(uuid7())


def _reinit_after_fork() -> None:
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reinit_after_fork)
