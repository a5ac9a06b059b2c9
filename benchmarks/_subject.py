"""Child process: one logging handler measured in a fresh interpreter.

Run by ``bench.py`` as ``python _subject.py '<json config>'``; prints one JSON
object on stdout (the last line). The config names the subject (see
``_fakes.SUBJECTS``), the number of calls in each phase and the subject's
settings. The process is fresh for every measurement, so its CPU time and its
peak RSS belong to this handler alone.

1. Build the handler on a logger of its own (``propagate = False``, level INFO),
   log ``warmup`` records, flush and wait until they are delivered: threads are
   started, modules imported and connections open before any clock runs.
2. Phase ``calls``: ``calls`` logging calls in a tight loop, each one followed by
   a ``perf_counter_ns`` reading (the single-call wall times), the loop bracketed
   by ``thread_time_ns`` (the caller's own CPU) and ``process_time_ns``. Then the
   handler's own flush, and a wait until the fake (or the gateway) has received
   every record, or nothing more arrives for ``idle_s``. Process CPU is read again
   at that moment.
3. Phase ``burst``: the same with ``burst`` calls (5x the handler's queue size);
   its drain time is from the end of the loop to the last record's delivery.
4. Close the handler. Peak RSS is VmHWM read at the end of each phase, before the
   single-call times are sorted, then reset (``/proc/self/clear_refs``), so that
   the child's own bookkeeping does not count; the larger of the two is reported.
"""

from __future__ import annotations

import gc
import json
import logging
import statistics
import sys
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fakes import SUBJECTS, Delivery
from _outage import reset_hwm, status_bytes


def peak_rss_bytes() -> int:
    hwm = status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, round(q / 100.0 * len(sorted_values)) - 1))
    return float(sorted_values[rank])


def _median(counts: Counter[int]) -> float:
    """The median of the values ``counts`` holds (value -> how many times), 0 for none."""
    return float(statistics.median(sorted(counts.elements()))) if counts else 0.0


def run_phase(
    log: logging.Logger,
    subject: Any,
    delivery: Delivery,
    n: int,
    expected_before: int,
    timeout_s: float,
    idle_s: float,
) -> dict[str, Any]:
    ts = array("q", bytes(8 * (n + 1)))
    clock = time.perf_counter_ns
    thread_cpu = time.thread_time_ns
    process_cpu = time.process_time_ns
    info = log.info
    gc.collect()
    dropped = subject.info.get("dropped") or (lambda: 0)
    count0, requests0, sizes0 = delivery.snapshot()
    dropped0 = dropped()
    p0 = process_cpu()
    c0 = thread_cpu()
    ts[0] = clock()
    for i in range(n):
        info("fetched %d records", i, extra={"meta": {"count": i, "page": 3}})
        ts[i + 1] = clock()
    c1 = thread_cpu()
    subject.flush()
    if subject.info.get("delivered_on_return"):
        delivery.add(n)
    complete = delivery.wait_for(expected_before + n, timeout_s, idle_s, dropped)
    p1 = process_cpu()
    peak_rss = peak_rss_bytes()  # before the latencies below allocate their list
    count1, requests1, sizes1 = delivery.snapshot()
    delivered = count1 - count0
    sizes = sizes1 - sizes0
    dropped_n = dropped() - dropped0
    last_ns = delivery.last_ns if delivered else ts[n]
    laps = sorted(ts[i + 1] - ts[i] for i in range(n))
    delivery_s = max(last_ns - ts[0], 1) / 1e9
    phase = {
        "calls": n,
        "caller_wall_ns_per_call": (ts[n] - ts[0]) / n,
        "caller_cpu_ns_per_call": (c1 - c0) / n,
        "p50_ns": percentile(laps, 50),
        "p99_ns": percentile(laps, 99),
        "p999_ns": percentile(laps, 99.9),
        "max_ns": float(laps[-1]),
        "mean_ns": statistics.fmean(laps),
        "process_cpu_ns_per_record": (p1 - p0) / n,
        "delivered": delivered,
        "complete": complete,
        "dropped": dropped_n,  # as the handler itself counts them
        # Neither delivered nor counted as dropped; "extra_rows": rows the handler added itself
        # (a notice about drops, say), beyond the records logged.
        "lost": max(n - delivered - dropped_n, 0),
        "extra_rows": max(delivered + dropped_n - n, 0),
        "delivery_s": delivery_s,
        "records_per_s": delivered / delivery_s,
        "drain_s": max(last_ns - ts[n], 0) / 1e9,
        "loop_s": (ts[n] - ts[0]) / 1e9,
        "requests": requests1 - requests0,
        "rows_per_request_median": _median(sizes),
        "rows_per_request_mean": sum(k * v for k, v in sizes.items()) / max(sizes.total(), 1),
        "peak_rss_bytes": peak_rss,
    }
    del laps
    gc.collect()
    phase["peak_reset"] = reset_hwm()
    return phase


def main() -> int:
    cfg = json.loads(sys.argv[1])
    rss_start = status_bytes("VmRSS") or 0
    delivery = Delivery()
    t0 = time.perf_counter()
    subject = SUBJECTS[cfg["subject"]](delivery, **cfg.get("settings", {}))
    log = logging.getLogger("bench.job")
    log.handlers = [subject.handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    timeout_s = float(cfg.get("timeout_s", 900.0))
    idle_s = float(subject.info.get("idle_s", cfg.get("idle_s", 60.0)))
    result: dict[str, Any] = {"subject": cfg["subject"], "pid": _pid()}
    try:
        warmup = int(cfg.get("warmup", 200))
        for i in range(warmup):
            log.info("warm-up %d", i, extra={"meta": {"count": i, "page": 3}})
        subject.flush()
        if subject.info.get("delivered_on_return"):
            delivery.add(warmup)
        result["warmup"] = warmup
        result["warmed_up"] = delivery.wait_for(warmup, 120.0, 30.0)
        result["setup_s"] = time.perf_counter() - t0
        gc.collect()
        result["rss_start_bytes"] = rss_start
        result["rss_ready_bytes"] = status_bytes("VmRSS") or 0
        expected = delivery.count
        for phase in ("calls", "burst"):
            n = int(cfg.get(phase, 0))
            if n > 0:
                result[phase] = run_phase(log, subject, delivery, n, expected, timeout_s, idle_s)
                expected += n
        result["peak_rss_bytes"] = max(
            [result[p]["peak_rss_bytes"] for p in ("calls", "burst") if p in result]
            or [peak_rss_bytes()]
        )
        stats = subject.info.get("stats")
        if callable(stats):
            result["handler_stats"] = {
                k: v for k, v in stats().items() if v not in (None, 0, {}, False, "")
            }
        result["injected_via"] = subject.info.get("injected_via")
        result["run_id"] = subject.info.get("run_id")
    finally:
        t1 = time.perf_counter()
        subject.close()
        result["close_s"] = time.perf_counter() - t1
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    return 0


def _pid() -> int:
    import os

    return os.getpid()


if __name__ == "__main__":
    sys.exit(main())
