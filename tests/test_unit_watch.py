"""Schedules and the state rules as pure functions: durations, cron in a time zone, interval slots."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from stack.fixtures import FreshStack

from supabase_log_handler.errors import ConfigurationError
from supabase_log_handler.watch import declare_schedule, declare_schedule_in_background
from supabase_log_handler.watch.evaluate import evaluate_schedule
from supabase_log_handler.watch.schedules import (
    Schedule,
    check_cron,
    cron_times,
    format_duration,
    parse_duration_s,
)

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_durations_parse_and_format() -> None:
    """15m, 6h, 1h30m, 90 and 1.5s parse to seconds; garbage and negatives are refused."""
    assert [parse_duration_s(t) for t in ("15m", "6h", "1h30m", "90", "1.5s", "2d", "1 h 5 m")] == [
        900,
        21600,
        5400,
        90,
        1.5,
        172800,
        3900,
    ]
    for bad in ("", "soon", "5x", "m5", "-1s"):
        with pytest.raises(ValueError):
            parse_duration_s(bad)
    assert [format_duration(s) for s in (0, 45, 900, 5400, 90061)] == [
        "0s",
        "45s",
        "15m",
        "1h30m",
        "1d1h1m1s",
    ]


def test_cron_times_follow_the_wall_clock_through_dst() -> None:
    """In Europe/Berlin, 02:30 daily is 01:00 UTC on the spring day (skipped hour) and once on the autumn day; every-minute has no phantom minutes in the skipped hour."""
    spring = cron_times(
        "30 2 * * *", "Europe/Berlin", at("2026-03-27 00:00"), at("2026-03-31 00:00")
    )
    assert [t.strftime("%m-%d %H:%M") for t in spring] == [
        "03-27 01:30",
        "03-28 01:30",
        "03-29 01:00",
        "03-30 00:30",
    ]
    autumn = cron_times(
        "30 2 * * *", "Europe/Berlin", at("2026-10-24 00:00"), at("2026-10-27 00:00")
    )
    assert [t.strftime("%m-%d %H:%M") for t in autumn] == [
        "10-24 00:30",
        "10-25 00:30",
        "10-26 01:30",
    ]
    minutes = cron_times(
        "* * * * *", "Europe/Berlin", at("2026-03-29 00:00"), at("2026-03-29 02:00")
    )
    assert len(minutes) == 120 and len(set(minutes)) == 120
    hourly = cron_times(
        "0 * * * *", "Europe/Berlin", at("2026-10-24 23:30"), at("2026-10-25 03:30")
    )
    assert [t.strftime("%H:%M") for t in hourly] == ["00:00", "01:00", "02:00", "03:00"]
    assert cron_times("0 */6 * * *", "UTC", at("2026-01-01 00:00"), at("2026-01-01 12:00")) == [
        at("2026-01-01 06:00"),
        at("2026-01-01 12:00"),
    ]


def test_bad_schedules_say_what_is_wrong() -> None:
    """Six fields, out-of-range values, unknown zones and min >= max runtime are refused with reasons."""
    assert check_cron(" 0  */6 * * * ") == "0 */6 * * *"
    for expr, words in (
        ("0 0 * * * *", "five fields"),
        ("60 * * * *", "not valid"),
        ("* * 31 2 *", "not valid"),
    ):
        with pytest.raises(ConfigurationError, match=words):
            check_cron(expr)
    with pytest.raises(ConfigurationError, match="unknown time zone"):
        Schedule("x", cron="0 * * * *", timezone="Europe/Atlantis").validated()
    with pytest.raises(ConfigurationError, match="min_runtime_s must be below"):
        Schedule("x", interval_s=60, min_runtime_s=60, max_runtime_s=30).validated()
    assert Schedule(
        "x", interval_s=60, channels=("Slack", " email", "slack")
    ).validated().channels == ("email", "slack")


def run(
    rid: str, started: str, status: str = "success", seconds: float | None = 10
) -> dict[str, Any]:
    row: dict[str, Any] = {"id": rid, "status": status, "started_at": at(started).isoformat()}
    if seconds is not None:
        row["duration_ms"] = int(seconds * 1000)
    return row


def kinds(schedule: Schedule, runs: list[dict[str, Any]], now: str) -> list[tuple[str, str]]:
    state = evaluate_schedule(schedule, runs, at(now))
    return [(p.kind, p.period) for p in state.problems]


def test_interval_schedule_late_then_missed_then_a_late_start() -> None:
    """Every hour with 5m grace after a 10:00 run: fine at 11:04, late at 11:06, missed (and the next start late) at 12:06; a run at 11:20 was a late start, ended by the next good run."""
    sched = Schedule("j", interval_s=3600, grace_s=300, created_at=at("2026-01-01 00:00"))
    runs = [run("a", "2026-01-01 10:00")]
    assert kinds(sched, runs, "2026-01-01 11:04") == []
    assert kinds(sched, runs, "2026-01-01 11:06") == [("late", "2026-01-01T11:00:00.000000+00:00")]
    assert kinds(sched, runs, "2026-01-01 12:06") == [
        ("missed", "2026-01-01T11:00:00.000000+00:00"),
        ("late", "2026-01-01T12:00:00.000000+00:00"),
    ]
    runs.append(run("b", "2026-01-01 11:20"))
    state = evaluate_schedule(sched, runs, at("2026-01-01 11:40"))
    assert [(p.kind, p.run_id) for p in state.problems] == [("late", "b")]
    assert state.last_good is not None and state.last_good["id"] == "b"  # its own late start stays
    runs.append(run("c", "2026-01-01 12:20"))  # an hour after b: on time, and good
    assert kinds(sched, runs, "2026-01-01 12:40") == []


def test_runtime_limits_and_failures_end_at_the_next_good_run() -> None:
    """Too long (running or finished), too fast and failed are reported until a later good run."""
    sched = Schedule(
        "j",
        cron="0 * * * *",
        grace_s=120,
        max_runtime_s=600,
        min_runtime_s=30,
        created_at=at("2026-01-01 09:30"),
    )
    runs = [
        run("a", "2026-01-01 10:00:05", seconds=5),
        run("b", "2026-01-01 11:00:05", "error", 3),
        run("c", "2026-01-01 12:00:05", "running", None),
    ]
    assert kinds(sched, runs, "2026-01-01 12:10:10") == [
        ("failed", "b"),
        ("too_long", "c"),
        ("too_fast", "a"),
    ]
    runs[2] = run("c", "2026-01-01 12:00:05", seconds=700)
    runs.append(run("d", "2026-01-01 13:00:05", seconds=60))
    assert kinds(sched, runs, "2026-01-01 13:30") == []


def test_declare_schedule_writes_once_and_updates_on_change(
    fresh_gateway: Callable[..., FreshStack],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """declare_schedule creates the row (declared_in=code), leaves it when unchanged, updates it when the arguments change; the background variant runs once per process and never raises."""
    gw, db = fresh_gateway()
    monkeypatch.chdir(tmp_path)
    creds = {"url": gw.url, "key": gw.service_key}
    assert (
        declare_schedule("vapi-sync", "0 */6 * * *", tz="Europe/Moscow", grace_s=900, **creds)
        == "created"
    )
    assert (
        declare_schedule("vapi-sync", "0 */6 * * *", tz="Europe/Moscow", grace_s=900, **creds)
        == "unchanged"
    )
    assert (
        declare_schedule("vapi-sync", "0 */4 * * *", tz="Europe/Moscow", grace_s=900, **creds)
        == "updated"
    )
    assert db.fetch("select cron, timezone, grace_s, declared_in from job_schedules") == [
        ("0 */4 * * *", "Europe/Moscow", 900, "code")
    ]
    with pytest.raises(ConfigurationError, match="live in Supabase"):
        declare_schedule("x", "0 * * * *")  # nothing configured: the local store keeps no schedules
    thread = declare_schedule_in_background("bg-job", interval_s=600, **creds)
    assert thread is not None
    thread.join(30)
    assert declare_schedule_in_background("bg-job", interval_s=600, **creds) is None
    assert db.fetchval("select interval_s from job_schedules where script_name = 'bg-job'") == 600
    failing = declare_schedule_in_background("nowhere", "0 * * * *")
    assert failing is not None
    failing.join(30)
    wait_until(
        lambda: "could not declare the schedule of 'nowhere'" in capsys.readouterr().err, 5, "note"
    )
