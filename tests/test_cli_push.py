"""No SUPABASE_URL: jobs go to the local store, the views read it, and `push` uploads it (and the spool) exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from stack.fixtures import FreshStack

from supabase_log_handler.cli import main

EXAMPLE_JOB = """
    import logging
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    log = logging.getLogger("export")
    log.info("exporting %d calls", 12, extra={"meta": {"count": 12}, "step": "FETCH"})
    log.warning("2 calls without transcript", extra={"step": "VALIDATE"})
    log.info("export done", extra={"step": "SAVE"})
"""


def local_env(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SUPABASE_", "GITHUB_")) and k not in ("CI", "DEBUG")
    }
    env.update(
        SUPABASE_LOG_LOCAL_DB=str(tmp_path / "local.sqlite3"),
        SUPABASE_LOG_SPOOL=str(tmp_path / "spool"),
        SUPABASE_LOG_FLUSH_INTERVAL_S="0.2",
    )
    env.update(extra or {})
    return env


def supabase_log(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supabase_log_handler", *args],
        env=local_env(tmp_path, env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def use(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str]) -> None:
    monkeypatch.chdir(tmp_path)
    for key, value in local_env(tmp_path, env).items():
        if key.startswith("SUPABASE_"):
            monkeypatch.setenv(key, value)


def test_local_store_run_is_listed_then_pushed_exactly_once(
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without SUPABASE_URL a wrapped job lands in the local store (one stderr line says where), `runs` shows it, `push` uploads it once."""
    (tmp_path / "export_job.py").write_text(textwrap.dedent(EXAMPLE_JOB))
    out = supabase_log(tmp_path, "run", "--", sys.executable, "export_job.py")
    assert out.returncode == 0, out.stderr
    where = [line for line in out.stderr.splitlines() if "local store" in line]
    assert len(where) == 1 and str(tmp_path / "local.sqlite3") in where[0]

    listed = supabase_log(tmp_path, "runs")
    rows = listed.stdout.splitlines()
    assert rows[0].split()[:3] == ["ID", "SCRIPT", "STATUS"] and len(rows) == 2
    run_id, script, status = rows[1].split()[:3]
    assert (script, status) == ("export_job", "success")
    logs = json.loads(supabase_log(tmp_path, "logs", run_id, "--json").stdout)
    assert [(r["level"], r["step"], r["message"]) for r in logs] == [
        ("INFO", "FETCH", "exporting 12 calls"),
        ("WARNING", "VALIDATE", "2 calls without transcript"),
        ("INFO", "SAVE", "export done"),
    ]

    gw, db = fresh_gateway()
    use(
        monkeypatch, tmp_path, {"SUPABASE_URL": gw.url, "SUPABASE_SERVICE_ROLE_KEY": gw.service_key}
    )
    code, out, _ = cli(capsys, "push", "--json")
    assert code == 0
    assert json.loads(out) | {"local_store": "", "spool": ""} == {
        "spool_delivered": 0,
        "spool_pending": 0,
        "dead_letters": 0,
        "dead_letters_resent": 0,
        "dead_letters_busy_files": 0,
        "runs": 1,
        "logs": 3,
        "calls": 0,
        "refused": [],
        "local_store": "",
        "spool": "",
    }
    assert db.fetch("select id::text, script_name, status, duration_ms is not null from runs") == [
        (run_id, "export_job", "success", True)
    ]
    stored = db.fetch(
        "select id::text, level, step, message, meta->'count' from logs order by timestamp, id"
    )
    assert [
        (r["id"], r["level"], r["step"], r["message"], r["meta"].get("count")) for r in logs
    ] == stored

    gw.reset_log()
    code, out, _ = cli(capsys, "push")
    assert code == 0 and out.startswith("pushed 0 run(s), 0 log row(s) and 0 call(s)")
    assert [r for r in gw.requests if r.method != "GET"] == []
    assert (
        db.fetchval("select count(*) from runs") == 1
        and db.fetchval("select count(*) from logs") == 3
    )

    code, out, _ = cli(capsys, "runs", "--json")  # the same view, now reading Supabase
    assert [(r["id"], r["status"]) for r in json.loads(out)] == [(run_id, "success")]


def test_spooled_rows_are_pushed_once(
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A job run while Supabase is down leaves its rows in the spool; `push` delivers them once, a second push sends nothing."""
    gw, db = fresh_gateway()
    env = {
        "SUPABASE_URL": gw.url,
        "SUPABASE_SERVICE_ROLE_KEY": gw.service_key,
        "SUPABASE_LOG_RETRY_DEADLINE_S": "0.3",
        "SUPABASE_LOG_SHUTDOWN_TIMEOUT_S": "2",
    }
    gw.stop()
    (tmp_path / "export_job.py").write_text(textwrap.dedent(EXAMPLE_JOB))
    out = supabase_log(
        tmp_path, "run", "-n", "outage-job", "--", sys.executable, "export_job.py", env=env
    )
    assert out.returncode == 0, out.stderr
    gw.start()
    assert db.fetchval("select count(*) from runs") == 0

    use(monkeypatch, tmp_path, env)
    code, out, _ = cli(capsys, "push", "--json")
    result = json.loads(out)
    assert code == 0 and result["spool_pending"] == 0 and result["spool_delivered"] >= 5
    assert db.fetch("select script_name, status from runs") == [("outage-job", "success")]
    assert [r[0] for r in db.fetch("select message from logs order by timestamp, id")] == [
        "exporting 12 calls",
        "2 calls without transcript",
        "export done",
    ]
    gw.reset_log()
    code, out, _ = cli(capsys, "push", "--json")
    assert code == 0 and json.loads(out)["spool_delivered"] == 0
    assert [r for r in gw.requests if r.method != "GET"] == []
    assert db.fetchval("select count(*) from logs") == 3


def test_push_without_supabase_url_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`push` with no SUPABASE_URL exits 2 and names the variables to set."""
    use(monkeypatch, tmp_path, {})
    code, _, err = cli(capsys, "push")
    assert code == 2 and "set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY" in err
