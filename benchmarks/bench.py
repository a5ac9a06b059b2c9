"""Benchmark of supabase_log_handler: caller cost, start-up, throughput, outage memory.

    python benchmarks/bench.py [--quick] [--json] [--calls N] [--repeats R]
                               [--gateway-in-process]

Starts its own PostgreSQL cluster and PostgREST-compatible gateway (tests/stack),
measures four things and prints a report (or, with --json, one JSON object on
stdout; progress goes to stderr):

1. caller-thread cost per logging call, SupabaseHandler against stdlib handlers;
2. start-up cost (import + construct) in fresh interpreters;
3. end-to-end throughput to PostgreSQL, checked by SQL;
4. peak memory during a sustained outage with the spool disabled.

Everything it starts is stopped at the end, also on error; every wait has a
deadline. See benchmarks/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import logging.handlers
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stack import LineChannel, Stack, child_env

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 1.5
TARGET_TEXT = (
    f"target: SupabaseHandler within {TARGET_RATIO:g}x of QueueHandler on the caller's thread"
)
CALL_TEXT = 'log.info("processed %d items for %s", i, "acme")'
FLUSH_TIMEOUT_S = 120.0
CLOSE_TIMEOUT_S = 10.0
MiB = 1024 * 1024


def progress(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def make_logger(name: str, handler: logging.Handler, level: int = logging.INFO) -> logging.Logger:
    """A logger whose only handler is ``handler``, not propagating."""
    log = logging.getLogger(name)
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(level)
    return log


class Cleanup:
    """Close callbacks, run in reverse order; each one's failure is kept, not raised."""

    def __init__(self) -> None:
        self._items: list[tuple[str, Callable[[], Any]]] = []
        self.problems: list[str] = []

    def add(self, name: str, fn: Callable[[], Any]) -> Callable[[], None]:
        item = (name, fn)
        self._items.append(item)

        def run_now() -> None:
            # Removed only once it has run: if a signal interrupts it, run_all tries again.
            if item in self._items:
                self._run(item)
                self._items.remove(item)

        return run_now

    def _run(self, item: tuple[str, Callable[[], Any]]) -> None:
        try:
            item[1]()
        except Exception as exc:
            self.problems.append(f"{item[0]}: {exc!r}")

    def run_all(self) -> None:
        while self._items:
            self._run(self._items.pop())


def supabase_handler(stack: Stack, tmp: Path, name: str, **settings: Any) -> Any:
    from supabase_log_handler import SupabaseHandler

    settings.setdefault("spool_path", str(tmp / f"{name}-spool.sqlite3"))
    return SupabaseHandler(
        url=stack.gateway.url,
        key=stack.gateway.service_key,
        install_signal_handlers=False,
        capture_uncaught=False,
        script_name=name,
        **settings,
    )


# --------------------------------------------------------------------------- 1. caller cost


class Subject:
    """One handler under measurement: its logger, how to flush it, how to close it."""

    def __init__(
        self, key: str, label: str, handler: logging.Handler, flush: Callable[[], bool]
    ) -> None:
        self.key = key
        self.label = label
        self.handler = handler
        self.flush = flush
        self.log = make_logger(f"bench.caller.{key}", handler)
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.bg: list[float] = []
        self.flush_s: list[float] = []
        self.flush_failures = 0

    def rep(self, n: int, record: bool = True) -> None:
        log = self.log
        gc.collect()
        p0 = time.process_time_ns()
        c0 = time.thread_time_ns()
        w0 = time.perf_counter_ns()
        for i in range(n):
            log.info("processed %d items for %s", i, "acme")
        w1 = time.perf_counter_ns()
        c1 = time.thread_time_ns()
        f0 = time.perf_counter()
        ok = self.flush()
        flush_s = time.perf_counter() - f0
        c2 = time.thread_time_ns()
        p2 = time.process_time_ns()
        if not record:
            return
        self.wall.append((w1 - w0) / n)
        self.cpu.append((c1 - c0) / n)
        # CPU of every other thread of this process, from the first call to the end of the flush.
        self.bg.append(max((p2 - p0) - (c2 - c0), 0) / n)
        self.flush_s.append(flush_s)
        if not ok:
            self.flush_failures += 1


