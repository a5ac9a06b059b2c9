"""Real servers stopped the way Docker and systemd stop them: their last lines are kept.

A uvicorn app (Starlette, started with ``uvicorn app:app --log-config log.json``)
and a gunicorn pre-fork server (two sync workers, ``logconfig_dict`` in its
config file) log through ``SupabaseHandler`` named in their logging
configuration, beside a second handler (``scripts/recorder.py``) that writes
every record to a file: the test's account of what was really logged. Each is
stopped by SIGTERM, and separately by SIGINT. Then the run must be ``success``,
the shutdown lines and the request's line stored, and the rows in PostgreSQL
exactly the recorded records, each once. Where a process ends by itself, its
ledger (``stats()`` after the exit drain, written by ``scripts/statsreport.py``)
must add up with nothing left in memory and nothing dropped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import recorder
from conftest import ROOT, SCRIPTS, assert_identity, wait_until
from stack.fixtures import Db
from stack.gateway import Gateway

from supabase_log_handler.spool_files import pending_entries

BIN = Path(sys.executable).parent
STOP_TIMEOUT_S = 60
DB_LEVEL = {"CRITICAL": "ERROR"}  # the logs table knows four levels

STARLETTE_APP = '''
"""A Starlette app: one route that logs, and a lifespan that logs at both ends."""
import contextlib
import logging

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

log = logging.getLogger("app")


async def work(request):
    log.info("handled request %s", request.query_params["n"])
    return PlainTextResponse("ok")


@contextlib.asynccontextmanager
async def lifespan(app):
    log.info("app startup hook")
    yield
    log.info("app shutdown hook")


app = Starlette(routes=[Route("/work", work)], lifespan=lifespan)
'''

WSGI_APP = '''
"""A WSGI app for gunicorn's sync workers: one route that logs."""
import logging

log = logging.getLogger("app")


def app(environ, start_response):
    log.info("handled request %s", environ.get("QUERY_STRING", ""))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''


def logging_config(script_name: str, records: Path, loggers: list[str]) -> dict[str, Any]:
    """A dictConfig naming the handler, with the recorder beside it on the same loggers."""
    both = ["supabase", "recorder"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "supabase": {"class": "supabase_log_handler.SupabaseHandler",
                         "script_name": script_name, "flush_interval_s": 0.2},
            "recorder": {"class": "recorder.JsonLinesHandler", "filename": str(records)},
        },
        "root": {"level": "INFO", "handlers": both},
        "loggers": {name: {"level": "INFO", "propagate": True} for name in loggers},
    }  # fmt: skip


@dataclass
class Server:
    """One server process of a test, and where it leaves its evidence."""

    proc: subprocess.Popen[str]
    workdir: Path
    script_name: str
    socket: Path
    records: Path
    stats_dir: Path
    spool: Path
    env: dict[str, str]
    output: list[str] = field(default_factory=list)

    def lines(self) -> list[dict[str, Any]]:
        return recorder.read(str(self.records))

    def messages(self) -> list[str]:
        return [str(r["message"]) for r in self.lines()]

    def get(self, path: str) -> str:
        transport = httpx.HTTPTransport(uds=str(self.socket))
        with httpx.Client(transport=transport, timeout=30) as client:
            response = client.get("http://server" + path)
            response.raise_for_status()
            return response.text

    def stop(self, signum: int) -> tuple[int, str]:
        self.proc.send_signal(signum)
        out, err = self.proc.communicate(timeout=STOP_TIMEOUT_S)
        return self.proc.returncode, out + err


def _env(gateway: Gateway, tmp_path: Path, workdir: Path, stats_dir: Path) -> dict[str, str]:
    site = tmp_path / "site"  # a sitecustomize that registers the stats report before anything
    site.mkdir()
    (site / "sitecustomize.py").write_text("import statsreport\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    env.update(
        SUPABASE_URL=gateway.url,
        SUPABASE_SERVICE_ROLE_KEY=gateway.service_key,
        SUPABASE_LOG_SPOOL=str(tmp_path / "spool"),
        STATS_REPORT_DIR=str(stats_dir),
        XDG_RUNTIME_DIR=str(tmp_path),  # gunicorn's control socket, kept out of $HOME
        PYTHONPATH=os.pathsep.join([str(site), str(SCRIPTS), str(workdir), str(ROOT)]),
    )
    return env


