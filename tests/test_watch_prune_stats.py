"""`prune` and `stats` on Supabase and on the local store, against known dated rows."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from stack.fixtures import FreshStack
from watch_helpers import cli

from supabase_log_handler.sinks import Sink
from supabase_log_handler.sinks.local import LocalSink
from supabase_log_handler.sinks.rest import SupabaseSink

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)


def uid(n: int) -> str:
    return f"00000000-0000-7000-8000-{n:012d}"


def run(
    n: int, script: str, status: str, days_ago: float, seconds: float | None, **extra: Any
) -> dict[str, Any]:
    started = NOW - dt.timedelta(days=days_ago)
    row = {
        "id": uid(n),
        "script_name": script,
        "status": status,
        "started_at": started.isoformat(),
        "triggered_by": "cron",
        "metadata": {},
        **extra,
    }
    if seconds is not None:
        row["finished_at"] = (started + dt.timedelta(seconds=seconds)).isoformat()
        row["duration_ms"] = round(seconds * 1000)
    return row


def log(n: int, run_id: str, days_ago: float) -> dict[str, Any]:
    return {
        "id": uid(1000 + n),
        "run_id": run_id,
        "timestamp": (NOW - dt.timedelta(days=days_ago)).isoformat(),
        "level": "INFO",
        "step": "LOG",
        "message": f"m{n}",
        "meta": {},
    }


class Backend(NamedTuple):
    name: str
    sink: Sink


@pytest.fixture(params=["supabase", "local"])
def backend(
    request: pytest.FixtureRequest,
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Backend]:
    """An empty fresh Supabase database, or an empty local store; the CLI pointed at it."""
    monkeypatch.setenv("SUPABASE_LOG_LOCAL_DB", str(tmp_path / "local.sqlite3"))
    monkeypatch.setenv("SUPABASE_LOG_SPOOL", str(tmp_path / "spool.sqlite3"))
    monkeypatch.chdir(tmp_path)
    sink: Sink
    if request.param == "supabase":
        gw, _ = fresh_gateway()
        monkeypatch.setenv("SUPABASE_URL", gw.url)
        monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", gw.service_key)
        sink = SupabaseSink(gw.url, gw.service_key)
    else:
        sink = LocalSink(tmp_path / "local.sqlite3")
    yield Backend(request.param, sink)
    sink.close()


def ids(sink: Sink, table: str) -> set[str]:
    return {str(r["id"]) for r in sink.select(table)}


def test_prune_deletes_exactly_the_rows_outside_its_windows(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prune --dry-run` counts and keeps; `prune` deletes logs past --logs-days, successful runs past --runs-days and other runs past --failed-runs-days (their logs with them), and nothing else."""
    sink = backend.sink
    runs = [
        run(1, "a", "success", 9, 1),
        run(2, "a", "success", 11, 1),
        run(3, "a", "error", 19, 1),
        run(4, "a", "error", 21, 1),
        run(5, "a", "running", 25, None),
    ]
    for r in runs:
        sink.upsert_run("runs", r, final=True)
    sink.insert_rows(
        "logs", [log(1, uid(1), 4), log(2, uid(1), 6), log(3, uid(3), 7), log(4, uid(4), 1)]
    )
    args = [
        "prune",
        "--logs-days",
        "5",
        "--runs-days",
        "10",
        "--failed-runs-days",
        "20",
        "--now",
        NOW.isoformat(),
        "--json",
    ]
    code, out, _ = cli(capsys, *args, "--dry-run")
    result = json.loads(out)
    assert code == 0 and (result["logs"], result["runs"], result["dry_run"]) == (2, 3, True)
    assert len(ids(sink, "runs")) == 5 and len(ids(sink, "logs")) == 4
    code, out, _ = cli(capsys, *args)
    assert (json.loads(out)["logs"], json.loads(out)["runs"]) == (2, 3)
    assert ids(sink, "runs") == {uid(1), uid(3)}
    assert ids(sink, "logs") == {
        uid(1001)
    }  # 6 and 7 days old went; the 21-day run took its fresh row
    code, out, _ = cli(capsys, "prune", "--now", NOW.isoformat())
    assert code == 0 and "deleted 0 logs row(s)" in out and "deleted 0 run(s)" in out


def test_stats_percentiles_cost_and_records_from_known_runs(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stats` gives p50/p95/max duration, success rate, record sums and API cost per job, the same on both stores (p95 of 1, 2, 3, 4, 10 s interpolates to 8.8 s)."""
    now = dt.datetime.now(dt.timezone.utc)
    rows = []
    for i, seconds in enumerate((4.0, 1.0, 10.0, 3.0, 2.0)):
        r = run(
            i + 1,
            "qci-analysis",
            "error" if i == 1 else "success",
            0,
            seconds,
            records_fetched=10,
            records_inserted=i,
            records_failed=1,
            calls_analyzed=2,
            api_cost=0.125 * (i + 1),
        )
        r["started_at"] = (now - dt.timedelta(hours=i + 1)).isoformat()
        rows.append(r)
    rows.append({**run(9, "vapi-sync", "running", 0, None), "started_at": now.isoformat()})
    for r in rows:
        backend.sink.upsert_run("runs", r, final=True)
    code, out, _ = cli(capsys, "stats", "--since", "1d", "--json")
    assert code == 0
    st = json.loads(out)["qci-analysis"]
    assert (st["total"], st["succeeded"], st["failed"], st["success_rate"]) == (5, 4, 1, 80.0)
    assert (st["p50_duration_ms"], st["p95_duration_ms"], st["max_duration_ms"]) == (
        3000,
        8800,
        10000,
    )
    assert st["avg_duration_ms"] == 4000 and st["calls_analyzed"] == 10
    assert st["records"] == {"fetched": 50, "inserted": 10, "updated": 0, "failed": 5}
    assert st["api_cost"] == pytest.approx(1.875)
    assert json.loads(out)["vapi-sync"]["success_rate"] is None
    _, out, _ = cli(capsys, "stats", "--since", "1d")
    header, first = out.splitlines()[:2]
    assert header.split() == [
        "SCRIPT",
        "RUNS",
        "OK",
        "FAILED",
        "RUNNING",
        "AVG",
        "DURATION",
        "P50",
        "P95",
        "MAX",
        "FETCHED",
        "INSERTED",
        "UPDATED",
        "REC",
        "FAILED",
        "COST",
        "LAST",
        "RUN",
        "(UTC)",
        "LAST",
        "STATUS",
    ]
    assert first.split()[:15] == [
        "qci-analysis",
        "5",
        "4",
        "1",
        "0",
        "4.0s",
        "3.0s",
        "8.8s",
        "10.0s",
        "50",
        "10",
        "0",
        "5",
        "1.875",
        first.split()[14],
    ]
