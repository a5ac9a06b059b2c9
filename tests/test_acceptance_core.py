"""Acceptance of the core: dictConfig, runs, exit drain, threads, older tables, access."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from conftest import last_json_line, run_script
from stack.fixtures import Db
from stack.gateway import Gateway

from supabase_log_handler import SupabaseHandler, start_run

pytestmark = pytest.mark.process  # forks, signals or exits: also run on 3.10 and 3.13


def _logs(db: Db, run_id: str) -> list[dict[str, Any]]:
    rows = db.fetch(
        "select level, step, message, meta, timestamp, id from logs where run_id = %s order by timestamp, id",
        (run_id,),
    )
    return [
        dict(zip(("level", "step", "message", "meta", "timestamp", "id"), r, strict=False))
        for r in rows
    ]


def test_dictconfig_root_logger_captures_script_library_and_exception_rows(
    db: Db, supabase_env: dict[str, str]
) -> None:
    """Through dictConfig on the root logger (at DEBUG), exactly the logged records arrive, correctly mapped."""
    out = run_script(
        """
        import asyncio, json, logging, logging.config, time
        import vendorlib
        logging.config.dictConfig({
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"supabase": {"class": "supabase_log_handler.SupabaseHandler", "level": "DEBUG",
                                      "flush_interval_s": 0.2, "script_name": "dictconfig-job"}},
            "root": {"level": "DEBUG", "handlers": ["supabase"]},
        })
        log = logging.getLogger("job")
        before = time.time()
        log.debug("debug line")
        log.info("processed %d items", 3, extra={"meta": {"count": 3}, "source_system": "vapi"})
        log.warning("slow page")
        vendorlib.fetch(2)
        asyncio.run(asyncio.sleep(0))  # asyncio logs "Using selector" at DEBUG
        try:
            {}["missing"]
        except KeyError:
            log.exception("lookup failed")
        log.critical("disk on fire")
        log.log(25, "custom level")
        handler = logging.getLogger().handlers[0]
        from supabase_log_handler import context
        print(json.dumps({"run_id": context.current_run().id, "before": before, "flushed": handler.flush(10)}))
        """,
        supabase_env,
    )
    info = last_json_line(out.stdout)
    assert info["flushed"] is True
    rows = _logs(db, info["run_id"])
    loggers = [r["meta"]["log"]["logger"] for r in rows]
    assert not [
        n
        for n in loggers
        if n.split(".")[0] in ("httpx", "httpcore", "hpack", "postgrest", "supabase")
    ]
    by_message = {r["message"]: r for r in rows}
    expected = {
        "debug line": "DEBUG",
        "processed 3 items": "INFO",
        "slow page": "WARNING",
        "vendorlib fetching 2 items": "DEBUG",
        "vendorlib fetched 2 items": "INFO",
        "lookup failed": "ERROR",
        "disk on fire": "ERROR",
        "custom level": "WARNING",
    }
    for message, level in expected.items():
        assert by_message[message]["level"] == level, message
    selector = [r for r in rows if r["meta"]["log"]["logger"] == "asyncio"]
    assert len(selector) == 1 and selector[0]["level"] == "DEBUG"
    assert len(rows) == len(expected) + 1, [r["message"] for r in rows]
    processed = by_message["processed 3 items"]
    assert processed["meta"]["count"] == 3 and processed["meta"]["source_system"] == "vapi"
    assert processed["step"] == "LOG"
    assert processed["meta"]["log"]["function"] is not None and processed["meta"]["log"]["line"] > 0
    assert processed["timestamp"].timestamp() >= info["before"] - 1
    exc = by_message["lookup failed"]["meta"]["exception"]
    assert (
        exc["type"] == "KeyError"
        and "Traceback" in exc["traceback"]
        and "'missing'" in exc["message"]
    )
    assert by_message["disk on fire"]["meta"]["level"] == {"name": "CRITICAL", "no": 50}
    assert by_message["custom level"]["meta"]["level"] == {"name": "Level 25", "no": 25}
    assert by_message["vendorlib fetched 2 items"]["meta"]["log"]["logger"] == "vendorlib.client"
    run = db.fetch("select script_name, status from runs where id = %s", (info["run_id"],))
    assert run == [("dictconfig-job", "success")]


def test_run_success_records_status_metrics_and_duration(
    db: Db, make_handler: Callable[..., SupabaseHandler], attach: Callable[..., logging.Logger]
) -> None:
    """A run that ends normally is success, with its metrics, finished_at and duration_ms."""
    handler = make_handler()
    log = attach(handler)
    with start_run("vapi-sync", triggered_by="cron", sync_mode="incremental") as run:
        with run.step("FETCH"):
            log.info("fetched 150 calls", extra={"meta": {"count": 150}})
        run.set(records_fetched=150)
        run.add(records_inserted=10, api_cost=0.25)
        run.add(records_inserted=5, api_cost=0.5)
        run.records_updated = 140
        run.set(sync_end_date="2025-10-25T01:45:07+00:00")
        run.metadata["overlap_hours"] = 1
    assert handler.flush(10)
    (status, fetched, inserted, updated, cost, finished, duration, mode, trig, end, meta) = (
        db.fetch(
            "select status, records_fetched, records_inserted, records_updated, api_cost, finished_at,"
            " duration_ms, sync_mode, triggered_by, sync_end_date, metadata from runs where id = %s",
            (run.id,),
        )[0]
    )
    assert (status, fetched, inserted, updated, float(cost)) == ("success", 150, 15, 140, 0.75)
    assert finished is not None and duration is not None and duration >= 0
    assert (mode, trig, end.isoformat()) == ("incremental", "cron", "2025-10-25T01:45:07+00:00")
    assert meta["overlap_hours"] == 1 and meta["log_delivery"]["delivered"] >= 1
    rows = _logs(db, run.id)
    assert [(r["step"], r["message"]) for r in rows] == [("FETCH", "fetched 150 calls")]


def test_run_exception_marks_error_and_writes_traceback_row(
    db: Db, make_handler: Callable[..., SupabaseHandler]
) -> None:
    """An exception inside a run marks it error with the message and an ERROR row with the traceback, then propagates."""
    handler = make_handler()
    logging.getLogger().addHandler(handler)
    with (
        pytest.raises(RuntimeError, match="VAPI returned 502"),
        start_run("qci-analysis") as run,
        run.step("ANALYZE"),
    ):
        raise RuntimeError("VAPI returned 502")
    assert handler.flush(10)
    status, error = db.fetch("select status, error_message from runs where id = %s", (run.id,))[0]
    assert status == "error" and error == "RuntimeError: VAPI returned 502"
    rows = _logs(db, run.id)
    assert len(rows) == 1
    row = rows[0]
    assert row["level"] == "ERROR" and row["step"] == "ERROR"
    assert row["meta"]["failed_step"] == "ANALYZE"
    assert "Traceback" in row["meta"]["exception"]["traceback"]
    assert "VAPI returned 502" in row["meta"]["exception"]["traceback"]


def test_decorator_makes_one_run_per_call(
    db: Db, make_handler: Callable[..., SupabaseHandler]
) -> None:
    """start_run as a decorator opens a new run for each call and none for the decoration."""
    handler = make_handler()
    logging.getLogger().addHandler(handler)
    ids = []

    @start_run("decorated-job")
    def job() -> None:
        from supabase_log_handler import context

        run = context.current_run()
        assert run is not None
        ids.append(run.id)
        logging.getLogger("decorated").warning("inside")

    job()
    job()
    assert handler.flush(10)
    rows = db.fetch(
        "select id, status from runs where script_name = 'decorated-job' and id = any(%s::uuid[])",
        (ids,),
    )
    assert sorted(str(r[0]) for r in rows) == sorted(ids) and {r[1] for r in rows} == {"success"}
    assert len(set(ids)) == 2


def test_subprocess_that_simply_ends_delivers_10000_rows_in_large_batches(
    db: Db, gateway: Gateway, supabase_env: dict[str, str]
) -> None:
    """10,000 records from a script that just ends are all there after exit, >= 100 rows per request."""
    gateway.reset_log()
    out = run_script(
        """
        import json, logging
        from supabase_log_handler import SupabaseHandler, context
        logging.basicConfig(level=logging.INFO, handlers=[SupabaseHandler(script_name="bulk-10k")])
        log = logging.getLogger("bulk")
        for i in range(10000):
            log.info("record %d", i)
        print(json.dumps({"run_id": context.current_run().id}))
        """,
        supabase_env,
    )
    run_id = last_json_line(out.stdout)["run_id"]
    assert db.fetchval("select count(*) from logs where run_id = %s", (run_id,)) == 10000
    assert (
        db.fetchval("select count(distinct message) from logs where run_id = %s", (run_id,))
        == 10000
    )
    posts = [
        r
        for r in gateway.requests
        if r.method == "POST" and r.path.endswith("/logs") and r.status < 300
    ]
    assert sum(r.rows for r in posts) >= 10000
    assert sum(r.rows for r in posts) / len(posts) >= 100


def test_eight_threads_keep_their_order(
    db: Db, make_handler: Callable[..., SupabaseHandler]
) -> None:
    """Rows of 8 concurrent threads are all present and each thread's order holds by (timestamp, id)."""
    handler = make_handler(max_batch_rows=300)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    per_thread = 500
    with start_run("threads") as run:
        start = threading.Barrier(8)

        def work(t: int) -> None:
            log = logging.getLogger(f"worker{t}")
            start.wait(10)
            for i in range(per_thread):
                log.info("t%d-%d", t, i, extra={"meta": {"t": t, "i": i}})

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
    assert handler.flush(30)
    rows = _logs(db, run.id)
    assert len(rows) == 8 * per_thread
    for t in range(8):
        seq = [r["meta"]["i"] for r in rows if r["meta"]["t"] == t]
        assert seq == list(range(per_thread)), f"thread {t} out of order"


