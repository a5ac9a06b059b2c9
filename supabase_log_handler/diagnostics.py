"""The handler's own voice: short, rate-limited notes on stderr.

The worker threads must never call into ``logging`` (a record from them could
feed the handler, and ``logging``'s module lock may be held by a thread that is
waiting for them in ``flush``), so problems are written straight to stderr, at
most once a minute per kind of problem, masked by the redactor. Rows given up are
the exception to the limit: every one is counted, and what the limit held back is
said when the handler closes or the process ends (``say_unsaid_losses``).
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
        self._unsaid_lost = 0  # rows given up whose line the rate limit held back
        self._unsaid_why = ""

    def rows_lost(self, n: int, why: str) -> None:
        """``n`` rows could not be kept: say so now with any held back before, or hold
        them for the next line (or ``say_unsaid_losses``) if a line was said recently."""
        if n <= 0:
            return
        with self._lock:
            self._unsaid_lost += n
            self._unsaid_why = why
            last = self._last.get("lost")
            if last is not None and time.monotonic() - last < self.interval_s:
                return
            n, self._unsaid_lost = self._unsaid_lost, 0
        self.report("lost", f"{n} rows could not be kept: {why}")

    def say_unsaid_losses(self) -> None:
        """Say the rows given up that the rate limit held back, whatever the limit."""
        with self._lock:
            n, why = self._unsaid_lost, self._unsaid_why
            self._unsaid_lost = 0
            self._last.pop("lost", None)
        if n:
            self.report("lost", f"{n} rows could not be kept: {why}")

    def report(self, kind: str, message: str, *, error: bool = True) -> bool:
        """Say ``message`` unless the same ``kind`` was said less than ``interval_s`` ago;
        True if it was said (or would have been, with output disabled)."""
        try:
            message = self._mask(message)
            if error:
                self.last_error = message
            now = time.monotonic()
            with self._lock:
                last = self._last.get(kind)
                if last is not None and now - last < self.interval_s:
                    self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                    return False
                self._last[kind] = now
                suppressed = self._suppressed.pop(kind, 0)
            if suppressed:
                message += f" ({suppressed} similar messages suppressed)"
            if self.enabled:
                stream = sys.stderr
                if stream is not None:
                    stream.write(PREFIX + message + "\n")
                    stream.flush()
            return True
        except Exception:  # the reporter must never become a problem itself
            return False

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()