def _wait_queue_empty(q: queue.Queue[Any], timeout_s: float) -> bool:
    with q.all_tasks_done:
        return q.all_tasks_done.wait_for(lambda: q.unfinished_tasks == 0, timeout_s)


def _otel_subject(cleanup: Cleanup) -> tuple[Subject | None, str | None]:
    """OpenTelemetry's LoggingHandler + BatchLogRecordProcessor + a discarding exporter, if installed."""
    try:
        from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    except ImportError:
        return None, "skipped: opentelemetry-sdk is not installed (optional; not a dependency)"
    try:
        from opentelemetry.sdk._logs import export as otel_export

        # Older SDKs name these LogExporter / LogExportResult, newer ones LogRecord*.
        base = getattr(otel_export, "LogExporter", None) or otel_export.LogRecordExporter
        result = getattr(otel_export, "LogExportResult", None) or otel_export.LogRecordExportResult

        class Discard(base):  # type: ignore[misc, valid-type]
            def export(self, batch: Any) -> Any:
                return result.SUCCESS

            def shutdown(self) -> None:
                pass

            def force_flush(self, timeout_millis: int = 30_000) -> bool:
                return True

        provider = LoggerProvider()
        provider.add_log_record_processor(BatchLogRecordProcessor(Discard()))
        cleanup.add("OpenTelemetry provider", provider.shutdown)
        handler = LoggingHandler(level=logging.NOTSET, logger_provider=provider)
    except Exception as exc:  # an SDK version this code does not know
        return None, f"skipped: could not set up opentelemetry-sdk ({exc!r})"

    def flush() -> bool:
        return bool(provider.force_flush(int(FLUSH_TIMEOUT_S * 1000)))

    return Subject("otel", "OTel LoggingHandler (batch, discard)", handler, flush), None


def measure_caller(
    stack: Stack, tmp: Path, calls: int, repeats: int, cleanup: Cleanup
) -> dict[str, Any]:
    from supabase_log_handler import start_run

    subjects: list[Subject] = []
    null = logging.NullHandler()
    subjects.append(Subject("null", "logging.NullHandler", null, lambda: True))

    q: queue.Queue[Any] = queue.Queue(-1)
    listener = logging.handlers.QueueListener(q, logging.NullHandler())
    listener.start()

    def stop_listener() -> None:
        listener.enqueue_sentinel()
        thread = getattr(listener, "_thread", None)
        if thread is not None:
            thread.join(CLOSE_TIMEOUT_S)
            listener._thread = None  # type: ignore[attr-defined]

    cleanup.add("QueueListener", stop_listener)
    subjects.append(
        Subject(
            "queue",
            "QueueHandler + QueueListener",
            logging.handlers.QueueHandler(q),
            lambda: _wait_queue_empty(q, FLUSH_TIMEOUT_S),
        )
    )

    supa = supabase_handler(stack, tmp, "bench-caller")
    close_supa = cleanup.add("SupabaseHandler (caller)", lambda: supa.close(CLOSE_TIMEOUT_S))
    run = start_run("bench-caller")
    cleanup.add("run bench-caller", run.finish)
    subjects.append(
        Subject("supabase", "SupabaseHandler -> gateway", supa, lambda: supa.flush(FLUSH_TIMEOUT_S))
    )

    otel, otel_note = _otel_subject(cleanup)
    if otel is not None:
        subjects.append(otel)

    # Warm-up, not recorded: threads start, the Supabase client is imported and connected.
    subjects[2].log.info("warm-up")
    warm_ok = supa.flush(FLUSH_TIMEOUT_S)
    for s in subjects:
        s.rep(min(calls, 1000), record=False)

    for r in range(repeats):
        order = subjects[r % len(subjects) :] + subjects[: r % len(subjects)]
        for s in order:
            s.rep(calls)
        progress(f"caller cost: round {r + 1}/{repeats}")

    supa_stats = supa.stats()
    run.finish()
    close_supa()

    qh = next(s for s in subjects if s.key == "queue")
    qh_wall, qh_cpu = median(qh.wall), median(qh.cpu)
    rows: dict[str, Any] = {}
    for s in subjects:
        wall, cpu = median(s.wall), median(s.cpu)
        # Paired: each round's value over QueueHandler's in the same round, then the median.
        # Robust to the machine's speed drifting between rounds.
        wall_ratios = [a / b for a, b in zip(s.wall, qh.wall, strict=True)]
        cpu_ratios = [a / b for a, b in zip(s.cpu, qh.cpu, strict=True)]
        rows[s.key] = {
            "label": s.label,
            "wall_ns_per_call": wall,
            "cpu_ns_per_call": cpu,
            "wall_ratio_vs_queue": median(wall_ratios),
            "cpu_ratio_vs_queue": median(cpu_ratios),
            "wall_ratio_of_medians": wall / qh_wall,
            "cpu_ratio_of_medians": cpu / qh_cpu,
            "wall_ratio_p25_p75": list(quartiles(wall_ratios)),
            "cpu_ratio_p25_p75": list(quartiles(cpu_ratios)),
            "wall_ns_p25_p75": list(quartiles(s.wall)),
            "cpu_ns_p25_p75": list(quartiles(s.cpu)),
            "background_cpu_ns_per_call": median(s.bg),
            "flush_s_median": median(s.flush_s),
            "flush_failures": s.flush_failures,
            "wall_ns_samples": s.wall,
            "cpu_ns_samples": s.cpu,
        }
    sp = rows["supabase"]
    return {
        "call": CALL_TEXT,
        "calls": calls,
        "repeats": repeats,
        "warm_up_flushed": warm_ok,
        "handlers": rows,
        "skipped": {} if otel is not None else {"otel": otel_note},
        "supabase_stats": _compact_stats(supa_stats),
        "target": {
            "text": TARGET_TEXT,
            "ratio_limit": TARGET_RATIO,
            "cpu_ratio": sp["cpu_ratio_vs_queue"],
            "wall_ratio": sp["wall_ratio_vs_queue"],
            "cpu_met": sp["cpu_ratio_vs_queue"] <= TARGET_RATIO,
            "wall_met": sp["wall_ratio_vs_queue"] <= TARGET_RATIO,
        },
    }