LEGACY_DDL = """
create sequence if not exists sync_logs_id_seq;
create table runs (
  id uuid primary key default gen_random_uuid(),
  legacy_id bigint not null default nextval('sync_logs_id_seq'::regclass),
  batch_id uuid,
  script_name text not null,
  triggered_by text default 'manual',
  started_at timestamptz default now(),
  finished_at timestamptz,
  duration_ms integer,
  status text not null check (status in ('running', 'success', 'error')),
  error_message text,
  records_fetched integer, records_inserted integer, records_updated integer, records_failed integer,
  sync_mode text, sync_start_date timestamptz, sync_end_date timestamptz,
  calls_analyzed integer, api_cost numeric,
  metadata jsonb default '{}'
);
create table logs (
  id uuid primary key default gen_random_uuid(),
  run_id uuid not null references runs(id) on delete cascade,
  timestamp timestamptz not null default now(),
  level text not null check (level in ('INFO', 'ERROR', 'WARNING', 'DEBUG')),
  step text not null,
  message text not null,
  meta jsonb default '{}'
);
grant all on runs, logs to service_role;
grant usage on sequence sync_logs_id_seq to service_role;
"""


def test_handler_works_unchanged_on_the_legacy_schema(
    fresh_gateway: Callable[..., Any], make_handler: Callable[..., SupabaseHandler]
) -> None:
    """Against the older cron-logging tables (legacy_id, no grants of ours), runs and logs land."""
    gw, legacy_db = fresh_gateway(migrations=False, sql=LEGACY_DDL)
    handler = make_handler(gw)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    with start_run("hubspot-sync-incremental") as run:
        logging.getLogger("hubspot").info("Found 150 contacts", extra={"meta": {"count": 150}})
        run.set(records_fetched=150)
    assert handler.flush(10)
    assert handler.stats()["dead_lettered"] == 0
    status, legacy, fetched = legacy_db.fetch(
        "select status, legacy_id, records_fetched from runs where id = %s", (run.id,)
    )[0]
    assert (status, fetched) == ("success", 150) and legacy >= 1
    assert legacy_db.fetch(
        "select message, meta->>'count' from logs where run_id = %s", (run.id,)
    ) == [("Found 150 contacts", "150")]


