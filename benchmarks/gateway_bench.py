"""Throughput of the test gateway: rows/s into PostgreSQL through ``tests/stack/gateway.py``.

    python benchmarks/gateway_bench.py [--requests N] [--rows R] [--repeats K] [--threads T]

Starts a throwaway PostgreSQL cluster and the gateway in a process of its own
(``_gateway_proc.py``), then POSTs the upserts the handler sends:
``POST /rest/v1/logs?on_conflict=id&columns="id","run_id",...`` with
``Prefer: return=minimal,resolution=ignore-duplicates`` and a JSON array of
``R`` rows (uuid ids, ISO timestamps, short messages, a small ``meta`` object).
The bodies are built before the clock starts, so the figure is the gateway's
and PostgreSQL's, not this client's. Each repetition sends ``N`` requests over
keep-alive connections from ``T`` threads and is checked by ``count(*)``.
Prints one line per repetition and the median; ``--json`` prints one object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stack import DATABASE, Stack

COLUMNS = ("id", "run_id", "timestamp", "level", "step", "message", "meta")
PATH = "/rest/v1/logs?on_conflict=id&columns=" + ",".join(f'"{c}"' for c in COLUMNS)
PREFER = "return=minimal,resolution=ignore-duplicates"


def make_body(run_id: str, rows: int, start: int) -> bytes:
    now = datetime.now(timezone.utc)
    batch = [
        {
            "id": str(uuid.uuid4()),
            "run_id": run_id,
            "timestamp": now.isoformat(),
            "level": "INFO",
            "step": "LOG",
            "message": f"fetched {start + i} records",
            "meta": {"count": start + i, "page": 3, "logger": "bench"},
        }
        for i in range(rows)
    ]
    return json.dumps(batch, separators=(",", ":")).encode()


def run(url: str, key: str, bodies: list[bytes], threads: int) -> tuple[float, list[int]]:
    """Send every body (split over ``threads`` keep-alive clients); (seconds, statuses)."""
    import httpx

    headers = {
        "apikey": key,
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Prefer": PREFER,
    }
    statuses: list[int] = []
    lock = threading.Lock()
    clients = [httpx.Client(base_url=url, headers=headers, timeout=60.0) for _ in range(threads)]
    for c in clients:  # connect outside the clock
        c.get("/rest/v1/logs?select=id&limit=0")

    def send(client: httpx.Client, part: list[bytes]) -> None:
        for body in part:
            status = client.post(PATH, content=body).status_code
            with lock:
                statuses.append(status)

    workers = [
        threading.Thread(target=send, args=(clients[t], bodies[t::threads])) for t in range(threads)
    ]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join(600.0)
    elapsed = time.perf_counter() - t0
    for c in clients:
        c.close()
    return elapsed, statuses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=40, help="requests per repetition")
    parser.add_argument("--rows", type=int, default=500, help="rows per request")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions")
    parser.add_argument("--threads", type=int, default=1, help="client threads (keep-alive each)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    stack = Stack()
    result: dict[str, Any] = {
        "rows_per_request": args.rows,
        "requests": args.requests,
        "threads": args.threads,
    }
    try:
        stack.start()
        gw = stack.gateway
        run_id = str(uuid.uuid4())
        stack.cluster.execute(
            DATABASE,
            "insert into runs (id, script_name, status) values (%s, 'gateway-bench', 'running')",
            (run_id,),
        )
        rates: list[float] = []
        for rep in range(args.repeats):
            bodies = [
                make_body(run_id, args.rows, (rep * args.requests + i) * args.rows)
                for i in range(args.requests)
            ]
            before = int(stack.fetchval("select count(*) from logs"))
            elapsed, statuses = run(gw.url, gw.service_key, bodies, args.threads)
            after = int(stack.fetchval("select count(*) from logs"))
            rows = args.requests * args.rows
            bad = [s for s in statuses if s != 201]
            if bad or after - before != rows:
                raise RuntimeError(
                    f"repetition {rep + 1}: statuses {sorted(set(statuses))}, "
                    f"{after - before} rows stored of {rows}"
                )
            rates.append(rows / elapsed)
            if not args.json:
                print(
                    f"repetition {rep + 1}: {rows:,} rows in {elapsed:.2f} s = {rows / elapsed:,.0f} rows/s"
                )
        result["rows_per_s"] = rates
        result["median_rows_per_s"] = statistics.median(rates)
    finally:
        problems = stack.close()
    if problems:
        result["cleanup_problems"] = problems
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"median: {result['median_rows_per_s']:,.0f} rows/s "
            f"({args.rows} rows/request, {args.threads} client thread(s))"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
