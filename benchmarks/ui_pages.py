"""How long each page of `supabase-log ui` takes on a large database, against a 300 ms target.

Starts a throwaway PostgreSQL cluster with the project's migrations, fills it with
SQL ``generate_series`` (50,000 runs of 20 jobs over 60 days, 1,000,000 log rows of
which one run holds 100,000, and 50,000 integration calls over 30 days), puts the
PostgREST-compatible gateway of ``tests/stack`` in front of it (in a child process),
and starts the real ``supabase-log ui`` command reading it with the service key.
Then it asks every page many times over HTTP and reports, per page, the median and
95th percentile of the time from request to the last byte of the answer (the
server's time: the client is on the same machine), and how many PostgREST requests
the page made. The first line is one bare PostgREST read straight to the gateway:
what each of those requests costs on this stack before the dashboard does anything.

    .venv/bin/python benchmarks/ui_pages.py [--repeats 30] [--json]

Not a test: nothing here fails on a slow machine. Exit status 0 when every page
answered 200, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _stack import DATABASE, Stack  # noqa: E402
from ui_support import UiProcess  # noqa: E402

TARGET_MS = 300.0
RUNS = 50_000
LOG_ROWS = 1_000_000
CALLS = 50_000
SCRIPTS = 20
SMALL_RUN_ROWS = 18
BIG_RUN_ROWS = LOG_ROWS - SMALL_RUN_ROWS * (RUNS - 1)  # the newest run: 100,018 rows

FILL_SQL = f"""
insert into public.runs (id, script_name, triggered_by, started_at, finished_at, duration_ms,
                         status, error_message, records_fetched, records_inserted, api_cost, metadata)
select gen_random_uuid(),
       'job-' || (g % {SCRIPTS}),
       case when g % 3 = 0 then 'github-actions' else 'cron' end,
       now() - (g * interval '60 days' / {RUNS}),
       now() - (g * interval '60 days' / {RUNS}) + ((g % 300) * interval '1 second'),
       (g % 300) * 1000,
       case when g % 20 = 0 then 'error' when g <= 3 then 'running' else 'success' end,
       case when g % 20 = 0 then 'ConnectionError: upstream ' || (g % 7) || ' refused' end,
       g % 500, g % 450, (g % 100) / 1000.0,
       '{{"source": "benchmark"}}'::jsonb
from generate_series(1, {RUNS}) g;
update public.runs set finished_at = null, duration_ms = null, heartbeat_at = now()
 where status = 'running';

create temporary table bench_runs as
select id, started_at, row_number() over (order by started_at desc, id) as n from public.runs;

-- every run but the newest gets {SMALL_RUN_ROWS} rows, the newest the rest of {LOG_ROWS:,}
insert into public.logs (id, run_id, "timestamp", level, step, message, meta)
select gen_random_uuid(), r.id, r.started_at + (s * interval '10 milliseconds'),
       case when s % 50 = 49 then 'ERROR' when s % 10 = 9 then 'WARNING'
            when s % 2 = 0 then 'DEBUG' else 'INFO' end,
       (array['START', 'FETCH', 'PROCESS', 'SAVE', 'END'])[1 + (s * 5 / {SMALL_RUN_ROWS})],
       'processed batch ' || s || ' of run ' || r.n,
       jsonb_build_object('batch', s, 'rows', s * 10)
from bench_runs r, generate_series(0, {SMALL_RUN_ROWS} - 1) s
where r.n > 1;
insert into public.logs (id, run_id, "timestamp", level, step, message, meta)
select gen_random_uuid(), r.id, r.started_at + (s * interval '10 milliseconds'),
       case when s % 500 = 499 then 'ERROR' when s % 2 = 0 then 'DEBUG' else 'INFO' end,
       (array['START', 'FETCH', 'PROCESS', 'SAVE', 'END'])[1 + (s * 5 / {BIG_RUN_ROWS})],
       'processed item ' || s, jsonb_build_object('item', s)
from bench_runs r, generate_series(0, {BIG_RUN_ROWS} - 1) s
where r.n = 1;

insert into public.integration_logs (id, service_name, action, status, duration_ms, retry_count,
                                     created_at, run_id, error_code, request_payload)
select gen_random_uuid(),
       (array['amocrm', 'resend', 'mobizon', 'telegram'])[1 + g % 4],
       (array['sync_lead', 'send_email', 'send_sms', 'send_telegram'])[1 + g % 4],
       case when g % 25 = 0 then 'failed' else 'success' end,
       50 + g % 900, g % 3, now() - (g * interval '30 days' / {CALLS}), null,
       case when g % 25 = 0 then '429' end, jsonb_build_object('n', g)
