"""Time-ordered UUIDs (version 7 layout) made on the client.

Every row gets its id before its first send attempt and keeps it through retries,
the spool and replay, which is what makes delivery idempotent. Ids made later in
one process sort after earlier ones (a 12-bit counter orders ids within a
millisecond); 62 random bits from ``os.urandom`` (drawn 512 ids at a time, and
drawn afresh after a fork) keep processes from colliding.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_RANDOM_CHUNK = 8 * 512
_random = b""
_random_pos = 0


def uuid7() -> uuid.UUID:
    """A new UUIDv7, strictly greater than the previous one made by this process."""
    import uuid  # not at module level: it costs start-up time and rows only need strings

    return uuid.UUID(int=_uuid7_int())


def _uuid7_int() -> int:
    global _last_ms, _counter, _random, _random_pos
    with _lock:
        if _random_pos >= len(_random):  # one urandom call per 512 ids
            _random, _random_pos = os.urandom(_RANDOM_CHUNK), 0
        rand = int.from_bytes(_random[_random_pos : _random_pos + 8], "big") & ((1 << 62) - 1)
        _random_pos += 8
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = (rand >> 40) & 0x3FF  # random start, leaving room to count up
        else:
            _counter += 1
            if _counter > 0xFFF:  # more than ~3000 ids in one millisecond: borrow the next
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        counter = _counter
    return (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand


def new_id() -> str:
    """A new UUIDv7 as the canonical string."""
    h = f"{_uuid7_int():032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _reinit_after_fork() -> None:
    global _lock, _random, _random_pos
    _lock = threading.Lock()
    _random, _random_pos = b"", 0  # never reuse the parent's random bytes


os.register_at_fork(after_in_child=_reinit_after_fork)
