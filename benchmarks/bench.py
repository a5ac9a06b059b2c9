"""Benchmark: what a logging handler costs the job that logs, against its peers.

    bash scripts/bench.sh [options]          # installs benchmarks/requirements.txt, then runs this
    python benchmarks/bench.py [--quick] [--calls N] [--burst-queue-rows Q] [--repeats R]
                               [--subjects a,b] [--json] [--output PATH] [--no-outage]
    python benchmarks/bench.py --markdown [PATH]   # README table from a saved result

Starts its own PostgreSQL cluster and PostgREST-compatible gateway (tests/stack,
the gateway in a process of its own) and measures three things:

1. delivery cost: for every handler (``_fakes.SUBJECTS``), in a fresh child
   process each time (``_subject.py``), the same call with an ``extra``: caller
   wall and own CPU per call, p99 and p99.9 of a single call, whole-process CPU
   per record until everything is delivered, records/s delivered, drain time
   after a burst of 5x the queue size, peak RSS. Handlers are repeated and
   interleaved, so noise shows as spread;
2. start-up: a whole ``python -c`` that configures the handler, logs one record
   and ends, minus the same process without the handler;
3. peak memory during a sustained outage (spool disabled).

Prints a report, writes every number as JSON (benchmarks/results/latest.json by
default) and exits 0 when every section ran and nothing was lost. Everything it
starts is stopped at the end, also on error; every wait has a deadline.
See benchmarks/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fakes import LABELS, SUBJECTS
from _memory import measure_outage
from _report import render_markdown, render_text
from _stack import Stack, child_env, progress
from _startup import measure_startup

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "latest.json"
CALL_TEXT = 'log.info("fetched %d records", i, extra={"meta": {"count": i, "page": 3}})'
CHILD_TIMEOUT_S = 1800.0


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


def stats_of(values: list[float]) -> dict[str, float]:
    return {
        "median": float(statistics.median(values)),
        "min": float(min(values)),
        "max": float(max(values)),
    }


def default_queue_rows() -> int:
    """SupabaseHandler's default ``max_queue_rows`` (the queue a burst is 5x of), from
    ``config.FIELDS``; pass ``--burst-queue-rows`` if the package stops exposing it."""
    from supabase_log_handler.config import FIELDS

    return int(FIELDS["max_queue_rows"].default)


# --------------------------------------------------------------------------- 1. delivery


def run_subject(cfg: dict[str, Any], cwd: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(HERE / "_subject.py"), json.dumps(cfg)],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{cfg['subject']} child failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    if proc.stderr.strip():
        result["stderr_tail"] = proc.stderr.strip()[-500:]
    return result


METRICS = {
    "calls": (
        "caller_wall_ns_per_call",
        "caller_cpu_ns_per_call",
        "p99_ns",
        "p999_ns",
        "process_cpu_ns_per_record",
        "records_per_s",
        "drain_s",
        "rows_per_request_median",
    ),
    "burst": ("process_cpu_ns_per_record", "records_per_s", "drain_s", "p999_ns", "rows_per_request_median"),
}
RATIOS = (
    "caller_wall_ns_per_call",
    "caller_cpu_ns_per_call",
    "p999_ns",
    "process_cpu_ns_per_record",
)


def measure_delivery(
    stack: Stack,
    tmp: Path,
    subjects: list[str],
    calls: int,
    burst_rows: int,
    queue_rows: int,
    repeats: int,
) -> dict[str, Any]:
    gw = stack.gateway
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in subjects}
    for r in range(repeats):
        order = subjects[r % len(subjects) :] + subjects[: r % len(subjects)]
        for name in order:
            settings: dict[str, Any] = {}
            if name.startswith("supabase"):
                settings = {
                    # The fake never connects; a closed port makes a leak past it visible.
                    "url": gw.url if name == "supabase-gateway" else "http://127.0.0.1:9",
                    "key": gw.service_key,
                    "spool_path": str(tmp / f"{name}-{r}.sqlite3"),
                    "max_queue_rows": queue_rows,
                    "script_name": f"bench-{name}-{r}",
                }
            cfg = {"subject": name, "calls": calls, "burst": burst_rows, "settings": settings}
            t0 = time.perf_counter()
            result = run_subject(cfg, tmp)
            result["elapsed_s"] = time.perf_counter() - t0
            if name == "supabase-gateway" and result.get("run_id"):
                result["db_rows"] = int(
                    stack.fetchval(
                        "select count(*) from logs where run_id = %s", (result["run_id"],)
                    )
                )
            runs[name].append(result)
            progress(f"delivery: round {r + 1}/{repeats}, {name} ({result['elapsed_s']:.1f} s)")

    return {
        "call": CALL_TEXT,
        "calls": calls,
        "burst": burst_rows,
        "queue_rows": queue_rows,
        "repeats": repeats,
        "handlers": summarize(runs),
        "runs": runs,
    }


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per handler and phase: median/min/max over children of every figure, and the
    paired ratios to QueueHandler (each child's value over QueueHandler's child of the
    same round)."""
    summary: dict[str, Any] = {}
    base = runs.get("queue")
    for name, results in runs.items():
        row: dict[str, Any] = {"label": LABELS[name]}
        for phase, keys in METRICS.items():
            if phase not in results[0]:
                continue
            row[phase] = {
                k: stats_of([res[phase][k] for res in results]) for k in (*keys, "dropped", "lost")
            }
            if base is not None and phase in base[0]:
                row[phase]["x_queue"] = {
                    k: stats_of(
                        [a[phase][k] / b[phase][k] for a, b in zip(results, base, strict=True)]
                    )
                    for k in RATIOS
                    if k in keys
                }
        row["peak_rss_bytes"] = stats_of([res["peak_rss_bytes"] for res in results])
        row["rss_ready_bytes"] = stats_of([res["rss_ready_bytes"] for res in results])
        summary[name] = row
    return summary