def _compact_stats(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if v not in (None, 0, {}, False)}


# --------------------------------------------------------------------------- 2. start-up

_BASELINE_CHILD = """
import sys, time
pre = "logging" in sys.modules
t0 = time.perf_counter()
import logging
t1 = time.perf_counter()
import json
print(json.dumps({"import_s": t1 - t0, "preloaded": pre}))
"""

_HANDLER_CHILD = """
import sys, time
pre = "logging" in sys.modules
t0 = time.perf_counter()
import supabase_log_handler
t1 = time.perf_counter()
h = supabase_log_handler.SupabaseHandler(url=URL, key=KEY, install_signal_handlers=False, capture_uncaught=False)
t2 = time.perf_counter()
import json, threading
print(json.dumps({"import_s": t1 - t0, "construct_s": t2 - t1, "preloaded": pre,
                  "threads": threading.active_count(), "modules": len(sys.modules)}))
h.close(1.0)
"""


def _child(code: str, cwd: Path) -> tuple[dict[str, Any], float]:
    env = child_env()
    # Measure what an installed package costs: its modules load from cached bytecode
    # (pip compiles them at install time), whatever this shell says about writing it.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"start-up child failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def measure_startup(stack: Stack, tmp: Path, runs: int) -> dict[str, Any]:
    cwd = tmp / "startup"  # no .env above it that the constructor would read
    cwd.mkdir(exist_ok=True)
    code = _HANDLER_CHILD.replace("URL", repr(stack.gateway.url)).replace(
        "KEY", repr(stack.gateway.service_key)
    )
    base_import, base_wall, imp, cons, wall = [], [], [], [], []
    threads, modules = 0, 0
    _child(_BASELINE_CHILD, cwd)  # warm-up: writes the bytecode caches, outside the figures
    _child(code, cwd)
    for i in range(runs):  # alternate, so noise hits both alike
        b, bw = _child(_BASELINE_CHILD, cwd)
        h, hw = _child(code, cwd)
        base_import.append(b["import_s"])
        base_wall.append(bw)
        imp.append(h["import_s"])
        cons.append(h["construct_s"])
        wall.append(hw)
        threads, modules = h["threads"], h["modules"]
        progress(f"start-up: run {i + 1}/{runs}")
    both = [a + b for a, b in zip(imp, cons, strict=True)]
    logging_ms = median(base_import) * 1000
    return {
        "runs": runs,
        "import_logging_ms": logging_ms,
        "import_handler_ms": median(imp) * 1000,
        "construct_ms": median(cons) * 1000,
        "import_plus_construct_ms": median(both) * 1000,
        "ratio_vs_import_logging": median(both) * 1000 / logging_ms,
        "process_wall_logging_ms": median(base_wall) * 1000,
        "process_wall_handler_ms": median(wall) * 1000,
        "process_wall_extra_ms": (median(wall) - median(base_wall)) * 1000,
        "threads_after_construct": threads,
        "modules_loaded": modules,
    }


