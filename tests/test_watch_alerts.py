"""Alert channels against loopback servers that speak their protocols; the job's own failure alert."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_script, wait_until
from stack.alert_peers import mail_peer, slack_peer, telegram_peer, webhook_peer
from stack.fixtures import FreshStack
from watch_helpers import (
    SMTP_PASSWORD,
    TELEGRAM_TOKEN,
    WEBHOOK_AUTH,
    add_error_row,
    add_run,
    alert_peers,
    at,
    cli,
    point_at,
)

from supabase_log_handler.watch import notify_run_failed
from supabase_log_handler.watch.alerts import alert_counts, deliver
from supabase_log_handler.watch.channels import (
    AlertError,
    EmailChannel,
    Message,
    SlackChannel,
    TelegramChannel,
    WebhookChannel,
    load_channels,
)

MESSAGE = Message("job failed", "line one\nline two", {"event": "incident", "kind": "failed"})


def test_each_channel_delivers_in_its_protocol() -> None:
    """Slack gets {"text"}, Telegram sendMessage gets chat_id/text, the webhook gets JSON with its Authorization header, email arrives through SMTP AUTH."""
    with (
        slack_peer() as slack,
        telegram_peer(TELEGRAM_TOKEN) as tg,
        webhook_peer() as hook,
        mail_peer("alerts", SMTP_PASSWORD) as mail,
    ):
        SlackChannel(slack.base_url + slack.secret_path).send(MESSAGE, 5)
        TelegramChannel(TELEGRAM_TOKEN, "-100", tg.base_url).send(MESSAGE, 5)
        WebhookChannel(hook.base_url + "/hook", WEBHOOK_AUTH).send(MESSAGE, 5)
        EmailChannel(
            "127.0.0.1",
            mail.port,
            "jobs@example.test",
            ("a@example.test", "b@example.test"),
            user="alerts",
            password=SMTP_PASSWORD,
            starttls=False,
        ).send(MESSAGE, 5)
        assert slack.received[0].body == {"text": "*job failed*\nline one\nline two"}
        assert tg.received[0].body == {
            "chat_id": "-100",
            "text": "job failed\n\nline one\nline two",
            "disable_web_page_preview": True,
        }
        assert hook.received[0].body == {
            "subject": "job failed",
            "text": "line one\nline two",
            "event": "incident",
            "kind": "failed",
        }
        assert hook.received[0].headers["authorization"] == WEBHOOK_AUTH
        assert mail.messages[0]["to"] == ["a@example.test", "b@example.test"]
        assert "Subject: job failed" in mail.messages[0]["data"]
        assert "line two" in mail.messages[0]["data"]


def test_refusals_name_the_channel_and_never_the_secret() -> None:
    """A wrong webhook path, a wrong bot token, a wrong SMTP password and a server without STARTTLS each raise AlertError naming the channel and the fix, without the secret."""
    with (
        slack_peer() as slack,
        telegram_peer(TELEGRAM_TOKEN) as tg,
        mail_peer("alerts", SMTP_PASSWORD) as mail,
    ):
        failures = []
        for channel in (
            SlackChannel(slack.base_url + "/services/T0/B0/wrong-secret-path"),
            TelegramChannel("111:wrong-telegram-token", "-100", tg.base_url),
            EmailChannel(
                "127.0.0.1",
                mail.port,
                "x@example.test",
                ("y@example.test",),
                user="alerts",
                password="wrong-smtp-password",
                starttls=False,
            ),
            EmailChannel("127.0.0.1", mail.port, "x@example.test", ("y@example.test",)),
        ):
            with pytest.raises(AlertError) as failure:
                channel.send(MESSAGE, 5)
            failures.append(str(failure.value))
    assert failures[0] == "slack: HTTP 404" and failures[1] == "telegram: HTTP 401"
    assert failures[2].startswith("email: SMTP")  # refused (535) or disconnected after it
    assert "set SUPABASE_LOG_SMTP_STARTTLS=false" in failures[3]
    for text in failures:
        for secret in ("wrong-secret-path", "wrong-telegram-token", "wrong-smtp-password"):
            assert secret not in text


def test_channels_come_from_the_documented_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """load_channels reads the environment, then the .env file; half a Telegram setup is an error."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SUPABASE_LOG_WEBHOOK_URL=http://127.0.0.1:9/hook\n")
    monkeypatch.setenv("SUPABASE_LOG_SLACK_WEBHOOK_URL", "http://127.0.0.1:9/services/x")
    assert sorted(load_channels()) == ["slack", "webhook"]
    monkeypatch.setenv("SUPABASE_LOG_TELEGRAM_BOT_TOKEN", "1:abc")
    with pytest.raises(ValueError, match="SUPABASE_LOG_TELEGRAM_CHAT_ID"):
        load_channels()