# --------------------------------------------------------------------------- main


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def problems_in(res: dict[str, Any]) -> list[str]:
    """What makes the run fail: records SupabaseHandler lost, rows missing in PostgreSQL,
    start-up misses. (A peer that drops records is reported in the tables, not failed.)"""
    found: list[str] = []
    for name, results in res.get("delivery", {}).get("runs", {}).items():
        for i, r in enumerate(results):
            for phase in ("calls", "burst"):
                p = r.get(phase)
                if p and p["lost"] and name.startswith("supabase"):
                    found.append(f"{name} round {i + 1} {phase}: {p['lost']} records lost")
            if "db_rows" in r:
                logged = r["warmup"] + sum(r[p]["calls"] for p in ("calls", "burst") if p in r)
                dropped = sum(r[p]["dropped"] for p in ("calls", "burst") if p in r)
                if r["db_rows"] + dropped < logged:
                    found.append(
                        f"{name} round {i + 1}: {logged - dropped - r['db_rows']} rows neither"
                        " in PostgreSQL nor counted as dropped"
                    )
    s = res.get("startup")
    if s:
        if any(d != 1 for d in s["fake_delivered"]):
            found.append(f"start-up with the fake: delivered {s['fake_delivered']} (1 each)")
        if s["gateway_rows_stored"] != s["gateway_rows_expected"]:
            found.append(
                f"start-up with the gateway: {s['gateway_rows_stored']} rows stored,"
                f" {s['gateway_rows_expected']} expected"
            )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--calls", type=int, help="calls per child in the calls phase (50000)")
    parser.add_argument(
        "--burst-queue-rows",
        type=int,
        help="SupabaseHandler max_queue_rows; the burst is 5x this (default: the handler's default)",
    )
    parser.add_argument("--repeats", type=int, help="children per handler, interleaved (3)")
    parser.add_argument("--startup-runs", type=int, help="start-up processes per kind (9)")
    parser.add_argument("--subjects", help=f"comma-separated subset of {','.join(SUBJECTS)}")
    parser.add_argument("--no-outage", action="store_true", help="skip the outage memory section")
    parser.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON file ({RESULTS})")
    parser.add_argument(
        "--markdown",
        nargs="?",
        const=str(RESULTS),
        metavar="PATH",
        help="print the README's table from a saved result and exit",
    )
    args = parser.parse_args(argv)
    if args.markdown:
        print(render_markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    subjects = args.subjects.split(",") if args.subjects else list(SUBJECTS)
    unknown = [s for s in subjects if s not in SUBJECTS]
    if unknown:
        parser.error(f"unknown subjects {unknown}; known: {list(SUBJECTS)}")
    missing = [m for s, m in PEER_MODULES.items() if s in subjects and not _importable(m)]
    if missing:
        parser.error(
            f"the peers {missing} are not installed: run `bash scripts/bench.sh`, or"
            " `pip install -r benchmarks/requirements.txt`, or leave them out with --subjects"
        )
    calls = args.calls or (1_000 if args.quick else 50_000)
    queue_rows = args.burst_queue_rows or (1_000 if args.quick else default_queue_rows())
    repeats = args.repeats or (1 if args.quick else 3)
    startup_runs = args.startup_runs or (2 if args.quick else 9)
    outage_records = 20_000 if args.quick else 200_000
    if min(calls, queue_rows, repeats, startup_runs) < 1:
        parser.error("sizes must be positive")

    signal.signal(signal.SIGTERM, _on_sigterm)
    res: dict[str, Any] = {
        "config": {
            "quick": args.quick,
            "calls": calls,
            "burst": 5 * queue_rows,
            "queue_rows": queue_rows,
            "repeats": repeats,
            "startup_runs": startup_runs,
            "subjects": subjects,
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
            "cpus": os.cpu_count(),
            "versions": _versions(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    }
    tmp = Path(tempfile.mkdtemp(prefix="supabase-log-bench-"))
    cleanup = Cleanup()
    stack = Stack()
    code = 0
    t0 = time.perf_counter()
    try:
        progress("starting PostgreSQL and the gateway")
        stack.start()
        progress("1. delivery cost")
        res["delivery"] = measure_delivery(
            stack, tmp, subjects, calls, 5 * queue_rows, queue_rows, repeats
        )
        progress("2. start-up")
        res["startup"] = measure_startup(stack, tmp, startup_runs)
        if not args.no_outage:
            progress("3. outage memory")
            res["outage"] = measure_outage(stack, tmp, outage_records, cleanup.add)
        res["problems"] = problems_in(res)
        if res["problems"]:
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
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(res, indent=1, default=str) + "\n")
    if args.json:
        print(json.dumps(res, default=str))
    else:
        print(render_text(res))
        print(f"\n(written to {args.output}; elapsed {res['elapsed_s']:.1f} s)")
    return code


PEER_MODULES = {
    "otel": "opentelemetry.exporter.otlp.proto.http",
    "watchtower": "watchtower",
}


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for dist in (
        "supabase-log-handler",
        "supabase",
        "httpx",
        "opentelemetry-sdk",
        "watchtower",
        "boto3",
    ):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


if __name__ == "__main__":
    sys.exit(main())