# --------------------------------------------------------------------------- 3. end-to-end


def measure_e2e(stack: Stack, tmp: Path, rows: int, cleanup: Cleanup) -> dict[str, Any]:
    from supabase_log_handler import start_run

    handler = supabase_handler(stack, tmp, "bench-e2e")
    close = cleanup.add("SupabaseHandler (e2e)", lambda: handler.close(CLOSE_TIMEOUT_S))
    log = make_logger("bench.e2e", handler)

    warm = start_run("bench-e2e-warm-up")  # imports and connects the client outside the clock
    log.info("warm-up")
    warm_ok = handler.flush(FLUSH_TIMEOUT_S)
    warm.finish()
    handler.flush(FLUSH_TIMEOUT_S)

    run = start_run("bench-e2e")
    cleanup.add("run bench-e2e", run.finish)
    stack.gateway.reset_log()
    t0 = time.perf_counter()
    for i in range(rows):
        log.info("processed %d items for %s", i, "acme")
    t1 = time.perf_counter()
    flushed = handler.flush(FLUSH_TIMEOUT_S)
    t2 = time.perf_counter()
    requests = stack.gateway.requests
    stats = handler.stats()
    run.finish()
    close()

    posts = [
        r
        for r in requests
        if r.method == "POST" and r.path.split("?")[0] == "/rest/v1/logs" and 200 <= r.status < 300
    ]
    sent_rows = sum(r.rows for r in posts)
    counted = int(stack.fetchval("select count(*) from logs where run_id = %s", (run.id,)))
    return {
        "rows": rows,
        "warm_up_flushed": warm_ok,
        "flushed": flushed,
        "log_s": t1 - t0,
        "flush_s": t2 - t1,
        "total_s": t2 - t0,
        "rows_per_s": rows / (t2 - t0),
        "caller_rows_per_s": rows / (t1 - t0),
        "http_requests_total": len(requests),
        "log_post_requests": len(posts),
        "rows_in_log_posts": sent_rows,
        "avg_rows_per_request": sent_rows / len(posts) if posts else 0.0,
        "db_count": counted,
        "count_matched": counted == rows,
        "stats": _compact_stats(stats),
    }


# --------------------------------------------------------------------------- 4. outage memory