def test_deliver_masks_secrets_and_returns_by_its_deadline_when_a_channel_hangs() -> None:
    """A message carrying a channel's secret reaches Slack masked; a hanging webhook is reported as timed out while Slack's delivery stands."""
    with slack_peer() as slack, webhook_peer(hang=True) as hook:
        slack_url = slack.base_url + slack.secret_path
        leaky = Message("x", f"posted to {slack_url} with {TELEGRAM_TOKEN}", {})
        channels = [
            SlackChannel(slack_url),
            WebhookChannel(hook.base_url + "/hook"),
            TelegramChannel(TELEGRAM_TOKEN, "1", "http://127.0.0.1:9"),
        ]
        outcome = deliver(leaky, channels, deadline_s=1.0)
        assert hook.arrived.is_set() and not hook.release.is_set()
        assert outcome.sent == ["slack"] and outcome.timed_out == ["webhook"]
        assert outcome.failed == ["telegram: request failed (ConnectError)"]
        assert slack.texts() == ["*x*\nposted to [REDACTED] with [REDACTED]"]


def test_notify_run_failed_gives_up_at_its_deadline_when_the_webhook_hangs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The job-side alert returns while the hanging webhook still holds the request, and counts that it gave up; it never raises."""
    monkeypatch.chdir(tmp_path)
    with webhook_peer(hang=True) as hook:
        monkeypatch.setenv("SUPABASE_LOG_WEBHOOK_URL", hook.base_url + "/hook")
        before = alert_counts()["gave_up"]
        run = {
            "id": "r1",
            "script_name": "vapi-sync",
            "status": "error",
            "error_message": "boom",
            "started_at": "2026-01-01T00:00:00+00:00",
            "duration_ms": 1200,
        }
        notify_run_failed(
            run,
            [{"timestamp": "2026-01-01T00:00:01Z", "step": "SAVE", "message": "bad"}],
            deadline_s=0.5,
        )
        assert alert_counts()["gave_up"] == before + 1
        wait_until(hook.arrived.is_set, 10, "the alert to reach the webhook")
        assert not hook.release.is_set()  # the request is still hanging: notify did not wait for it
        assert hook.received[0].body["script_name"] == "vapi-sync"
        assert "Last ERROR rows:\n" in hook.received[0].body["text"]


def test_a_job_process_exits_while_its_alert_still_hangs(tmp_path: Path) -> None:
    """A job that alerts through a hanging webhook exits normally after the deadline: the daemon thread still holding the request does not keep the interpreter alive."""
    with webhook_peer(hang=True) as hook:
        proc = run_script(
            """
            from supabase_log_handler.watch import notify_run_failed
            from supabase_log_handler.watch.alerts import alert_counts
            notify_run_failed({"id": "r9", "script_name": "job", "status": "error"}, [], deadline_s=0.5)
            print(alert_counts()["gave_up"])
            """,
            {"SUPABASE_LOG_WEBHOOK_URL": hook.base_url + "/hook"},
            cwd=tmp_path,
            timeout_s=60,
        )
        assert proc.returncode == 0 and proc.stdout.strip() == "1"
        assert hook.arrived.is_set() and not hook.release.is_set()


def test_job_alert_claims_the_incident_so_check_does_not_repeat_it(
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A failed run alerted by the job itself is one incident: a second notify and a later `check` send nothing more, and the message carries the ERROR rows and the dashboard link."""
    gw, db = fresh_gateway()
    point_at(monkeypatch, tmp_path, gw)
    monkeypatch.setenv("SUPABASE_LOG_DASHBOARD_URL", "https://dash.example.test/runs/{run_id}")
    cli(capsys, "schedule", "set", "sync", "--interval", "1h")
    db.execute("update job_schedules set created_at = '2026-02-01T09:30:00Z'")
    rid = add_run(
        db, "sync", "error", at("2026-02-01 10:00:00"), seconds=2, error="HTTP 502 from VAPI"
    )
    add_error_row(db, rid, at("2026-02-01 10:00:01"), "VAPI returned 502")
    run = db.fetch("select row_to_json(r)::jsonb from runs r where id = %s", (rid,))[0][0]
    errors = [{"timestamp": "2026-02-01T10:00:01Z", "step": "SAVE", "message": "VAPI returned 502"}]
    with alert_peers(monkeypatch) as peers:
        before = alert_counts()
        notify_run_failed(run, errors, deadline_s=30)
        notify_run_failed(run, errors, deadline_s=30)
        after = alert_counts()
        assert after["run_failed_sent"] == before["run_failed_sent"] + 1
        assert after["run_failed_skipped"] == before["run_failed_skipped"] + 1
        assert peers.counts() == (1, 1, 1)
        code, out, _ = cli(capsys, "check", "--now", "2026-02-01T10:05:00Z")
        assert code == 1 and "alert" not in out
        assert peers.counts() == (1, 1, 1)
    text = peers.slack.texts()[0]
    assert "Error: HTTP 502 from VAPI" in text and "[SAVE] VAPI returned 502" in text
    assert f"Link: https://dash.example.test/runs/{rid}" in text
    assert db.fetchval("select sent_at is not null from job_incidents") is True


