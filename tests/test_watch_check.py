"""`supabase-log check` against a real database: each state once, one alert per incident, one recovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT
from stack.fixtures import FreshStack
from watch_helpers import add_error_row, add_run, alert_peers, at, cli, point_at


def check(capsys: pytest.CaptureFixture[str], now: str, *extra: str) -> tuple[int, dict, str]:
    code, out, err = cli(capsys, "check", "--json", "--now", now, *extra)
    return code, json.loads(out), err


def states(report: dict) -> dict[str, tuple[str, list[str]]]:
    return {
        j["script_name"]: (j["state"], [p["kind"] for p in j["problems"]]) for j in report["jobs"]
    }


def test_every_minute_across_dst_each_state_once_and_one_recovery(
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every-minute job in Europe/Berlin across the spring DST jump: failed, missed, late, too fast, too long and recovered are each reported once, on Slack, Telegram and email, with no secret."""
    gw, db = fresh_gateway()
    point_at(monkeypatch, tmp_path, gw)
    with alert_peers(monkeypatch) as peers:
        code, out, _ = cli(
            capsys,
            "schedule",
            "set",
            "sync",
            "* * * * *",
            "--tz",
            "Europe/Berlin",
            "--grace",
            "20s",
            "--max-runtime",
            "40s",
            "--min-runtime",
            "5s",
        )
        assert code == 0 and out.startswith("created: sync")
        db.execute("update job_schedules set created_at = %s", (at("2026-03-29 00:54:00"),))
        sent: list[tuple[int, int, int]] = []

        def step(now: str, expect_state: str, expect_code: int, then: str | None = None) -> dict:
            for state in (expect_state, then or expect_state):  # a repeat sends nothing more
                code, report, err = check(capsys, now)
                assert code == expect_code, (now, report, err)
                assert gw.service_key not in json.dumps(report)  # quoted by a run: masked
                assert report["jobs"][0]["state"] == state, (now, report)
            sent.append(peers.counts())
            return report

        add_run(db, "sync", "success", at("2026-03-29 00:55:02"), seconds=10)
        step("2026-03-29T00:55:40Z", "ok", 0)
        r2 = add_run(
            db,
            "sync",
            "error",
            at("2026-03-29 00:56:01"),
            seconds=4,
            error=f"ConnectError: refused; key={gw.service_key}",
        )
        add_error_row(db, r2, at("2026-03-29 00:56:04"), "could not save page 3")
        report = step("2026-03-29T00:56:30Z", "failed", 1)
        assert report["jobs"][0]["problems"][0]["run_id"] == r2
        step("2026-03-29T00:58:10Z", "failed", 1)  # slot 00:57 passed with no run: missed
        add_run(db, "sync", "error", at("2026-03-29 00:58:30"), seconds=3, error="boom again")
        report = step("2026-03-29T00:58:50Z", "failed", 1)  # started 30s late; failed already open
        assert states(report)["sync"][1] == ["failed", "missed", "late"]
        add_run(db, "sync", "success", at("2026-03-29 00:59:01"), seconds=2)  # too fast
        step("2026-03-29T00:59:30Z", "failed", 1)
        add_run(db, "sync", "running", at("2026-03-29 01:00:01"))  # 03:00:01 CEST, after the jump
        report = step("2026-03-29T01:00:50Z", "failed", 1)
        assert set(states(report)["sync"][1]) == {
            "failed",
            "missed",
            "late",
            "too_fast",
            "too_long",
        }
        db.execute(
            "update runs set status = 'success', finished_at = started_at + interval '35 s',"
            " duration_ms = 35000 where status = 'running'"
        )
        add_run(db, "sync", "success", at("2026-03-29 01:01:01"), seconds=10)
        report = step("2026-03-29T01:01:40Z", "recovered", 0, then="ok")
        assert report["jobs"][0]["problems"] == [] and report["alerts"] == []
        add_run(db, "sync", "success", at("2026-03-29 01:02:01"), seconds=9)
        step("2026-03-29T01:02:40Z", "ok", 0)

    # messages per check: failed, missed, late, too_fast, too_long, recovery; nothing on repeats
    per_channel = [c[0] for c in sent]
    assert per_channel == [0, 1, 2, 3, 4, 5, 6, 6]
    assert [c[1] for c in sent] == per_channel and [c[2] for c in sent] == per_channel
    slack = peers.slack.texts()
    assert [t.split("\n")[0] for t in slack] == [
        "*sync failed*",
        "*sync missed a run*",
        "*sync is late*",
        "*sync finished too fast*",
        "*sync is running too long*",
        "*sync recovered*",
    ]
    assert "could not save page 3" in slack[0] and "ConnectError: refused" in slack[0]
    assert "no run started for 2026-03-29 00:57:00 UTC" in slack[1]
    assert "started 30s late (expected 2026-03-29 00:58:00 UTC" in slack[2]
    assert "finished in 2s, expected at least 5s" in slack[3]
    assert "running for 49s, limit 40s" in slack[4]
    assert "failed, late, missed, too_fast, too_long" in slack[5]
    for text in peers.all_texts():
        for secret in [gw.service_key, *peers.secrets()]:
            assert secret not in text
    assert "key=[REDACTED]" in slack[0]
    incidents = db.fetch(
        "select kind, alerts, sent_at is not null, resolved_at is not null,"
        " recovery_sent_at is not null from job_incidents order by opened_at"
    )
    assert incidents == [
        (k, 1, True, True, True) for k in ("failed", "missed", "late", "too_fast", "too_long")
    ]


