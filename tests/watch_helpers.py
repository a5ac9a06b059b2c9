"""Shared helpers for the watch tests: dated runs rows, a pointed CLI, alert peers in the env."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from stack.alert_peers import HttpPeer, MailPeer, mail_peer, slack_peer, telegram_peer, webhook_peer
from stack.fixtures import Db
from stack.gateway import Gateway

from supabase_log_handler.cli import main

UTC = dt.timezone.utc
TELEGRAM_TOKEN = "987654:telegram-bot-secret-token"
SMTP_PASSWORD = "smtp-password-very-secret"
WEBHOOK_AUTH = "Bearer webhook-secret-token-value"


def at(text: str) -> dt.datetime:
    """A UTC time from ``2026-03-29 00:55:02``."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def add_run(
    db: Db,
    script: str,
    status: str,
    started: dt.datetime,
    *,
    seconds: float | None = None,
    error: str | None = None,
    heartbeat: dt.datetime | None = None,
    metadata: dict[str, Any] | None = None,
    run_id: str | None = None,
    **metrics: Any,
) -> str:
    """Insert a runs row as superuser; ``seconds`` sets finished_at and duration_ms."""
    rid = run_id or str(uuid.uuid4())
    finished = started + dt.timedelta(seconds=seconds) if seconds is not None else None
    columns = {
        "id": rid,
        "script_name": script,
        "status": status,
        "started_at": started,
        "finished_at": finished,
        "duration_ms": None if seconds is None else round(seconds * 1000),
        "error_message": error,
        "heartbeat_at": heartbeat,
        "metadata": json.dumps(metadata or {}),
        **metrics,
    }
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    db.execute(f"insert into runs ({names}) values ({marks})", list(columns.values()))
    return rid


def add_error_row(db: Db, run_id: str, when: dt.datetime, message: str, step: str = "SAVE") -> None:
    db.execute(
        "insert into logs (id, run_id, timestamp, level, step, message) values (%s, %s, %s, 'ERROR', %s, %s)",
        (str(uuid.uuid4()), run_id, when, step, message),
    )


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def point_at(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, gw: Gateway) -> dict[str, str]:
    env = {
        "SUPABASE_URL": gw.url,
        "SUPABASE_SERVICE_ROLE_KEY": gw.service_key,
        "SUPABASE_LOG_LOCAL_DB": str(tmp_path / "local.sqlite3"),
        "SUPABASE_LOG_SPOOL": str(tmp_path / "spool.sqlite3"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return env


class Peers(NamedTuple):
    slack: HttpPeer
    telegram: HttpPeer
    mail: MailPeer
    env: dict[str, str]

    def counts(self) -> tuple[int, int, int]:
        return len(self.slack.texts()), len(self.telegram.texts()), len(self.mail.messages)

    def all_texts(self) -> list[str]:
        return [
            *self.slack.texts(),
            *self.telegram.texts(),
            *(m["data"] for m in self.mail.messages),
        ]

    def secrets(self) -> list[str]:
        return [self.slack.secret_path.rsplit("/", 1)[-1], TELEGRAM_TOKEN, SMTP_PASSWORD]


@contextmanager
def alert_peers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Peers]:
    """Slack, Telegram and SMTP peers, configured through the documented variables."""
    with ExitStack() as stack:
        slack = stack.enter_context(slack_peer())
        telegram = stack.enter_context(telegram_peer(TELEGRAM_TOKEN))
        mail = stack.enter_context(mail_peer("alerts", SMTP_PASSWORD))
        env = {
            "SUPABASE_LOG_SLACK_WEBHOOK_URL": slack.base_url + slack.secret_path,
            "SUPABASE_LOG_TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
            "SUPABASE_LOG_TELEGRAM_CHAT_ID": "-100777",
            "SUPABASE_LOG_TELEGRAM_API_URL": telegram.base_url,
            "SUPABASE_LOG_SMTP_HOST": "127.0.0.1",
            "SUPABASE_LOG_SMTP_PORT": str(mail.port),
            "SUPABASE_LOG_SMTP_USER": "alerts",
            "SUPABASE_LOG_SMTP_PASSWORD": SMTP_PASSWORD,
            "SUPABASE_LOG_SMTP_FROM": "jobs@example.test",
            "SUPABASE_LOG_SMTP_TO": "oncall@example.test",
            "SUPABASE_LOG_SMTP_STARTTLS": "false",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield Peers(slack, telegram, mail, env)


__all__ = [
    "SMTP_PASSWORD",
    "TELEGRAM_TOKEN",
    "UTC",
    "WEBHOOK_AUTH",
    "Peers",
    "add_error_row",
    "add_run",
    "alert_peers",
    "at",
    "cli",
    "point_at",
    "webhook_peer",
]