def test_no_channel_means_no_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without any alert variable, notify_run_failed returns at once and counts nothing."""
    monkeypatch.chdir(tmp_path)
    before = alert_counts()
    notify_run_failed({"id": "x", "script_name": "y"}, [], deadline_s=0.01)
    assert alert_counts() == before


def test_digest_sums_runs_failures_durations_and_cost_per_job(
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`digest --since 24h` sends one summary (runs, failed, p50/p95, cost per job) to each channel."""
    gw, db = fresh_gateway()
    point_at(monkeypatch, tmp_path, gw)
    now = dt.datetime.now(dt.timezone.utc)
    for i, seconds in enumerate((10.0, 20.0, 30.0)):
        add_run(
            db,
            "qci-analysis",
            "success",
            now - dt.timedelta(hours=i + 1),
            seconds=seconds,
            api_cost=0.5,
        )
    add_run(db, "vapi-sync", "error", now - dt.timedelta(hours=2), seconds=1, error="x")
    add_run(db, "vapi-sync", "success", now - dt.timedelta(hours=30), seconds=1)  # outside 24h
    code, out, _ = cli(capsys, "digest", "--print")
    assert code == 0 and out.startswith("Job digest: 4 runs, 1 failed\n")
    with alert_peers(monkeypatch) as peers:
        code, out, _ = cli(capsys, "digest", "--since", "24h")
        assert code == 0 and out.startswith("digest sent to ")
        assert peers.counts() == (1, 1, 1)
    text = peers.telegram.texts()[0]
    assert "4 runs, 1 failed, API cost 1.5" in text
    assert (
        "- qci-analysis: 3 runs, 0 failed (100% ok), p50 20.0s, p95 29.0s, max 30.0s, cost 1.5"
        in text
    )
    assert "- vapi-sync: 1 runs, 1 failed (0% ok)" in text
