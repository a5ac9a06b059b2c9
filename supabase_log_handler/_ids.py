"""Time-ordered UUIDs (version 7 layout) made on the client, without a lock.

Every row gets its id before its first send attempt and keeps it through retries,
the spool and replay, which is what makes delivery idempotent. The layout is
``unix ms (48) | version | counter (42, split by the variant bits) | node (32)``:
the counter is one process-wide ``itertools.count`` (atomic under the GIL, so a
signal handler can make an id while the interrupted thread is making one), which
starts at a random value; the node is random per process. So ids made one after
another sort in that order, in one thread or across threads, and two processes
would have to meet on the same millisecond, counter value and 32-bit node to
collide. A forked child draws a new counter start and node.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uuid

_COUNTER_BITS = 42
_COUNTER_MASK = (1 << _COUNTER_BITS) - 1
_LOW_BITS = 30  # counter bits after the variant; the 12 above them fill rand_a
_MS_MASK = (1 << 48) - 1
_HEAD = 0x7 << 76 | 0b10 << 62  # version 7, RFC 4122 variant


def _fresh() -> tuple[itertools.count[int], int]:
    seed = int.from_bytes(os.urandom(10), "big")
    return itertools.count(seed & (_COUNTER_MASK >> 2)), seed >> 48 & 0xFFFFFFFF


_counter, _node = _fresh()
_time_ns = time.time_ns


def _uuid7_int() -> int:
    n = next(_counter) & _COUNTER_MASK
    ms = _time_ns() // 1_000_000
    return (
        (ms & _MS_MASK) << 80
        | _HEAD
        | (n >> _LOW_BITS) << 64
        | (n & ((1 << _LOW_BITS) - 1)) << 32
        | _node
    )


def uuid7() -> uuid.UUID:
    """A new UUIDv7, greater than every one made before it in this process."""
    import uuid  # not at module level: it costs start-up time and rows only need strings

    return uuid.UUID(int=_uuid7_int())


def new_id() -> str:
    """A new UUIDv7 as the canonical string."""
    h = f"{_uuid7_int():032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _reinit_after_fork() -> None:
    global _counter, _node
    _counter, _node = _fresh()  # never continue the parent's sequence


os.register_at_fork(after_in_child=_reinit_after_fork)
