"""Run details: adapter steps, install() levels, triggered_by, failed construction, last run."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT
from stack.fixtures import Db
from stack.gateway import Gateway

from supabase_log_handler import (
    SupabaseHandler,
    get_logs,
    get_run,
    install,
    last_successful_run,
    start_run,
)


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The local store and spool in tmp_path, through the environment."""
    path = tmp_path / "local.sqlite3"
    monkeypatch.setenv("SUPABASE_LOG_LOCAL_DB", str(path))
    monkeypatch.setenv("SUPABASE_LOG_SPOOL", str(tmp_path / "spool"))
    monkeypatch.setenv("SUPABASE_LOG_SIGNALS", "false")
    monkeypatch.setenv("SUPABASE_LOG_CAPTURE_UNCAUGHT", "false")
    return path


def test_adapter_without_a_step_takes_the_enclosing_step(local: Path) -> None:
    """run.logger() records inside run.step("FETCH") get step FETCH; an explicit adapter step wins."""
    handler = install(console=False)
    with start_run("adapter-steps") as run:
        log = run.logger("adapter")
        with run.step("FETCH"):
            log.info("inside fetch")
            log.step("SAVE").info("explicit save")
        log.info("outside any step")
    assert handler.flush(10)
    rows = get_logs(run.id)
    assert [(r["step"], r["message"]) for r in rows] == [
        ("FETCH", "inside fetch"),
        ("SAVE", "explicit save"),
        ("LOG", "outside any step"),
    ]


def test_install_lets_debug_rows_through_when_debug_is_set(
    local: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With DEBUG=true, install() lowers the root logger to DEBUG so DEBUG rows are stored."""
    monkeypatch.setenv("DEBUG", "true")
    handler = install(console=False)
    assert logging.getLogger().level == logging.DEBUG
    with start_run("debug-rows") as run:
        logging.getLogger("job").debug("a debug detail")
    assert handler.flush(10)
    assert [r["level"] for r in get_logs(run.id)] == ["DEBUG"]


def test_start_run_takes_triggered_by_from_the_handler_settings(local: Path) -> None:
    """A handler configured with triggered_by="cron" gives start_run's runs that value."""
    handler = SupabaseHandler(triggered_by="cron")
    logging.getLogger().addHandler(handler)
    with start_run("nightly") as run:
        pass
    assert handler.flush(10)
    row = get_run(run.id)
    assert row is not None and row["triggered_by"] == "cron"


def test_failed_construction_leaves_no_traceback_at_exit(tmp_path: Path) -> None:
    """In strict mode a handler whose settings are refused (anon key) raises once and prints nothing at exit."""
    anon = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c2lnbmF0dXJl"
    source = f"""
import logging.config
try:
    logging.config.dictConfig({{"version": 1, "handlers": {{"db": {{"class": "supabase_log_handler.SupabaseHandler",
        "url": "https://example.supabase.co", "key": "{anon}", "strict": True}}}}, "root": {{"handlers": ["db"]}}}})
except ValueError as exc:
    print("refused:", exc.__cause__)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", source],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0
    assert "refused:" in proc.stdout and "anon key" in proc.stdout
    assert anon not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr


def test_last_successful_run_ignores_rows_without_finished_at(
    db: Db, gateway: Gateway, make_handler: Callable[..., SupabaseHandler]
) -> None:
    """On PostgreSQL (NULLs first when descending) a success row with no finished_at never hides the last run."""
    handler = make_handler()
    logging.getLogger().addHandler(handler)
    script = f"incremental-{uuid.uuid4().hex[:8]}"
    with start_run(script) as run:
        run.set(sync_end_date="2026-01-02T00:00:00+00:00")
    assert handler.flush(10)
    db.execute("insert into runs (script_name, status) values (%s, 'success')", (script,))
    found = last_successful_run(script, url=gateway.url, key=gateway.service_key)
    assert found is not None and found["id"] == run.id
