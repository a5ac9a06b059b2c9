"""Child process: peak memory of a SupabaseHandler during a sustained outage.

Run by ``bench.py`` (section 4) as ``python _outage.py '<json config>'``; it talks
JSON lines on stdout and reads one "go" line on stdin:

1. builds a SupabaseHandler with ``spool=False`` and the small queue bounds it is
   given, logs a few rows and flushes them (so the client is imported and
   connected: that one-off cost is not part of the measurement), says ``ready``;
2. waits for ``go`` (the parent has stopped the gateway by then);
3. resets the peak-RSS mark (/proc/self/clear_refs) and, in ``tracemalloc`` mode,
   starts tracemalloc; logs ``records`` records (a mix of levels), waits
   ``settle_s`` and reads the peaks; a sampler thread also records VmRSS and the
   handler's queue rows and accounted bytes every few milliseconds;
4. closes the handler (bounded by ``close_timeout_s``) and says ``result``.

Tracemalloc slows allocation and adds its own memory to RSS, so the parent runs
this twice: mode ``rss`` (no tracemalloc) and mode ``tracemalloc``.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import select
import sys
import threading
import time
import tracemalloc
from typing import Any

# Per 100 records: how many of each level (the 100th-ish are ERRORs).
MIX = (("DEBUG", 30), ("INFO", 60), ("WARNING", 9), ("ERROR", 1))
GO_TIMEOUT_S = 120.0
SAMPLE_EVERY_S = 0.005


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def status_bytes(field: str) -> int | None:
    """A ``/proc/self/status`` size field (VmRSS, VmHWM) in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Sampler(threading.Thread):
    """Largest VmRSS, queue rows and queue accounted bytes seen while running."""

    def __init__(self, queue: Any) -> None:
        super().__init__(name="outage-sampler", daemon=True)
        self.queue = queue
        self.stop_event = threading.Event()
        self.max_rss = 0
        self.max_rows = 0
        self.max_accounted = 0
        self.samples = 0

    def run(self) -> None:
        while not self.stop_event.wait(SAMPLE_EVERY_S):
            self.sample()

    def sample(self) -> None:
        rss = status_bytes("VmRSS") or 0
        self.max_rss = max(self.max_rss, rss)
        if self.queue is not None:
            self.max_rows = max(self.max_rows, int(getattr(self.queue, "rows", 0)))
            self.max_accounted = max(self.max_accounted, int(getattr(self.queue, "nbytes", 0)))
        self.samples += 1


def main() -> int:
    cfg = json.loads(sys.argv[1])
    from supabase_log_handler import SupabaseHandler, start_run

    handler = SupabaseHandler(
        url=cfg["url"],
        key=cfg["key"],
        spool=False,
        max_queue_rows=cfg["max_queue_rows"],
        max_queue_bytes=cfg["max_queue_bytes"],
        install_signal_handlers=False,
        capture_uncaught=False,
        script_name="bench-outage",
    )
    log = logging.getLogger("bench.outage")
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    run = start_run("bench-outage")
    try:
        for i in range(10):
            log.info("warm-up %d", i)
        warm_flushed = handler.flush(60.0)
        gc.collect()
        _say({"event": "ready", "warm_flushed": warm_flushed, "pid": os.getpid()})

        ready, _, _ = select.select([sys.stdin], [], [], GO_TIMEOUT_S)
        if not ready or json.loads(sys.stdin.readline() or "null") != "go":
            _say({"event": "error", "error": "no 'go' from the parent"})
            return 2

        records: int = cfg["records"]
        tracing = cfg["mode"] == "tracemalloc"
        queue = getattr(getattr(handler, "_pipeline", None), "intake", None)
        sampler = Sampler(queue)
        hwm_reset = reset_hwm()
        rss0 = status_bytes("VmRSS") or 0
        hwm0 = status_bytes("VmHWM") or 0
        if tracing:
            tracemalloc.start()
        sampler.start()
        levels = [getattr(logging, name) for name, share in MIX for _ in range(share)]
        t0 = time.perf_counter()
        for i in range(records):
            log.log(levels[i % 100], "processed %d items for %s", i, "acme")
        log_s = time.perf_counter() - t0
        time.sleep(cfg["settle_s"])
        sampler.sample()
        traced_peak = tracemalloc.get_traced_memory()[1] if tracing else None
        if tracing:
            tracemalloc.stop()
        sampler.stop_event.set()
        sampler.join(5.0)
        hwm1 = status_bytes("VmHWM")
        stats_during = handler.stats()

        run.finish()
        t1 = time.perf_counter()
        closed = handler.close(cfg["close_timeout_s"])
        close_s = time.perf_counter() - t1
        _say(
            {
                "event": "result",
                "mode": cfg["mode"],
                "records": records,
                "log_s": log_s,
                "warm_flushed": warm_flushed,
                "tracemalloc_peak_bytes": traced_peak,
                "rss_start_bytes": rss0,
                "hwm_reset": hwm_reset,
                "hwm_start_bytes": hwm0,
                "hwm_end_bytes": hwm1,
                "rss_growth_bytes": (hwm1 - rss0)
                if (hwm1 is not None and hwm_reset)
                else sampler.max_rss - rss0,
                "rss_growth_method": "VmHWM after clear_refs"
                if (hwm1 is not None and hwm_reset)
                else "sampled VmRSS",
                "sampled_rss_growth_bytes": sampler.max_rss - rss0,
                "max_queue_rows_seen": sampler.max_rows,
                "max_queue_accounted_bytes_seen": sampler.max_accounted,
                "samples": sampler.samples,
                "stats_during": stats_during,
                "stats_after_close": handler.stats(),
                "closed_in_time": closed,
                "close_s": close_s,
            }
        )
        return 0
    finally:
        run.finish()
        handler.close(cfg["close_timeout_s"])


if __name__ == "__main__":
    sys.exit(main())
