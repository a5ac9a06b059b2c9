"""Helpers for the dashboard tests: known data, the ``supabase-log ui`` process, the browser.

``seed(sink)`` writes the same runs, log rows and calls through a sink of the package
(``SupabaseSink`` to the gateway, ``LocalSink`` to a SQLite file) and returns their ids.
``UiProcess`` runs the real command in a child process and reads its address from
the line it prints. ``launch_chromium`` starts Debian's Chromium (installed by
scripts/test.sh) through Playwright; no browser is ever downloaded.
"""

from __future__ import annotations

import datetime as dt
import os
import queue
import re
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
UTC = dt.timezone.utc
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
XSS_MESSAGE = (
    '<script>window.__xss = 1</script><img src="x" onerror="window.__xss = 2"><b>bold</b> & done'
)
START_TIMEOUT_S = 30.0


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)


def iso(when: dt.datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass
class Known:
    """Ids and expectations of the seeded data."""

    sync: str  # script with four runs: error (2 days ago), success (yesterday), success, running
    report: str  # script with two successful runs triggered by github-actions
    error_run: str
    running_run: str
    ok_run: str
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # every seeded run row, by id
    error_steps: list[str] = field(default_factory=list)
    error_messages: list[str] = field(default_factory=list)


def _run(
    script: str,
    status: str,
    started: dt.datetime,
    *,
    seconds: float | None,
    trigger: str = "cron",
    error: str | None = None,
    fetched: int | None = None,
    cost: float | None = None,
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "script_name": script,
        "status": status,
        "triggered_by": trigger,
        "started_at": iso(started),
        "finished_at": iso(started + dt.timedelta(seconds=seconds))
        if seconds is not None
        else None,
        "duration_ms": int(seconds * 1000) if seconds is not None else None,
        "error_message": error,
        "records_fetched": fetched,
        "records_inserted": fetched - 1 if fetched else None,
        "api_cost": cost,
        "heartbeat_at": iso(started) if status == "running" else None,
        "metadata": {"heartbeat_interval_s": 30} if status == "running" else {"source": "ui-test"},
    }


def log_row(
    run_id: str, at: dt.datetime, level: str, step: str, message: str, meta: Any = None
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "run_id": run_id,
        "timestamp": iso(at),
        "level": level,
        "step": step,
        "message": message,
        "meta": meta or {},
    }


def seed(sink: Any, now: dt.datetime) -> Known:
    """Write the known data through ``sink`` (a DictRows sink of the package)."""
    tag = uuid.uuid4().hex[:6]
    sync, report = f"ui-sync-{tag}", f"ui-report-{tag}"
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    two_days = midnight - dt.timedelta(days=2) + dt.timedelta(hours=1)
    yesterday = midnight - dt.timedelta(days=1) + dt.timedelta(hours=1)
    today = midnight + dt.timedelta(seconds=1)
    runs = [
        _run(
            sync,
            "error",
            two_days,
            seconds=42,
            fetched=10,
            cost=0.25,
            error="ConnectionError: upstream refused <b>the</b> call\nretried 3 times",
        ),
        _run(sync, "success", yesterday, seconds=60, fetched=100, cost=0.5),
        _run(sync, "success", today, seconds=30, fetched=50, cost=0.125),
        _run(sync, "running", now - dt.timedelta(minutes=5), seconds=None),
        _run(
            report,
            "success",
            two_days + dt.timedelta(minutes=5),
            seconds=5,
            trigger="github-actions",
        ),
        _run(
            report,
            "success",
            yesterday + dt.timedelta(minutes=5),
            seconds=6,
            trigger="github-actions",
        ),
    ]
    for run in runs:
        sink.upsert_run("runs", run, final=True)
    error_run, running_run = runs[0], runs[3]
    t = dt.datetime.fromisoformat(error_run["started_at"])
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/srv/jobs/sync.py", line 42, in save\n'
        "    client.post(rows)\n"
        "ConnectionError: upstream refused the call"
    )
    error_logs = [
        log_row(error_run["id"], t + dt.timedelta(seconds=1), "INFO", "START", "starting sync"),
        log_row(
            error_run["id"],
            t + dt.timedelta(seconds=2),
            "INFO",
            "FETCH",
            "fetched page 1",
            {"page": 1, "count": 5},
        ),
        log_row(error_run["id"], t + dt.timedelta(seconds=12), "WARNING", "FETCH", "slow page 2"),
        log_row(error_run["id"], t + dt.timedelta(seconds=20), "INFO", "SAVE", XSS_MESSAGE),
        log_row(
            error_run["id"],
            t + dt.timedelta(seconds=40),
            "ERROR",
            "SAVE",
            "save failed",
            {
                "exception": {
                    "type": "ConnectionError",
                    "message": "upstream refused the call",
                    "traceback": traceback,
                }
            },
        ),
    ]
    ok_run = runs[2]
    ok_t = dt.datetime.fromisoformat(ok_run["started_at"])
    other_logs = [
        log_row(ok_run["id"], ok_t + dt.timedelta(seconds=1), "INFO", "START", "starting sync"),
        log_row(running_run["id"], now - dt.timedelta(minutes=4), "INFO", "START", "starting"),
        log_row(running_run["id"], now - dt.timedelta(minutes=3), "INFO", "FETCH", "fetching"),
    ]
    sink.insert_rows("logs", error_logs + other_logs)
    calls = [
        _call(
            "resend",
            "send_email",
            "failed",
            now - dt.timedelta(hours=2),
            89,
            error_run["id"],
            error_code="INVALID_EMAIL",
        ),
        _call("amocrm", "sync_lead", "success", now - dt.timedelta(hours=2), 200, error_run["id"]),
        _call("amocrm", "sync_lead", "success", now - dt.timedelta(hours=1), 300, None),
    ]
    sink.insert_rows("integration_logs", calls)
    return Known(
        sync=sync,
        report=report,
        error_run=error_run["id"],
        running_run=running_run["id"],
        ok_run=ok_run["id"],
        runs={r["id"]: r for r in runs},
        error_steps=["START", "FETCH", "SAVE"],
        error_messages=[r["message"] for r in error_logs],
    )


def _call(
    service: str,
    action: str,
    status: str,
    at: dt.datetime,
    ms: int,
    run_id: str | None,
    error_code: str | None = None,
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "service_name": service,
        "action": action,
        "status": status,
        "created_at": iso(at),
        "duration_ms": ms,
        "run_id": run_id,
        "error_code": error_code,
        "error_message": "Invalid email address" if error_code else None,
        "request_payload": {"to": "user@example.com", "html": "<i>hi</i>"},
        "response_payload": None,
        "retry_count": 0,
    }


class UiProcess:
    """``supabase-log ui`` in a child process; ``url`` once it listens; ``stop()`` ends it."""

    def __init__(self, env: dict[str, str], *args: str, cwd: Path) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
        full_env.update(env)
        full_env["PYTHONPATH"] = str(ROOT)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supabase_log_handler", "ui", "--port", "0", *args],
            env=full_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait_for_address()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line)
        self.lines.put("")

    def _wait_for_address(self) -> str:
        while True:
            try:
                line = self.lines.get(timeout=START_TIMEOUT_S)
            except queue.Empty:
                self.stop()
                raise AssertionError("supabase-log ui did not start in time") from None
            if not line:
                raise AssertionError("supabase-log ui exited:\n" + "".join(self.stderr))
            found = re.search(r"dashboard at (http://\S+?)/[;\s]", line)
            if found:
                return found.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
