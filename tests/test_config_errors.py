"""A configuration mistake never crashes the job: one diagnostic, a safe choice, rows kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, last_json_line, run_script
from stack.fixtures import Db
from stack.gateway import Gateway

from supabase_log_handler import ConfigurationError, SupabaseHandler
from supabase_log_handler.spool_files import pending_entries

pytestmark = pytest.mark.process  # forks, signals or exits: also run on 3.10 and 3.13

JOB = """
import json, logging, sys
import supabase_log_handler
from supabase_log_handler import context

supabase_log_handler.install(script_name="anon-job")
log = logging.getLogger("job")
for i in range(25):
    log.info("kept %d", i)
print(json.dumps({"run_id": context.current_run().id}), flush=True)
sys.exit(4)
"""


def test_install_with_the_anon_key_finishes_the_job_and_keeps_its_rows(
    gateway: Gateway, db: Db, tmp_path: Path
) -> None:
    """install() with the anon key: the job ends with its own exit code after one diagnostic;
    its rows wait in the spool and are delivered once a process has the right key."""
    spool = tmp_path / "spool"
    env = {"SUPABASE_URL": gateway.url, "SUPABASE_SERVICE_ROLE_KEY": gateway.anon_key,
           "SUPABASE_LOG_SPOOL": str(spool), "SUPABASE_LOG_SHUTDOWN_TIMEOUT_S": "2"}  # fmt: skip
    out = run_script(JOB, env, check=False)
    assert out.returncode == 4, out.stderr
    said = [line for line in out.stderr.splitlines() if line.startswith("supabase-log-handler:")]
    assert len(said) == 1 and "is the anon key" in said[0] and "service role" in said[0], said
    assert gateway.anon_key not in out.stderr
    run_id = last_json_line(out.stdout)["run_id"]
    assert db.fetchval("select count(*) from logs where run_id = %s", (run_id,)) == 0
    assert pending_entries(spool)["logs"] == 25 + 1  # and the ERROR row "exited with code 4"

    fixed = {**env, "SUPABASE_SERVICE_ROLE_KEY": gateway.service_key}
    push = subprocess.run([sys.executable, "-m", "supabase_log_handler", "push"], env=_env(fixed),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert push.returncode == 0, push.stderr
    assert db.fetchval(
        "select count(*) from logs where run_id = %s and message like 'kept %%'", (run_id,)
    ) == 25
    assert db.fetchval("select status from runs where id = %s", (run_id,)) == "error"


def test_a_wrong_value_in_dictconfig_gives_way_to_its_default(tmp_path: Path) -> None:
    """dictConfig with flush_interval_s="soon": the job runs and logs, one line names the setting."""
    out = run_script(
        """
        import logging.config
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
            "handlers": {"db": {"class": "supabase_log_handler.SupabaseHandler", "flush_interval_s": "soon",
                                "script_name": "typo", "colour": "blue"}},
            "root": {"level": "INFO", "handlers": ["db"]}})
        logging.getLogger("job").info("still logged")
        print(logging.getLogger().handlers[0].settings.flush_interval_s)
        """,
        {"SUPABASE_LOG_LOCAL_DB": str(tmp_path / "l.db"), "SUPABASE_LOG_SPOOL": str(tmp_path / "s")},
    )
    assert out.stdout.strip().splitlines()[-1] == "1.0"
    said = [line for line in out.stderr.splitlines() if line.startswith("supabase-log-handler:")]
    assert any("flush_interval_s (SUPABASE_LOG_FLUSH_INTERVAL_S)" in s and "default" in s for s in said)
    assert any("unknown setting(s): colour" in s for s in said)
    import sqlite3

    rows = sqlite3.connect(tmp_path / "l.db").execute("select message from logs").fetchall()
    assert rows == [("still logged",)]


def test_strict_mode_raises_for_ci_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """With strict=True (or SUPABASE_LOG_STRICT=true) the constructor raises ConfigurationError."""
    with pytest.raises(ConfigurationError, match="anon key"):
        SupabaseHandler(url="https://x.supabase.co", key=_anon_jwt(), strict=True)
    monkeypatch.setenv("SUPABASE_LOG_STRICT", "true")
    with pytest.raises(ConfigurationError, match="must look like"):
        SupabaseHandler(url="not a url", key="sb_secret_abcdefgh12345678")


def test_a_malformed_url_writes_to_the_local_store(tmp_path: Path) -> None:
    """SUPABASE_URL that is not a URL: rows go to the local store, and the key is never echoed."""
    handler = SupabaseHandler(url="sb_secret_pasted_here_123456", key="sb_secret_pasted_here_123456",
                              local_path=str(tmp_path / "l.db"), spool_path=str(tmp_path / "s"),
                              install_signal_handlers=False, capture_uncaught=False)  # fmt: skip
    try:
        assert handler.settings.url is None and not handler.settings.uses_supabase
        assert "sb_secret_pasted" not in (handler.diagnostics.last_error or "")
    finally:
        handler.close(1)


def test_sink_postgres_without_a_usable_db_url_falls_back_without_echoing_it(tmp_path: Path) -> None:
    """sink=postgres with no db_url, or one that is not a connection string: the next destination
    (the local store here), one diagnostic naming the setting, the password never shown."""
    for db_url in (None, "pw-s3cret-not-a-url"):
        handler = SupabaseHandler(sink="postgres", db_url=db_url, local_path=str(tmp_path / "l.db"),
                                  spool_path=str(tmp_path / "s"), install_signal_handlers=False,
                                  capture_uncaught=False)  # fmt: skip
        try:
            assert handler.settings.sink == "auto" and not handler.settings.uses_postgres
            said = handler.diagnostics.last_error or ""
            assert "SUPABASE_DB_URL" in said and "pw-s3cret" not in said, said
        finally:
            handler.close(1)
    with pytest.raises(ConfigurationError, match="SUPABASE_DB_URL"):
        SupabaseHandler(sink="postgres", strict=True)


def _anon_jwt() -> str:
    return "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c2lnbmF0dXJl"


def _env(extra: dict[str, str]) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **extra}