def _start(kind: str, gateway: Gateway, tmp_path: Path) -> Server:
    workdir = tmp_path / "srv"
    stats_dir = tmp_path / "stats"
    workdir.mkdir()
    stats_dir.mkdir()
    script_name = f"{kind}-{uuid.uuid4().hex[:10]}"
    records = tmp_path / "records.jsonl"
    sock = tmp_path / "server.sock"
    env = _env(gateway, tmp_path, workdir, stats_dir)
    if kind == "uvicorn":
        (workdir / "app.py").write_text(textwrap.dedent(STARLETTE_APP))
        config = logging_config(
            script_name, records, ["uvicorn", "uvicorn.error", "uvicorn.access", "app"]
        )
        (workdir / "log.json").write_text(json.dumps(config))
        argv = [str(BIN / "uvicorn"), "app:app", "--uds", str(sock), "--log-config",
                str(workdir / "log.json")]  # fmt: skip
    else:
        (workdir / "wsgiapp.py").write_text(textwrap.dedent(WSGI_APP))
        config = logging_config(script_name, records, ["gunicorn.error", "gunicorn.access", "app"])
        (workdir / "gunicorn.conf.py").write_text(
            f"bind = {'unix:' + str(sock)!r}\n"
            "workers = 2\n"
            "worker_class = 'sync'\n"
            "graceful_timeout = 10\n"
            f"logconfig_dict = {config!r}\n"
        )
        argv = [str(BIN / "gunicorn"), "-c", str(workdir / "gunicorn.conf.py"), "wsgiapp:app"]
    proc = subprocess.Popen(
        argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return Server(proc, workdir, script_name, sock, records, stats_dir, tmp_path / "spool", env)


@pytest.fixture
def servers(gateway: Gateway, tmp_path: Path) -> Iterator[Any]:
    """Factory: ``servers("uvicorn" | "gunicorn")`` starts one; any still running is killed at the end."""
    started: list[Server] = []

    def start(kind: str) -> Server:
        server = _start(kind, gateway, tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)


def _ready(server: Server, booted: str, count: int) -> None:
    def up() -> bool:
        if server.proc.poll() is not None:
            out, err = server.proc.communicate()
            raise AssertionError(
                f"the server ended early ({server.proc.returncode}):\n{out}\n{err}"
            )
        return sum(booted in m for m in server.messages()) >= count and server.socket.exists()

    wait_until(up, 60, f"{count} x {booted!r}")


def _check_stored(db: Db, server: Server, output: str) -> None:
    """After a replay of anything spooled: one run, ``success``, and in PostgreSQL exactly
    the records the recorder saw, each once (process, logger, level, message)."""
    push = subprocess.run(
        [sys.executable, "-m", "supabase_log_handler", "push", "--json"],
        env=server.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert push.returncode == 0, push.stdout + push.stderr
    assert sum(pending_entries(server.spool).values()) == 0
    runs = db.fetch(
        "select id::text, status, error_message from runs where script_name = %s",
        (server.script_name,),
    )
    assert [(r[1], r[2]) for r in runs] == [("success", None)], (runs, output[-3000:])
    rows = db.fetch(
        "select (meta->'log'->>'process')::int, meta->'log'->>'logger', level, message"
        " from logs where run_id = %s",
        (runs[0][0],),
    )
    stored = Counter(tuple(r) for r in rows)
    recorded = Counter(
        (r["pid"], r["logger"], DB_LEVEL.get(str(r["level"]), r["level"]), r["message"])
        for r in server.lines()
    )
    assert stored == recorded, output[-3000:]
    assert max(stored.values()) == 1


def _reports(server: Server) -> dict[int, list[dict[str, Any]]]:
    out = {}
    for path in server.stats_dir.glob("*.json"):
        report = json.loads(path.read_text())
        out[int(report["pid"])] = report["stats"]
    return out


def _check_ledgers(reports: dict[int, list[dict[str, Any]]], pids: set[int]) -> None:
    assert set(reports) == pids, (sorted(reports), sorted(pids))
    for stats_list in reports.values():
        assert len(stats_list) == 1, stats_list
        stats = stats_list[0]
        assert_identity(stats)
        assert stats["in_memory"] == 0, stats
        assert stats["dropped_total"] == 0, stats


@pytest.mark.process
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_uvicorn_stopped_by_a_signal_keeps_its_shutdown_lines_and_ends_in_success(
    servers: Any, db: Db, signum: int
) -> None:
    """uvicorn --log-config stopped by SIGTERM or SIGINT: shutdown lines and the request's line stored once, run success."""
    server = servers("uvicorn")
    _ready(server, "Application startup complete.", 1)
    assert server.get("/work?n=1") == "ok"
    code, output = server.stop(signum)
    # uvicorn hands a SIGTERM back to the process after a clean shutdown (so it ends by
    # it, as it would without the handler); a SIGINT ends in a normal exit.
    assert code == (-signal.SIGTERM if signum == signal.SIGTERM else 0), output
    messages = server.messages()
    for line in ("Shutting down", "Waiting for application shutdown.", "app shutdown hook",
                 "Application shutdown complete.", f"Finished server process [{server.proc.pid}]",
                 "handled request 1"):  # fmt: skip
        assert line in messages, (line, messages)
    _check_stored(db, server, output)
    if signum == signal.SIGINT:  # it ended by itself: its own ledger says nothing is lost
        _check_ledgers(_reports(server), {server.proc.pid})


@pytest.mark.process
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_gunicorn_prefork_stopped_by_a_signal_keeps_master_and_worker_lines(
    servers: Any, db: Db, signum: int
) -> None:
    """gunicorn (2 sync workers, logconfig_dict) stopped by SIGTERM or SIGINT: master and worker lines stored once, run success."""
    server = servers("gunicorn")
    _ready(server, "Booting worker with pid", 2)
    assert server.get("/work?n=1") == "ok"
    wait_until(lambda: "handled request n=1" in server.messages(), 10, "the request's line")
    code, output = server.stop(signum)
    assert code == 0, output
    lines = server.lines()
    master = server.proc.pid
    workers = {int(r["pid"]) for r in lines} - {master}
    assert len(workers) == 2, lines
    messages = [str(r["message"]) for r in lines]
    handled = "Handling signal: term" if signum == signal.SIGTERM else "Handling signal: int"
    for line in (handled, "Shutting down: Master", "handled request n=1"):
        assert line in messages, (line, messages)
    for pid in workers:
        assert f"Worker exiting (pid: {pid})" in messages, messages
    _check_stored(db, server, output)
    _check_ledgers(_reports(server), {master, *workers})