def test_daily_schedule_keeps_its_local_time_across_both_dst_changes(
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A "30 2 * * *" schedule in Europe/Berlin: on the spring day (02:30 does not exist) the 03:00 CEST run is on time, on the autumn day the first 02:30 counts once, and a skipped day is missed."""
    gw, db = fresh_gateway()
    point_at(monkeypatch, tmp_path, gw)
    code, _, _ = cli(
        capsys,
        "schedule",
        "set",
        "nightly",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--grace",
        "10m",
    )
    assert code == 0
    db.execute("update job_schedules set created_at = '2026-03-20T00:00:00Z'")
    for started in ("2026-03-27 01:30:05", "2026-03-28 01:30:04", "2026-03-29 01:00:30"):
        add_run(db, "nightly", "success", at(started), seconds=60)
    code, report, _ = check(capsys, "2026-03-29T01:30:00Z", "--no-alerts")
    assert (code, states(report)) == (0, {"nightly": ("ok", [])})
    assert report["jobs"][0]["next_expected"] == "2026-03-30T00:30:00.000000+00:00"

    db.execute("update job_schedules set created_at = '2026-10-20T00:00:00Z'")
    add_run(db, "nightly", "success", at("2026-10-24 00:30:02"), seconds=60)
    add_run(db, "nightly", "success", at("2026-10-25 00:30:03"), seconds=60)  # 02:30 CEST
    code, report, _ = check(capsys, "2026-10-25T01:50:00Z", "--no-alerts")  # after 02:30 CET
    assert (code, states(report)) == (0, {"nightly": ("ok", [])})
    assert report["jobs"][0]["next_expected"] == "2026-10-26T01:30:00.000000+00:00"
    code, report, _ = check(capsys, "2026-10-27T01:35:00Z", "--no-alerts")  # no run on the 26th
    assert code == 1 and states(report) == {"nightly": ("missed", ["missed"])}
    assert report["jobs"][0]["problems"][0]["period"] == "2026-10-26T01:30:00.000000+00:00"


def test_check_reaps_a_killed_run_alerts_once_and_never_touches_live_ones(
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run whose heartbeat stopped (its process was SIGKILLed) is closed as lost by `check` and alerted once; a slow live run with a fresh heartbeat, and one that sends none, stay running."""
    gw, db = fresh_gateway()
    point_at(monkeypatch, tmp_path, gw)
    now = at("2026-05-04 12:00:00")
    killed = add_run(
        db,
        "import",
        "running",
        at("2026-05-04 11:00:00"),
        heartbeat=at("2026-05-04 11:58:00"),
        metadata={"heartbeat_interval_s": 30},
    )
    live = add_run(
        db,
        "import",
        "running",
        at("2026-05-04 10:00:00"),
        heartbeat=at("2026-05-04 11:59:20"),
        metadata={"heartbeat_interval_s": 30},
    )
    silent = add_run(db, "legacy", "running", at("2026-05-01 00:00:00"))
    long_dead = add_run(
        db, "archive", "running", at("2026-05-01 00:00:00"), heartbeat=at("2026-05-02 00:00:00")
    )  # silent for 2.5 days
    with alert_peers(monkeypatch) as peers:
        code, out, _ = cli(capsys, "check", "--now", now.isoformat())
        assert code == 1
        assert f"lost: run {killed} of import (no heartbeat since 2026-05-04 11:58:00 UTC)" in out
        assert "import   lost" in out and "archive  lost" in out
        code, out, _ = cli(capsys, "check", "--now", now.isoformat())
        assert peers.counts() == (2, 2, 2)
    assert sorted(t.split("\n")[0] for t in peers.slack.texts()) == [
        "*archive was lost (no heartbeat)*",
        "*import was lost (no heartbeat)*",
    ]
    assert db.fetchval("select status from runs where id = %s", (long_dead,)) == "error"
    assert any("lost: no heartbeat since 2026-05-04 11:58:00 UTC" in t for t in peers.slack.texts())
    rows = dict(db.fetch("select id::text, status || ' ' || coalesce(error_message, '') from runs"))
    assert rows[killed] == "error lost: no heartbeat since 2026-05-04 11:58:00 UTC"
    assert rows[live] == "running " and rows[silent] == "running "
    assert db.fetchval("select duration_ms from runs where id = %s", (killed,)) == 58 * 60 * 1000


def test_two_checks_at_once_send_each_alert_once(
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Four `check` processes started together over the same failure: one message per channel."""
    gw, db = fresh_gateway()
    env = point_at(monkeypatch, tmp_path, gw)
    cli(capsys, "schedule", "set", "report", "--interval", "1h", "--grace", "5m")
    db.execute("update job_schedules set created_at = '2026-06-01T00:00:00Z'")
    add_run(db, "report", "success", at("2026-06-01 08:00:00"), seconds=30)
    add_run(db, "report", "error", at("2026-06-01 09:00:00"), seconds=30, error="quota exceeded")
    with alert_peers(monkeypatch) as peers:
        child_env = {**os.environ, **env, **peers.env, "PYTHONPATH": str(ROOT)}
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "supabase_log_handler",
                    "check",
                    "--now",
                    "2026-06-01T09:10:00Z",
                ],
                env=child_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        results = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [1, 1, 1, 1], results
        assert peers.counts() == (1, 1, 1)
    assert sum("alert incident report failed: sent to" in out for out, _ in results) == 1
    assert db.fetchval("select alerts from job_incidents") == 1


def test_schedule_set_list_rm_and_bad_input(
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`schedule set` creates, updates only on change, refuses bad cron/zone; `list` and `rm` show it."""
    gw, db = fresh_gateway()
    point_at(monkeypatch, tmp_path, gw)
    args = [
        "schedule",
        "set",
        "vapi-sync",
        "0 */6 * * *",
        "--tz",
        "Europe/Moscow",
        "--grace",
        "15m",
        "--max-runtime",
        "30m",
        "--channels",
        "slack,email",
    ]
    assert cli(capsys, *args)[1] == "created: vapi-sync 0 */6 * * * (Europe/Moscow)\n"
    assert cli(capsys, *args)[1].startswith("unchanged: ")
    assert cli(capsys, *args[:-2])[1].startswith("updated: ")
    code, out, _ = cli(capsys, "schedule", "list", "--json")
    assert json.loads(out) == [
        {
            "script_name": "vapi-sync",
            "cron": "0 */6 * * *",
            "interval_s": None,
            "timezone": "Europe/Moscow",
            "grace_s": 900,
            "max_runtime_s": 1800,
            "min_runtime_s": None,
            "channels": None,
            "enabled": True,
            "declared_in": "cli",
        }
    ]
    code, out, _ = cli(capsys, "schedule", "list")
    assert out.splitlines()[1].split() == [
        "vapi-sync",
        "0",
        "*/6",
        "*",
        "*",
        "*",
        "(Europe/Moscow)",
        "15m",
        "30m",
        "all",
        "yes",
        "cli",
    ]
    code, _, err = cli(capsys, "schedule", "set", "x", "61 * * * *")
    assert code == 2 and "is not valid" in err
    code, _, err = cli(capsys, "schedule", "set", "x", "0 * * * *", "--tz", "Mars/Olympus")
    assert code == 2 and "unknown time zone 'Mars/Olympus'" in err
    code, _, err = cli(capsys, "schedule", "set", "x", "0 * * * *", "--interval", "1h")
    assert code == 2 and "not both" in err
    assert cli(capsys, "schedule", "rm", "vapi-sync") == (0, "removed: vapi-sync\n", "")
    code, _, err = cli(capsys, "schedule", "rm", "vapi-sync")
    assert code == 1 and "no schedule for 'vapi-sync'" in err
    assert db.fetchval("select count(*) from job_schedules") == 0
