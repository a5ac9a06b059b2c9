"""Configuration: the fileConfig and dictConfig examples, keyword > environment > .env, and the documented table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import last_json_line, run_script
from stack.fixtures import Db
from stack.gateway import Gateway

from supabase_log_handler.config import FIELDS, load_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def rows(db: Db, run_id: str) -> list[tuple[Any, ...]]:
    return db.fetch(
        "select level, step, message, meta from logs where run_id = %s order by timestamp, id",
        (run_id,),
    )


INI_JOB = f"""
    import json, logging, logging.config
    logging.config.fileConfig({str(EXAMPLES / "logging.ini")!r}, disable_existing_loggers=False)
    log = logging.getLogger("ini.job")
    log.debug("debug detail")
    log.info("ini info", extra={{"meta": {{"n": 1}}}})
    log.warning("ini warning")
    handler = next(h for h in logging.getLogger().handlers if type(h).__name__ == "SupabaseHandler")
    from supabase_log_handler import context
    print(json.dumps({{"run_id": context.current_run().id, "flushed": handler.flush(10)}}))
"""


def test_fileconfig_example(db: Db, supabase_env: dict[str, str]) -> None:
    """examples/logging.ini: kwargs reach the handler, INFO and up are stored, DEBUG is not; SUPABASE_LOG_LEVEL still narrows it."""
    out = run_script(INI_JOB, supabase_env)
    info = last_json_line(out.stdout)
    assert info["flushed"] is True
    assert "INFO ini.job: ini info" in out.stderr  # the example's console handler
    assert db.fetch(
        "select script_name, triggered_by from runs where id = %s", (info["run_id"],)
    ) == [("ini-example", "cron")]
    got = rows(db, info["run_id"])
    assert [(r[0], r[2]) for r in got] == [("INFO", "ini info"), ("WARNING", "ini warning")]
    assert got[0][3]["n"] == 1
    info = last_json_line(
        run_script(INI_JOB, {**supabase_env, "SUPABASE_LOG_LEVEL": "WARNING"}).stdout
    )
    assert [(r[0], r[2]) for r in rows(db, info["run_id"])] == [("WARNING", "ini warning")]


def _example(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "dictconfig_example.py")],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_dictconfig_example(db: Db, supabase_env: dict[str, str]) -> None:
    """examples/dictconfig_example.py: one run with steps, metrics and extras; DEBUG rows only when SUPABASE_LOG_LEVEL=DEBUG."""
    out = _example(supabase_env)
    run_id = out.stdout.split()[-1]
    status, fetched, mode, script = db.fetch(
        "select status, records_fetched, sync_mode, script_name from runs where id = %s", (run_id,)
    )[0]
    assert (status, fetched, mode, script) == ("success", 3, "incremental", "dictconfig-example")
    got = rows(db, run_id)
    assert [(r[0], r[1], r[2]) for r in got] == [
        ("INFO", "FETCH", "fetched 3 calls"),
        ("WARNING", "SAVE", "1 call skipped"),
    ]
    assert got[0][3]["count"] == 3 and got[1][3]["reason"] == "duplicate"
    assert "INFO example: fetched 3 calls" in out.stderr
    run_id = _example({**supabase_env, "SUPABASE_LOG_LEVEL": "DEBUG"}).stdout.split()[-1]
    assert next((r[0], r[2]) for r in rows(db, run_id)) == ("DEBUG", "request details")


def test_keywords_beat_environment_beat_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: Db, gateway: Gateway
) -> None:
    """Settings come from keywords, then environment variables, then .env; a job configured only by .env writes to Supabase."""
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        f"SUPABASE_URL={gateway.url}\nSUPABASE_SERVICE_ROLE_KEY={gateway.service_key}\n"
        "SUPABASE_LOG_SCRIPT_NAME=from-dotenv\nSUPABASE_LOG_TRIGGERED_BY=from-dotenv\nSUPABASE_LOG_MAX_BATCH_ROWS=50\n"
    )
    monkeypatch.setenv("SUPABASE_LOG_TRIGGERED_BY", "from-env")
    monkeypatch.setenv("SUPABASE_LOG_MAX_BATCH_ROWS", "60")
    s = load_settings({"max_batch_rows": 70}, env_file=dotenv)
    assert (s.url, s.script_name, s.triggered_by, s.max_batch_rows) == (
        gateway.url,
        "from-dotenv",
        "from-env",
        70,
    )
    monkeypatch.chdir(tmp_path)
    s = load_settings()  # the nearest .env by default
    assert (s.script_name, s.max_batch_rows, s.uses_supabase) == ("from-dotenv", 60, True)

    out = run_script(
        """
        import json, logging
        from supabase_log_handler import install, context
        handler = install()
        logging.getLogger("dotenv.job").warning("configured by .env only")
        print(json.dumps({"run_id": context.current_run().id, "flushed": handler.flush(10)}))
        """,
        {"SUPABASE_LOG_TRIGGERED_BY": "from-env"},
        cwd=tmp_path,
    )
    info = last_json_line(out.stdout)
    assert info["flushed"] is True
    assert db.fetch(
        "select script_name, triggered_by from runs where id = %s", (info["run_id"],)
    ) == [("from-dotenv", "from-env")]
    assert [r[2] for r in rows(db, info["run_id"])] == ["configured by .env only"]


def test_every_setting_is_in_the_documented_table() -> None:
    """docs/configuration.md's table has one row per setting: keyword, environment variable and default."""
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for name, field in FIELDS.items():
        row = next(
            (line for line in doc.splitlines() if line.startswith(f"| `{name}` | `{field.env}` |")),
            None,
        )
        assert row is not None, f"{name} / {field.env} missing from docs/configuration.md"
        d = field.default
        default = (
            "(none)"
            if d is None
            else "(empty)"
            if d == ""
            else f"`{str(d).lower() if isinstance(d, bool) else d}`"
        )
        assert f"| {default} |" in row, (name, row)
    for extra in (
        "SUPABASE_LOG_LEVEL",
        "DEBUG",
        "SUPABASE_DB_URL",
        "SUPABASE_ANON_KEY",
        "SUPABASE_LOG_RUN_ID",
    ):
        assert f"`{extra}`" in doc, extra
