"""The README's example job and commands: offline on the local store, then pushed once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import ROOT

BIN = Path(sys.executable).parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    env.update(
        SUPABASE_LOG_LOCAL_DB=str(tmp_path / "local.sqlite3"),
        SUPABASE_LOG_SPOOL=str(tmp_path / "spool"),
        **extra,
    )
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_example_job_runs_offline_is_listed_and_pushed_exactly_once(
    tmp_path: Path, fresh_gateway: Callable[..., Any]
) -> None:
    """examples/vapi_sync.py with no SUPABASE_URL: two runs in the local store, the second continuing the first's window; push uploads them once."""
    env = _env(tmp_path)
    first = _run([sys.executable, str(ROOT / "examples" / "vapi_sync.py")], env, tmp_path)
    assert first.stderr.count("local store") == 1
    _run([sys.executable, str(ROOT / "examples" / "vapi_sync.py")], env, tmp_path)
    runs = json.loads(_run([str(BIN / "supabase-log"), "runs", "--json"], env, tmp_path).stdout)
    assert [(r["script_name"], r["status"]) for r in runs] == [("vapi-sync", "success")] * 2
    newest, oldest = runs
    assert newest["sync_start_date"] == oldest["sync_end_date"]  # incremental: continues the window
    assert newest["records_fetched"] == newest["records_inserted"] + newest["records_failed"]
    per_run = {
        r["id"]: json.loads(
            _run([str(BIN / "supabase-log"), "logs", r["id"], "--json"], env, tmp_path).stdout
        )
        for r in runs
    }
    steps = [row["step"] for row in per_run[newest["id"]]]
    assert steps[:2] == ["START", "FETCH"] and steps[-2:] == ["SAVE", "END"]

    gw, db = fresh_gateway()
    online = _env(tmp_path, SUPABASE_URL=gw.url, SUPABASE_SERVICE_ROLE_KEY=gw.service_key)
    pushed = json.loads(
        _run([str(BIN / "supabase-log"), "push", "--json"], online, tmp_path).stdout
    )
    assert (pushed["runs"], pushed["logs"]) == (2, sum(len(rows) for rows in per_run.values()))
    again = json.loads(_run([str(BIN / "supabase-log"), "push", "--json"], online, tmp_path).stdout)
    assert (again["runs"], again["logs"]) == (0, 0)
    assert db.fetchval("select count(*) from runs where script_name = 'vapi-sync'") == 2
    assert db.fetchval("select count(*) from logs") == pushed["logs"]


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run calls the same script the README gives for running the tests on a fresh machine."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/test.sh" in ci
    assert "bash scripts/example.sh" in readme
