"""The watch migration's SQL through the gateway: reaper, retention, views, grants, atomic claims."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from stack.fixtures import FreshStack
from supabase import create_client
from watch_helpers import add_error_row, add_run, at

from supabase_log_handler.watch.summary import percentile, summarize


def client(url: str, key: str) -> Any:
    return create_client(url, key)


def test_reap_stale_runs_closes_only_runs_whose_heartbeat_stopped(
    fresh_gateway: Callable[..., FreshStack],
) -> None:
    """reap_stale_runs (RPC, service role) closes a run silent for more than 3 of its own heartbeat intervals, and never a fresh one, one within its longer interval, or one without heartbeats."""
    gw, db = fresh_gateway()
    now = at("2026-05-04 12:00:00")
    killed = add_run(
        db,
        "a",
        "running",
        at("2026-05-04 11:00:00"),
        heartbeat=at("2026-05-04 11:58:29"),
        metadata={"heartbeat_interval_s": 30},
    )
    live = add_run(
        db,
        "a",
        "running",
        at("2026-05-04 11:00:00"),
        heartbeat=at("2026-05-04 11:58:31"),
        metadata={"heartbeat_interval_s": 30},
    )
    slow_interval = add_run(
        db,
        "b",
        "running",
        at("2026-05-04 11:00:00"),
        heartbeat=at("2026-05-04 11:50:00"),
        metadata={"heartbeat_interval_s": 300},
    )
    default_interval = add_run(
        db,
        "c",
        "running",
        at("2026-05-04 11:00:00"),
        heartbeat=at("2026-05-04 11:58:00"),
        metadata={"heartbeat_interval_s": "x"},
    )
    silent = add_run(db, "d", "running", at("2026-04-01 00:00:00"))
    finished = add_run(
        db,
        "e",
        "success",
        at("2026-05-04 10:00:00"),
        seconds=5,
        heartbeat=at("2026-05-04 10:00:04"),
    )
    service = client(gw.url, gw.service_key)
    closed = service.rpc("reap_stale_runs", {"as_of": now.isoformat()}).execute().data
    assert sorted(r["id"] for r in closed) == sorted([killed, default_interval])
    assert service.rpc("reap_stale_runs", {"as_of": now.isoformat()}).execute().data == []
    status = dict(db.fetch("select id::text, status from runs"))
    assert status == {
        killed: "error",
        live: "running",
        slow_interval: "running",
        default_interval: "error",
        silent: "running",
        finished: "success",
    }
    row = db.fetch(
        "select error_message, finished_at, duration_ms from runs where id = %s", (killed,)
    )
    assert row == [
        (
            "lost: no heartbeat since 2026-05-04 11:58:29 UTC",
            at("2026-05-04 11:58:29"),
            (58 * 60 + 29) * 1000,
        )
    ]
    wider = service.rpc("reap_stale_runs", {"multiple": 2, "as_of": now.isoformat()}).execute()
    assert [r["id"] for r in wider.data] == [
        live
    ]  # 11:58:31 + 2 x 30 s; 11:50 + 2 x 300 s is not past
    for key in (gw.anon_key, gw.authenticated_key):
        with pytest.raises(Exception) as failure:
            client(gw.url, key).rpc("reap_stale_runs", {}).execute()
        assert "permission denied" in str(failure.value)


def test_retention_functions_delete_exactly_their_windows_in_batches(
    fresh_gateway: Callable[..., FreshStack],
) -> None:
    """prune_logs / prune_runs delete logs older than the logs window and successful runs sooner than failed ones, at most max_rows a call; dry_run counts without deleting."""
    gw, db = fresh_gateway()
    now = at("2026-09-01 00:00:00")
    days = lambda n: now - dt.timedelta(days=n)  # noqa: E731
    keep_ok = add_run(db, "j", "success", days(89), seconds=1)
    old_ok = add_run(db, "j", "success", days(91), seconds=1)
    keep_err = add_run(db, "j", "error", days(179), seconds=1)
    old_err = add_run(db, "j", "error", days(181), seconds=1)
    old_running = add_run(db, "j", "running", days(200))
    for when in (days(29), days(31), days(31.5), days(89.9), days(90.1)):
        add_error_row(db, keep_ok, when, f"row {when:%m-%d}")
    add_error_row(db, old_err, days(10), "recent, but goes with its old run")
    service = client(gw.url, gw.service_key)

    def call(fn: str, **args: Any) -> int:
        return int(service.rpc(fn, {"as_of": now.isoformat(), **args}).execute().data)

    assert call("prune_logs", older_than_days=30, dry_run=True) == 4
    assert call("prune_logs", older_than_days=30, max_rows=3) == 3
    assert call("prune_logs", older_than_days=30, max_rows=3) == 1
    assert call("prune_logs", older_than_days=30) == 0
    assert db.fetchval("select count(*) from logs") == 2  # 29 days old, and the old run's row
    assert call("prune_runs", dry_run=True) == 3
    assert call("prune_runs", max_rows=2) == 2
    assert call("prune_runs", max_rows=2) == 1
    remaining = {r[0] for r in db.fetch("select id::text from runs")}
    assert remaining == {keep_ok, keep_err}
    assert old_ok not in remaining and old_running not in remaining
    assert db.fetchval("select count(*) from logs") == 1  # the 181-day-old run took its row along
    assert db.fetchval("select message from logs") == "row " + f"{days(29):%m-%d}"
    with pytest.raises(Exception) as failure:
        call("prune_logs", older_than_days=-1)
    assert "older_than_days must be >= 0" in str(failure.value)


def test_statistics_views_match_the_data_and_are_read_only_for_authenticated(
    fresh_gateway: Callable[..., FreshStack],
) -> None:
    """run_stats_daily and log_volume_hourly give the known counts, percentiles, records and cost to `authenticated` (RLS applies), and nothing to `anon`."""
    gw, db = fresh_gateway()
    day = dt.datetime.now(dt.timezone.utc).replace(hour=1, minute=0, second=0, microsecond=0)
    durations = [1.0, 2.0, 3.0, 4.0, 10.0]
    rows = []
    for i, seconds in enumerate(durations):
        rid = add_run(
            db,
            "qci-analysis",
            "success" if i != 2 else "error",
            day + dt.timedelta(minutes=i),
            seconds=seconds,
            records_fetched=10 + i,
            records_inserted=i,
            records_failed=1,
            api_cost=0.125 * (i + 1),
        )
        rows.append(rid)
    add_run(db, "qci-analysis", "running", day + dt.timedelta(minutes=9))
    add_error_row(db, rows[2], day + dt.timedelta(minutes=2, seconds=1), "bad")
    add_error_row(db, rows[2], day + dt.timedelta(minutes=2, seconds=2), "worse")
    auth = client(gw.url, gw.authenticated_key)
    stats = auth.table("run_stats_daily").select("*").execute().data
    assert len(stats) == 1
    st = stats[0]
    assert st["day"] == day.date().isoformat()
    assert (st["runs"], st["successes"], st["failures"], st["running"]) == (6, 4, 1, 1)
    assert st["success_rate"] == 80.0
    assert st["p50_duration_ms"] == 3000 and st["p95_duration_ms"] == pytest.approx(8800)
    assert st["max_duration_ms"] == 10000
    assert (st["records_fetched"], st["records_inserted"], st["records_failed"]) == (60, 10, 5)
    assert float(st["api_cost"]) == pytest.approx(1.875)
    volume = auth.table("log_volume_hourly").select("*").execute().data
    assert volume == [{"hour": volume[0]["hour"], "level": "ERROR", "rows": 2}]
    # the same numbers from the CLI's own summary of the rows
    mine = summarize(auth.table("runs").select("*").execute().data)["qci-analysis"]
    assert (mine["p50_duration_ms"], mine["p95_duration_ms"], mine["max_duration_ms"]) == (
        3000,
        8800,
        10000,
    )
    assert mine["api_cost"] == pytest.approx(1.875) and mine["success_rate"] == 80.0
    assert percentile([1.0, 2.0], 0.95) == pytest.approx(1.95)
    for view in ("run_stats_daily", "log_volume_hourly"):
        with pytest.raises(Exception) as failure:
            client(gw.url, gw.anon_key).table(view).select("*").execute()
        assert "permission denied" in str(failure.value)
    with pytest.raises(Exception) as failure:
        auth.table("job_schedules").insert({"script_name": "x", "cron": "* * * * *"}).execute()
    assert "permission denied" in str(failure.value)


def test_concurrent_claims_of_one_problem_give_it_to_exactly_one_caller(
    fresh_gateway: Callable[..., FreshStack],
) -> None:
    """Eight connections claim the same incident at once: one gets the row; a second problem of the same kind joins the open incident; re-alert comes only after its interval."""
    _, db = fresh_gateway()
    barrier = threading.Barrier(8)
    results: list[int] = []
    lock = threading.Lock()

    def claim(period: str) -> None:
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            barrier.wait(timeout=30)
            rows = conn.execute(
                "select * from claim_job_incident('job', 'failed', %s, '2026-01-01T00:00:00Z',"
                " p_now => '2026-01-01T00:01:00Z')",
                (period,),
            ).fetchall()
        with lock:
            results.append(len(rows))

    threads = [threading.Thread(target=claim, args=(f"run-{i % 2}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [0] * 7 + [1]
    assert db.fetchval("select count(*) from job_incidents") == 1
    db.execute("update job_incidents set sent_at = last_alert_at")

    def again(now: str, realert_s: int | None) -> int:
        return len(
            db.fetch(
                "select * from claim_job_incident('job', 'failed', 'run-9', now(),"
                " p_now => %s, p_realert_s => %s)",
                (now, realert_s),
            )
        )

    assert again("2026-01-01T02:00:00Z", None) == 0
    assert again("2026-01-01T00:30:00Z", 3600) == 0
    assert again("2026-01-01T01:01:00Z", 3600) == 1
    assert again("2026-01-01T01:02:00Z", 3600) == 0
    assert db.fetchval("select alerts from job_incidents") == 2