def test_migration_makes_the_legacy_tables_writable_for_the_handler(
    fresh_gateway: Callable[..., Any], make_handler: Callable[..., SupabaseHandler]
) -> None:
    """Over the older tables with no grants at all, the migration grants what the handler needs (sequence included)."""
    bare = LEGACY_DDL.split("grant all on runs")[0]
    gw, seeded = fresh_gateway(migrations=True, sql=bare)
    handler = make_handler(gw)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    with start_run("legacy-grants") as run:
        logging.getLogger("legacy").info("written through the migration's grants")
    assert handler.flush(10)
    assert handler.stats()["dead_lettered"] == 0 and handler.stats()["spooled_pending"] == 0
    assert seeded.fetchval("select status from runs where id = %s", (run.id,)) == "success"
    assert seeded.fetchval("select legacy_id from runs where id = %s", (run.id,)) >= 1


def test_migrations_apply_twice_and_over_the_legacy_tables(
    fresh_gateway: Callable[..., Any],
) -> None:
    """The migration is idempotent, also over a database that already has the older tables."""
    from pathlib import Path

    sql = "\n".join(
        p.read_text() for p in sorted((Path(__file__).parent.parent / "migrations").glob("*.sql"))
    )
    _, seeded = fresh_gateway(migrations=False, sql=LEGACY_DDL)
    seeded.execute(sql)
    seeded.execute(sql)
    policies = seeded.fetchval(
        "select count(*) from pg_policies where tablename in ('runs', 'logs')"
    )
    assert policies == 4
    assert seeded.fetchval(
        "select bool_and(relrowsecurity) from pg_class where relname in ('runs', 'logs')"
    )
    assert (
        seeded.fetchval(
            "select count(*) from information_schema.columns where table_name = 'runs' and column_name = 'legacy_id'"
        )
        == 1
    )
