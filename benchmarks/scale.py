"""Scale benchmark: REST against COPY, and `logs` growing to 10 million rows.

    .venv/bin/python benchmarks/scale.py                 # full run (10,000,000 rows per table layout)
    .venv/bin/python benchmarks/scale.py --rows 1000000  # smaller growth run
    .venv/bin/python benchmarks/scale.py --quick         # smoke run
    .venv/bin/python benchmarks/scale.py --replot        # the table and plot again, from scale.json

1. **REST against COPY**: the same encoded rows (typical log rows, 500 per
   write, the handler's default batch) are written by ``SupabaseSink`` through
   the PostgREST-compatible gateway (in its own process) and by ``PostgresSink``
   (COPY into a staging table, then ``insert ... on conflict do nothing``)
   through PgBouncer in transaction mode. rows/s each, and the ratio; beside
   them PostgreSQL alone (the rows already in COPY's typed text, copied straight
   into ``logs``): the most any path into this table could reach.
2. **Growth**: ``PostgresSink`` writes batches of 5,000 rows into ``logs``
   until it holds ``--rows`` rows, once unpartitioned and once partitioned by
   month (``migrations/partitioned``); the rows' timestamps advance over ten
   months, as a year of logging would. The insert rate is measured per step
   (a tenth of the rows).
3. **Queries** at that size: what the CLI views ask (``runs``, ``logs <run>``,
   ``tail``, errors of the last day) and the ``log_volume_hourly`` view.

Results go to ``benchmarks/results/scale.json`` and ``scale.md`` (a table), and
``scale.png`` (the growth curves) when matplotlib is installed
(``pip install -r benchmarks/requirements.txt``; never a runtime dependency).
The cluster is the tests' throwaway one, with ``shared_buffers = 256MB``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from _stack import GatewayProcess  # noqa: E402
from stack.pgbouncer import PgBouncer  # noqa: E402
from stack.postgres import PgCluster  # noqa: E402

from supabase_log_handler._ids import new_id  # noqa: E402
from supabase_log_handler.sinks import LOG_COLUMNS  # noqa: E402
from supabase_log_handler.sinks.postgres import PostgresSink, _copy_line  # noqa: E402
from supabase_log_handler.sinks.rest import SupabaseSink  # noqa: E402

RESULTS = HERE / "results"
PARTITIONED_SQL = HERE.parent / "migrations" / "partitioned" / "20261215000000_partition_logs.sql"
UTC = dt.timezone.utc
RUNS = 200
STEPS = ("FETCH", "VALIDATE", "PROCESS", "SAVE")
LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARNING", "ERROR")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def make_rows(n: int, run_ids: list[str], start: dt.datetime, span_s: float, offset: int = 0) -> list[bytes]:
    """n encoded log rows, timestamps from ``start`` spread over ``span_s`` seconds."""
    out = []
    for i in range(n):
        k = offset + i
        ts = (start + dt.timedelta(seconds=span_s * i / max(n, 1))).isoformat(timespec="microseconds")
        out.append(
            (
                f'{{"id":"{new_id()}","run_id":"{run_ids[k % len(run_ids)]}","timestamp":"{ts}",'
                f'"level":"{LEVELS[k % len(LEVELS)]}","step":"{STEPS[k % len(STEPS)]}",'
                f'"message":"processed {k} items for acme","meta":{{"logger":"job.sync","i":{k},'
                f'"source":{{"file":"sync.py","line":{40 + k % 50}}}}}}}'
            ).encode()
        )
    return out


def seed_runs(cluster: Any, db: str, n: int) -> list[str]:
    ids = [new_id() for _ in range(n)]
    with cluster.connect(db) as conn:
        for i, run_id in enumerate(ids):
            conn.execute("insert into runs (id, script_name, status) values (%s, %s, 'success')",
                         (run_id, f"job-{i % 10}"))  # fmt: skip
    return ids


def rest_vs_copy(cluster: Any, bouncer: PgBouncer, rows_total: int, batch: int) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": rows_total, "batch_rows": batch}
    now = dt.datetime.now(UTC)
    for kind in ("rest", "copy", "floor"):
        db = f"bench_{kind}"
        cluster.create_database(db)
        run_ids = seed_runs(cluster, db, 20)
        rows = make_rows(rows_total, run_ids, now, 3600)
        gw = None
        if kind == "floor":
            sink = _TypedCopy(bouncer.dsn(db), rows)
        elif kind == "rest":
            gw = GatewayProcess(cluster.authenticator_dsn(db))
            sink: Any = SupabaseSink(gw.url, gw.service_key, request_timeout_s=60)
        else:
            sink = PostgresSink(bouncer.dsn(db), request_timeout_s=60)
        sink.write("logs", rows[:batch], merge=False, columns=LOG_COLUMNS)  # connect, warm up
        t0 = time.perf_counter()
        for i in range(batch, rows_total, batch):
            sink.write("logs", rows[i : i + batch], merge=False, columns=LOG_COLUMNS)
        elapsed = time.perf_counter() - t0
        sink.close()
        if gw is not None:
            gw.close()
        stored = cluster.fetch(db, "select count(*) from logs")[0][0]
        assert stored == rows_total, (kind, stored)
        out[kind] = {"seconds": elapsed, "rows_per_s": (rows_total - batch) / elapsed}
        say(f"  {kind}: {out[kind]['rows_per_s']:,.0f} rows/s")
        cluster.drop_database(db)
    out["ratio"] = out["copy"]["rows_per_s"] / out["rest"]["rows_per_s"]
    out["floor_ratio"] = out["floor"]["rows_per_s"] / out["rest"]["rows_per_s"]
    return out


class _TypedCopy:
    """PostgreSQL alone: the rows, turned into COPY's typed text before the clock starts, copied
    straight into ``logs`` (no staging table, no conflict check), one transaction per batch.
    No path into this table (its indexes, its foreign key) can be faster."""

    def __init__(self, dsn: str, rows: list[bytes]) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True, prepare_threshold=None)
        self.lines = {id(r): _typed_line(r) for r in rows}

    def write(self, table: str, rows: list[bytes], *, merge: bool, columns: Any) -> None:
        cols = ", ".join(f'"{c}"' for c in columns)
        with self.conn.transaction(), self.conn.cursor().copy(f"copy public.{table} ({cols}) from stdin") as copy:
            copy.write(b"".join(self.lines[id(r)] for r in rows))

    def close(self) -> None:
        self.conn.close()


def _typed_line(row: bytes) -> bytes:
    values = json.loads(row)
    out = []
    for column in LOG_COLUMNS:
        value = values.get(column)
        if value is None:
            out.append("\\N")
            continue
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        out.append(_copy_line(text.encode())[:-1].decode())  # the sink's own COPY escaping
    return ("\t".join(out) + "\n").encode()


def growth(cluster: Any, bouncer: PgBouncer, total: int, partitioned: bool) -> dict[str, Any]:
    db = "bench_part" if partitioned else "bench_plain"
    cluster.create_database(db)
    run_ids = seed_runs(cluster, db, RUNS)
    start = dt.datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=300)
    if partitioned:
        cluster.run_script(db, PARTITIONED_SQL.read_text())
        cluster.execute(db, "select public.ensure_log_partitions(11, %s)", (start,))
    sink = PostgresSink(bouncer.dsn(db), request_timeout_s=120)
    span_s = 300 * 86400.0  # ten months of logging
    batch, step = 5000, max(total // 10, 5000)
    points: list[dict[str, Any]] = []
    done = 0
    while done < total:
        n = min(step, total - done)
        rows_t0 = start + dt.timedelta(seconds=span_s * done / total)
        rows = make_rows(n, run_ids, rows_t0, span_s * n / total, offset=done)
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            sink.write("logs", rows[i : i + batch], merge=False, columns=LOG_COLUMNS)
        elapsed = time.perf_counter() - t0
        points.append({"rows_before": done, "rows_after": done + n, "rows_per_s": n / elapsed})
        done += n
        say(f"  {'partitioned' if partitioned else 'plain'}: {done:,} rows, {n / elapsed:,.0f} rows/s")
    sink.close()
    result = {"points": points, "queries": queries(cluster, bouncer, db, run_ids),
              "size_bytes": cluster.fetch(db, "select sum(pg_total_relation_size(c.oid))::bigint from pg_class c "
                                              "where c.relname like 'logs%' and c.relkind in ('r', 'p')")[0][0]}  # fmt: skip
    cluster.drop_database(db)
    return result


def queries(cluster: Any, bouncer: PgBouncer, db: str, run_ids: list[str]) -> dict[str, float]:
    """Median of 5 timings (ms) of what the CLI views ask, through the direct sink's reader."""
    cluster.execute(db, "analyze")
    sink = PostgresSink(bouncer.dsn(db), request_timeout_s=300)
    newest = cluster.fetch(db, 'select max("timestamp") from logs')[0][0]
    day_ago = (newest - dt.timedelta(days=1)).isoformat()
    busy = run_ids[len(run_ids) // 2]
    asks = {
        "runs (20 newest)": lambda: sink.select("runs", order=[("started_at", True)], limit=20),
        "logs <run> (first 1,000)": lambda: sink.select(
            "logs", filters=[("run_id", "eq", busy)], order=[("timestamp", False), ("id", False)], limit=1000
        ),
        "tail (100 newest)": lambda: sink.select("logs", order=[("timestamp", True)], limit=100),
        "errors, last day": lambda: sink.select(
            "logs", filters=[("level", "eq", "ERROR"), ("timestamp", "gte", day_ago)],
            order=[("timestamp", True)], limit=200,
        ),
        "log_volume_hourly (last 7 days)": lambda: sink.select("log_volume_hourly"),
    }
    out = {}
    for name, ask in asks.items():
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            ask()
            times.append((time.perf_counter() - t0) * 1000)
        out[name] = statistics.median(times)
    sink.close()
    return out


def write_report(result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    rc, big = result["rest_vs_copy"], result["rest_vs_copy_large"]
    lines = [
        "# Scale benchmark results",
        "",
        f"Measured {result['when']} on {result['machine']} by `benchmarks/scale.py {' '.join(result['argv'])}`.",
        "",
        f"## REST against COPY ({rc['rows']:,} rows)",
        "",
        f"| path | rows/s, {rc['batch_rows']} rows per write | rows/s, {big['batch_rows']} rows per write |",
        "|---|---|---|",
        f"| REST (`SupabaseSink` -> gateway -> PostgreSQL) | {rc['rest']['rows_per_s']:,.0f} | {big['rest']['rows_per_s']:,.0f} |",
        f"| COPY (`PostgresSink` -> PgBouncer, transaction mode -> PostgreSQL) | {rc['copy']['rows_per_s']:,.0f} | {big['copy']['rows_per_s']:,.0f} |",
        f"| ratio COPY / REST | {rc['ratio']:.1f}x | {big['ratio']:.1f}x |",
        f"| PostgreSQL alone: typed COPY straight into `logs` (no staging, no conflict check) | {rc['floor']['rows_per_s']:,.0f} | {big['floor']['rows_per_s']:,.0f} |",
        f"| ratio PostgreSQL alone / REST (the most any path could gain) | {rc['floor_ratio']:.1f}x | {big['floor_ratio']:.1f}x |",
        "",
        f"## Insert rate while `logs` grows to {result['growth_rows']:,} rows (COPY, 5,000 per write)",
        "",
        "| rows in the table | plain rows/s | partitioned rows/s |",
        "|---|---|---|",
    ]
    plain, part = result["plain"]["points"], result["partitioned"]["points"]
    for a, b in zip(plain, part, strict=True):
        lines.append(f"| {a['rows_before']:,} -> {a['rows_after']:,} | {a['rows_per_s']:,.0f} | {b['rows_per_s']:,.0f} |")
    for name in ("plain", "partitioned"):
        pts = result[name]["points"]
        result[name]["last_vs_first"] = pts[-1]["rows_per_s"] / pts[0]["rows_per_s"]
    lines += [
        "",
        f"Rate of the last step against the first: plain {result['plain']['last_vs_first']:.0%}, "
        f"partitioned {result['partitioned']['last_vs_first']:.0%}. "
        f"Size on disk (heap and indexes): plain {result['plain']['size_bytes'] / 2**30:.1f} GiB, "
        f"partitioned {result['partitioned']['size_bytes'] / 2**30:.1f} GiB.",
        "",
        f"## Queries at {result['growth_rows']:,} rows (median of 5, ms)",
        "",
        "| query | plain | partitioned |",
        "|---|---|---|",
    ]
    for q in result["plain"]["queries"]:
        lines.append(f"| {q} | {result['plain']['queries'][q]:,.1f} | {result['partitioned']['queries'][q]:,.1f} |")
    (RESULTS / "scale.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, style in (("plain", "o-"), ("partitioned", "s-")):
        pts = result[name]["points"]
        ax.plot([p["rows_after"] / 1e6 for p in pts], [p["rows_per_s"] for p in pts], style, label=name)
    ax.set_xlabel("rows in logs (millions)")
    ax.set_ylabel("insert rate (rows/s, COPY through PgBouncer)")
    ax.set_ylim(bottom=0)
    ax.set_title("Insert rate as logs grows")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "scale.png", dpi=110)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=10_000_000, help="rows of the growth run per table layout")
    p.add_argument("--compare-rows", type=int, default=200_000, help="rows of the REST/COPY comparison")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--replot", action="store_true", help="write scale.md and scale.png again from scale.json")
    args = p.parse_args(argv)
    if args.replot:
        write_report(json.loads((RESULTS / "scale.json").read_text()))
        return 0
    if args.quick:
        args.rows, args.compare_rows = 100_000, 20_000
    import os
    import platform
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the cluster below is stopped

    cluster = PgCluster(settings={"shared_buffers": "'256MB'", "max_wal_size": "'4GB'"}).start()
    bouncer = PgBouncer(cluster.host, cluster.port).start()
    try:
        result: dict[str, Any] = {
            "when": dt.datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}",
            "argv": argv,
            "growth_rows": args.rows,
        }
        say("REST against COPY")
        result["rest_vs_copy"] = rest_vs_copy(cluster, bouncer, args.compare_rows, 500)
        result["rest_vs_copy_large"] = rest_vs_copy(cluster, bouncer, args.compare_rows, 5000)
        for name, partitioned in (("plain", False), ("partitioned", True)):
            say(f"growth, {name}")
            result[name] = growth(cluster, bouncer, args.rows, partitioned)
        write_report(result)
        print((RESULTS / "scale.md").read_text())
    finally:
        bouncer.close()
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
