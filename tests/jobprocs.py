"""Job processes for the spool tests: start them, read their JSON lines, replay with push.

``Job`` runs ``scripts/many_job.py``; ``Proc`` is any child whose stdout is read
as it comes (one JSON object a line) with stdin kept open for instructions;
``push`` runs ``supabase-log push --json``; ``job_env`` points a child at a
gateway and a spool directory, ``fresh_spool`` makes one for a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conftest import ROOT, SCRIPTS
from stack.gateway import Gateway


def fresh_spool(gateway: Gateway, where: Path, prefix: str) -> tuple[Path, str, dict[str, str]]:
    """A spool directory under ``where``, a tag for this test's rows, and jobs' environment."""
    spool = where / "spool"
    return spool, f"{prefix}{uuid.uuid4().hex[:10]}", job_env(gateway, spool)


def job_env(gateway: Gateway, spool: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    env.update(
        SUPABASE_URL=gateway.url,
        SUPABASE_SERVICE_ROLE_KEY=gateway.service_key,
        SUPABASE_LOG_SPOOL=str(spool),
        SUPABASE_LOG_LOCAL_DB=str(spool.parent / "local.sqlite3"),
        PYTHONPATH=os.pathsep.join([str(ROOT), str(SCRIPTS)]),
        **extra,
    )
    return env


class Proc:
    """A child process whose stdout is read as it comes (JSON lines), stdin kept open."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self.text = ""  # everything it printed
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.text += line
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                self.lines.append(value)

    def said(self, key: str) -> dict[str, Any] | None:
        return next((r for r in list(self.lines) if key in r), None)

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout_s: float = 180) -> int:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()
        code = self.proc.wait(timeout_s)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Job(Proc):
    """One ``many_job.py`` process; ``flags``: ``--pause`` or ``--hold`` (see the script)."""

    def __init__(self, env: dict[str, str], tag: str, index: int, rows: int, *flags: str) -> None:
        argv = [sys.executable, str(SCRIPTS / "many_job.py"), tag, str(index), str(rows), *flags]
        super().__init__(argv, env)


def push(env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    """``supabase-log push --json`` with the given environment: (exit code, counts, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "supabase_log_handler", "push", "--json"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    try:
        counts = json.loads(proc.stdout)
    except ValueError:
        counts = {}
    return proc.returncode, counts, proc.stdout + proc.stderr


def reaped() -> Iterator[list[Proc]]:
    """For a fixture: the processes a test starts; any still running at the end is killed."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill()