from generate_series(1, {CALLS}) g;
analyze;
"""


def fill(stack: Stack) -> dict[str, Any]:
    started = time.monotonic()
    with stack.cluster.connect(DATABASE) as conn:
        conn.execute(FILL_SQL)
    facts = {
        "runs": stack.fetchval("select count(*) from public.runs"),
        "logs": stack.fetchval("select count(*) from public.logs"),
        "calls": stack.fetchval("select count(*) from public.integration_logs"),
        "fill_s": round(time.monotonic() - started, 1),
    }
    return facts


def pages(stack: Stack) -> list[tuple[str, str]]:
    big = stack.fetchval("select id from public.runs order by started_at desc limit 1")
    typical = stack.fetchval(
        "select id from public.runs where status = 'error' order by started_at desc offset 100 limit 1"
    )
    old = stack.fetchval("select id from public.runs order by started_at limit 1")
    deep = stack.fetchval(
        "select started_at::text || '|' || id from public.runs order by started_at desc, id desc offset 40000 limit 1"
    ).replace(" ", "T", 1)
    return [
        ("runs, newest 50", "/"),
        ("runs of one script", "/?script=job-7"),
        ("runs, status error", "/?status=error"),
        ("runs, trigger + dates", "/?trigger=github-actions&from=2000-01-01&to=2100-01-01"),
        ("runs, error text search", "/?q=upstream%203"),
        ("runs, page after 40,000 rows", "/?" + urlencode({"after": deep})),
        ("run page (18 rows)", f"/runs/{typical}"),
        ("run page (oldest run)", f"/runs/{old}"),
        ("run page (100,018 rows)", f"/runs/{big}"),
        ("run logs, WARNING+ (100,000 rows)", f"/runs/{big}/logs?level=WARNING"),
        ("run logs, search (100,000 rows)", f"/runs/{big}/logs?q=item%2099999"),
        ("live tail poll (100,000 rows)", f"/runs/{big}/tail?" + _tail_cursor(stack, big)),
        ("running run progress", f"/runs/{big}/progress"),
        ("errors, 24 h", "/errors?window=24h"),
        ("errors, 7 days", "/errors?window=7d"),
        ("script page", "/scripts/job-7"),
        ("integrations, hourly", "/integrations?bucket=hour"),
        ("integrations, daily", "/integrations?bucket=day"),
        ("calls, failed, 30 days", "/integrations/calls?status=failed&since=30d"),
    ]


def _tail_cursor(stack: Stack, run_id: str) -> str:
    row = stack.cluster.fetch(
        DATABASE,
        "select to_json(\"timestamp\")#>>'{}', id from public.logs where run_id = %s "
        "order by \"timestamp\" desc, id desc limit 1",
        (run_id,),
    )[0]
    return urlencode({"after": f"{row[0]}|{row[1]}"})


def measure(base: str, path: str, repeats: int, gateway: Any) -> dict[str, Any]:
    headers = {"HX-Request": "true"} if "/logs" in path or "/tail" in path or "/calls" in path else {}
    times: list[float] = []
    status = 0
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(3):  # warm the connection, the thread pool and PostgreSQL's cache
            client.get(path, headers=headers)
        gateway.reset_log()
        for _ in range(repeats):
            started = time.perf_counter()
            answer = client.get(path, headers=headers)
            times.append((time.perf_counter() - started) * 1000)
            status = answer.status_code
        per_page = len(gateway.requests) / repeats
    times.sort()
    return {
        "status": status,
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 1),
        "rest_requests": round(per_page, 1),
    }


def baseline(gateway: Any, repeats: int) -> dict[str, Any]:
    """One bare PostgREST read (``runs?select=id&limit=1``), straight to the gateway: what
    every request of a page costs before the dashboard does anything."""
    headers = {"apikey": gateway.service_key, "Authorization": f"Bearer {gateway.service_key}"}
    times = []
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=60) as client:
        for i in range(repeats + 3):
            started = time.perf_counter()
            client.get("/rest/v1/runs", params={"select": "id", "limit": "1"}).raise_for_status()
            if i >= 3:
                times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "status": 200,
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 1),
        "rest_requests": 1.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="requests per page (default 30)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    stack = Stack()
    ui: UiProcess | None = None
    try:
        print("starting PostgreSQL and the gateway ...", file=sys.stderr, flush=True)
        stack.start()
        print("filling the database ...", file=sys.stderr, flush=True)
        facts = fill(stack)
        print(f"  {facts}", file=sys.stderr, flush=True)
        env = {"SUPABASE_URL": stack.gateway.url, "SUPABASE_SERVICE_ROLE_KEY": stack.gateway.service_key}
        ui = UiProcess(env, cwd=HERE)
        results = {"(one bare PostgREST request)": baseline(stack.gateway, args.repeats)}
        for name, path in pages(stack):
            results[name] = measure(ui.url, path, args.repeats, stack.gateway)
            print(f"  {name}: {results[name]}", file=sys.stderr, flush=True)
    finally:
        if ui is not None:
            ui.stop()
        for problem in stack.close():
            print(f"warning: {problem}", file=sys.stderr)
    ok = all(r["status"] == 200 for r in results.values())
    if args.json:
        print(json.dumps({"data": facts, "target_ms": TARGET_MS, "pages": results}, indent=2))
        return 0 if ok else 1
    print(f"\n{facts['runs']:,} runs, {facts['logs']:,} log rows, {facts['calls']:,} calls "
          f"(filled in {facts['fill_s']} s); {args.repeats} requests per page; target {TARGET_MS:.0f} ms\n")
    print(f"{'page':38} {'median':>9} {'p95':>9} {'REST req':>9}  within target")
    for name, r in results.items():
        within = "yes" if r["p95_ms"] <= TARGET_MS else "NO"
        if r["status"] != 200:
            within = f"HTTP {r['status']}"
        print(f"{name:38} {r['median_ms']:>7.1f}ms {r['p95_ms']:>7.1f}ms {r['rest_requests']:>9}  {within}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
