"""The handler's own voice: short, rate-limited notes on stderr.

The worker threads must never call into ``logging`` (a record from them could
feed the handler, and ``logging``'s module lock may be held by a thread that is
waiting for them in ``flush``), so problems are written straight to stderr, at
most once a minute per kind of problem, masked by the redactor.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

PREFIX = "supabase-log-handler: "


class Diagnostics:
    """Rate-limited reporter; ``last_error`` keeps the most recent problem for ``stats()``."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        interval_s: float = 60.0,
        mask: Callable[[str], str] = lambda s: s,
    ) -> None:
        self.enabled = enabled
        self.interval_s = interval_s
        self._mask = mask
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.last_error: str | None = None

    def report(self, kind: str, message: str, *, error: bool = True) -> None:
        """Say ``message`` unless the same ``kind`` was said less than ``interval_s`` ago."""
        try:
            message = self._mask(message)
            if error:
                self.last_error = message
            now = time.monotonic()
            with self._lock:
                last = self._last.get(kind)
                if last is not None and now - last < self.interval_s:
                    self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                    return
                self._last[kind] = now
                suppressed = self._suppressed.pop(kind, 0)
            if suppressed:
                message += f" ({suppressed} similar messages suppressed)"
            if self.enabled:
                stream = sys.stderr
                if stream is not None:
                    stream.write(PREFIX + message + "\n")
                    stream.flush()
        except Exception:  # the reporter must never become a problem itself
            pass

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()