def _gateway_answers(stack: Stack) -> int | str:
    gw = stack.gateway
    req = urllib.request.Request(
        gw.url + "/rest/v1/logs?select=id&limit=1",
        headers={"apikey": gw.service_key, "Authorization": f"Bearer {gw.service_key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError as exc:
        return f"no answer: {exc}"


def measure_outage(stack: Stack, tmp: Path, records: int, cleanup: Cleanup) -> dict[str, Any]:
    from supabase_log_handler.config import FIELDS

    max_rows, max_bytes = 20_000, 8 * MiB
    batch_bytes = int(FIELDS["max_batch_bytes"].default)
    fixed = 4 * MiB
    allowance = 3 * batch_bytes + fixed
    bound = max_bytes + allowance
    cfg = {
        "url": stack.gateway.url,
        "key": stack.gateway.service_key,
        "records": records,
        "max_queue_rows": max_rows,
        "max_queue_bytes": max_bytes,
        "settle_s": 0.5,
        "close_timeout_s": 3.0,
    }
    results: dict[str, Any] = {}
    for mode in ("rss", "tracemalloc"):
        chan = LineChannel(
            [sys.executable, str(HERE / "_outage.py"), json.dumps({**cfg, "mode": mode})],
            cwd=str(tmp),
        )
        stop_chan = cleanup.add(f"outage child ({mode})", lambda c=chan: c.close(10.0))
        stopped = False
        try:
            ready = chan.recv(90.0)
            if ready.get("event") != "ready":
                raise RuntimeError(f"outage child: {ready}")
            stack.gateway.stop()
            stopped = True
            chan.send("go")
            result = chan.recv(60.0 + records * 0.0005)
            if result.get("event") != "result":
                raise RuntimeError(f"outage child: {result}")
            results[mode] = result
        finally:
            if stopped:
                stack.gateway.start()
            stop_chan()
        progress(f"outage: {mode} run done")

    rss, tm = results["rss"], results["tracemalloc"]
    peak = int(tm["tracemalloc_peak_bytes"])
    rss_growth = int(rss["rss_growth_bytes"])
    dropped: dict[str, int] = {}
    for by_level in rss["stats_during"].get("dropped", {}).values():
        for level, n in by_level.items():
            dropped[level] = dropped.get(level, 0) + n
    return {
        "records": records,
        "level_mix_percent": {"DEBUG": 30, "INFO": 60, "WARNING": 9, "ERROR": 1},
        "max_queue_rows": max_rows,
        "max_queue_bytes": max_bytes,
        "allowance_bytes": allowance,
        "allowance_rule": f"3 x max_batch_bytes ({batch_bytes}) + {fixed // MiB} MiB fixed",
        "bound_bytes": bound,
        "tracemalloc_peak_bytes": peak,
        "rss_growth_bytes": rss_growth,
        "rss_growth_method": rss["rss_growth_method"],
        "within_bound_tracemalloc": peak <= bound,
        "within_bound_rss": rss_growth <= bound,
        "log_s": rss["log_s"],
        "log_s_with_tracemalloc": tm["log_s"],
        "max_queue_rows_seen": rss["max_queue_rows_seen"],
        "max_queue_accounted_bytes_seen": rss["max_queue_accounted_bytes_seen"],
        "traced_bytes_per_queued_row": peak / max(tm["max_queue_rows_seen"], 1),
        "dropped_by_level": dropped,
        "dropped_total": sum(dropped.values()),
        "lost_after_close": rss["stats_after_close"].get("dropped_total", 0),
        "sent_during_outage": rss["stats_during"].get("delivered", 0),
        "closed_in_time": rss["closed_in_time"],
        "close_s": rss["close_s"],
        "runs": results,
        "gateway_restarted_status": _gateway_answers(stack),
    }


# --------------------------------------------------------------------------- report


def _t(ns: float) -> str:
    if ns >= 1_000_000:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1_000:
        return f"{ns / 1e3:.2f} us"
    return f"{ns:.0f} ns"


def _b(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


def render(res: dict[str, Any]) -> str:
    out: list[str] = []
    cfg = res["config"]
    out.append("supabase_log_handler benchmark")
    out.append(
        f"  python {cfg['python']} on {cfg['platform']}, {cfg['cpus']} CPUs; gateway {cfg['gateway']}"
        + ("; --quick" if cfg["quick"] else "")
    )
    out.append("  (numbers are from this run on this machine; compare ratios within one run)")

    c = res.get("caller_cost")
    if c:
        out.append("")
        out.append(f"1. Caller-thread cost per call: {c['call']}")
        out.append(
            f"   {c['calls']:,} calls x {c['repeats']} repetitions, handlers interleaved; medians"
        )
        head = f"   {'handler':<46}{'wall/call':>11}{'CPU/call':>11}{'wall/QH':>9}{'CPU/QH':>8}{'bg CPU/call':>13}"
        out.append(head)
        for row in c["handlers"].values():
            out.append(
                f"   {row['label']:<46}{_t(row['wall_ns_per_call']):>11}{_t(row['cpu_ns_per_call']):>11}"
                f"{row['wall_ratio_vs_queue']:>8.2f}x{row['cpu_ratio_vs_queue']:>7.2f}x"
                f"{_t(row['background_cpu_ns_per_call']):>13}"
            )
        for note in c["skipped"].values():
            out.append(f"   {'OTel LoggingHandler':<46}{note}")
        out.append(
            "   x/QH: median over rounds of (this handler / QueueHandler in the same round); p25-p75:"
        )
        for key, row in c["handlers"].items():
            if key == "queue":
                continue
            w, u = row["wall_ratio_p25_p75"], row["cpu_ratio_p25_p75"]
            out.append(
                f"     {row['label']:<44}wall {w[0]:.2f}-{w[1]:.2f}x, CPU {u[0]:.2f}-{u[1]:.2f}x "
                f"(ratio of medians: wall {row['wall_ratio_of_medians']:.2f}x, CPU {row['cpu_ratio_of_medians']:.2f}x)"
            )
        out.append(
            "   bg CPU/call: CPU of this process's other threads from the first call to the end of the flush"
        )
        sp = c["handlers"]["supabase"]
        out.append(
            f"   SupabaseHandler flush per repetition: median {sp['flush_s_median']:.2f} s, "
            f"{sp['flush_failures']} timed out"
        )
        tg = c["target"]
        out.append(f"   {tg['text']}")
        out.append(
            f"     measured: CPU {tg['cpu_ratio']:.2f}x -> {'met' if tg['cpu_met'] else 'NOT met'}; "
            f"wall {tg['wall_ratio']:.2f}x -> {'met' if tg['wall_met'] else 'NOT met'}"
        )

    s = res.get("startup")
    if s:
        out.append("")
        out.append(
            f"2. Start-up cost (fresh interpreter each time, bytecode cached as after"
            f" pip install; median of {s['runs']})"
        )
        out.append(f"   {'import logging':<44}{s['import_logging_ms']:>9.1f} ms")
        out.append(f"   {'import supabase_log_handler':<44}{s['import_handler_ms']:>9.1f} ms")
        out.append(f"   {'construct SupabaseHandler':<44}{s['construct_ms']:>9.1f} ms")
        out.append(
            f"   {'import + construct':<44}{s['import_plus_construct_ms']:>9.1f} ms"
            f"   ({s['ratio_vs_import_logging']:.1f}x import logging)"
        )
        out.append(
            f"   {'whole process: import logging':<44}{s['process_wall_logging_ms']:>9.1f} ms"
        )
        out.append(
            f"   {'whole process: import + construct':<44}{s['process_wall_handler_ms']:>9.1f} ms"
            f"   (+{s['process_wall_extra_ms']:.1f} ms)"
        )
        out.append(
            f"   threads after constructing: {s['threads_after_construct']}; modules loaded: {s['modules_loaded']}"
        )

    e = res.get("end_to_end")
    if e:
        out.append("")
        out.append(f"3. End-to-end: {e['rows']:,} rows -> SupabaseHandler -> gateway -> PostgreSQL")
        out.append(
            f"   {'logging calls':<28}{e['log_s']:>8.2f} s  ({e['caller_rows_per_s']:,.0f} rows/s on the caller)"
        )
        out.append(
            f"   {'flush (until all sent)':<28}{e['flush_s']:>8.2f} s  (flushed: {e['flushed']})"
        )
        out.append(f"   {'throughput':<28}{e['rows_per_s']:>8,.0f} rows/s")
        out.append(
            f"   {'HTTP':<28}{e['log_post_requests']:>8} POST /rest/v1/logs (2xx), "
            f"{e['avg_rows_per_request']:.1f} rows/request; {e['http_requests_total']} requests in all"
        )
        out.append(
            f"   {'SQL count(*) for the run':<28}{e['db_count']:>8,}  "
            f"{'matches' if e['count_matched'] else 'MISMATCH'} ({e['rows']:,} logged)"
        )

    o = res.get("outage")
    if o:
        out.append("")
        out.append(
            f"4. Peak memory, sustained outage, spool=False, max_queue_rows={o['max_queue_rows']:,}, "
            f"max_queue_bytes={_b(o['max_queue_bytes'])}"
        )
        mix = ", ".join(f"{k} {v}%" for k, v in o["level_mix_percent"].items())
        out.append(f"   {'records logged':<30}{o['records']:,} ({mix}) in {o['log_s']:.2f} s")
        out.append(
            f"   {'bound':<30}{_b(o['bound_bytes'])} = {_b(o['max_queue_bytes'])} queue + "
            f"{_b(o['allowance_bytes'])} allowance ({o['allowance_rule']})"
        )
        out.append(
            f"   {'tracemalloc peak':<30}{_b(o['tracemalloc_peak_bytes'])}  "
            f"{'within bound' if o['within_bound_tracemalloc'] else 'EXCEEDS bound'}"
        )
        out.append(
            f"   {'RSS growth':<30}{_b(o['rss_growth_bytes'])}  "
            f"{'within bound' if o['within_bound_rss'] else 'EXCEEDS bound'} ({o['rss_growth_method']})"
        )
        out.append(
            f"   {'queue at its fullest':<30}{o['max_queue_rows_seen']:,} rows, "
            f"{_b(o['max_queue_accounted_bytes_seen'])} accounted; "
            f"{o['traced_bytes_per_queued_row']:,.0f} traced bytes per queued row"
        )
        dropped = (
            ", ".join(f"{k} {v:,}" for k, v in sorted(o["dropped_by_level"].items())) or "none"
        )
        out.append(f"   {'dropped (stats)':<30}{o['dropped_total']:,}: {dropped}")
        out.append(
            f"   {'lost at close (no spool)':<30}{o['lost_after_close']:,}; close took {o['close_s']:.2f} s "
            f"(in time: {o['closed_in_time']})"
        )
        out.append(f"   {'gateway restarted':<30}answers {o['gateway_restarted_status']}")
        verdict = o["within_bound_tracemalloc"] and o["within_bound_rss"]
        out.append(f"   verdict: {'stayed within' if verdict else 'did NOT stay within'} the bound")

    if res.get("error"):
        out.append("")
        out.append(f"ERROR: {res['error']}")
    if res.get("cleanup_problems"):
        out.append(f"cleanup problems: {res['cleanup_problems']}")
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run of well under a minute"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object with every number"
    )
    parser.add_argument(
        "--calls", type=int, help="calls per repetition in section 1 (default 5000, quick 2000)"
    )
    parser.add_argument(
        "--repeats", type=int, help="repetitions per handler in section 1 (default 21, quick 5)"
    )
    parser.add_argument(
        "--gateway-in-process",
        action="store_true",
        help="run the gateway in this process (as the tests do) instead of a child process",
    )
    args = parser.parse_args(argv)
    calls = args.calls or (2_000 if args.quick else 5_000)
    repeats = args.repeats or (5 if args.quick else 21)
    if calls < 1 or repeats < 1:
        parser.error("--calls and --repeats must be positive")
    e2e_rows = 5_000 if args.quick else 20_000
    outage_records = 50_000 if args.quick else 200_000
    startup_runs = 3 if args.quick else 7

    signal.signal(signal.SIGTERM, _on_sigterm)
    res: dict[str, Any] = {
        "config": {
            "quick": args.quick,
            "calls": calls,
            "repeats": repeats,
            "e2e_rows": e2e_rows,
            "outage_records": outage_records,
            "startup_runs": startup_runs,
            "gateway": "in-process" if args.gateway_in_process else "child process",
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
            "cpus": os.cpu_count(),
        }
    }
    tmp = Path(tempfile.mkdtemp(prefix="supabase-log-bench-"))
    cleanup = Cleanup()
    stack = Stack(in_process_gateway=args.gateway_in_process)
    code = 0
    t0 = time.perf_counter()
    try:
        progress("starting PostgreSQL and the gateway")
        stack.start()
        progress(
            f"PostgreSQL in {stack.cluster.base_dir} (port {stack.cluster.port}); gateway {stack.gateway.url}"
        )
        progress("2. start-up")
        res["startup"] = measure_startup(stack, tmp, startup_runs)
        progress("1. caller-thread cost")
        res["caller_cost"] = measure_caller(stack, tmp, calls, repeats, cleanup)
        progress("3. end-to-end")
        res["end_to_end"] = measure_e2e(stack, tmp, e2e_rows, cleanup)
        progress("4. outage memory")
        res["outage"] = measure_outage(stack, tmp, outage_records, cleanup)
        if not (res["end_to_end"]["count_matched"] and res["end_to_end"]["flushed"]):
            code = 1
    except (Exception, KeyboardInterrupt, SystemExit) as exc:
        res["error"] = f"{type(exc).__name__}: {exc}"
        progress(traceback.format_exc())
        code = (
            exc.code
            if isinstance(exc, SystemExit) and isinstance(exc.code, int) and exc.code
            else 1
        )
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the (bounded) clean-up finish
        cleanup.run_all()
        problems = cleanup.problems + stack.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if problems:
            res["cleanup_problems"] = problems
        res["elapsed_s"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps(res, indent=None, sort_keys=False, default=str))
    else:
        print(render(res))
        print(f"\n(elapsed {res['elapsed_s']:.1f} s)")
    return code


if __name__ == "__main__":
    sys.exit(main())
