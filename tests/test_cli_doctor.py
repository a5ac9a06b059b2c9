"""`supabase-log doctor` finds what keeps rows from landing, names one fix, and `migrate --repair` applies it."""

from __future__ import annotations

import http.server
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from stack.fixtures import Db, FreshStack
from stack.gateway import Gateway
from test_cli_migrate import cli, point_at

from supabase_log_handler import SupabaseHandler, start_run
from supabase_log_handler.cli.checks import FIX_MIGRATE, FIX_REPAIR, FIX_SERVICE_KEY, FIX_URL


def fixes(out: str) -> list[str]:
    """Every fix line doctor printed, in order."""
    return [
        line.split("fix: ", 1)[1] for line in out.splitlines() if line.strip().startswith("fix: ")
    ]


def failed(out: str) -> set[str]:
    """Names of the failed checks in doctor's table (columns are two or more spaces apart)."""
    return {
        re.split(r"\s{2,}", line.strip())[1]
        for line in out.splitlines()
        if line.startswith("  FAIL  ")
    }


@pytest.fixture
def recorded(
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> FreshStack:
    """A fresh database whose migrations `supabase-log migrate` applied and recorded."""
    gw, db = fresh_gateway(migrations=False)
    point_at(monkeypatch, tmp_path, gw, db)
    code, out, _ = cli(capsys, "migrate")
    assert code == 0, out
    return FreshStack(gw, db)


def job_rows_land(gw: Gateway, db: Db, tmp_path: Path) -> None:
    """A job's run and its two rows reach PostgreSQL through the gateway."""
    handler = SupabaseHandler(
        url=gw.url,
        key=gw.service_key,
        spool_path=str(tmp_path / "job-spool.sqlite3"),
        install_signal_handlers=False,
        capture_uncaught=False,
        implicit_run=False,
        flush_interval_s=0.2,
    )
    logger = logging.Logger("doctor-job")
    logger.addHandler(handler)
    name = f"after-repair-{uuid.uuid4().hex[:8]}"
    with start_run(name):
        logger.info("fetched 3 rows")
        logger.warning("one was late")
    assert handler.flush(15.0)
    handler.close(5.0)
    status = db.fetchval("select status from runs where script_name = %s", (name,))
    messages = db.fetch(
        "select message from logs join runs on runs.id = logs.run_id where script_name = %s"
        " order by timestamp",
        (name,),
    )
    assert status == "success" and [m[0] for m in messages] == ["fetched 3 rows", "one was late"]


BREAKAGES = [
    ("revoke insert on public.logs from service_role", {"write logs", "grants logs"}),
    ("revoke insert on public.runs from service_role", {"write runs", "grants runs"}),
    ("revoke update on public.runs from service_role", {"write runs", "grants runs"}),
    ("revoke select on public.runs from service_role", {"table runs", "grants runs"}),
    ("revoke select on public.logs from service_role", {"table logs", "grants logs"}),
    ("alter table public.logs disable row level security", {"rls logs"}),
]


@pytest.mark.parametrize(("breakage", "expected"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_doctor_names_the_breakage_once_and_migrate_repair_restores_it(
    breakage: str,
    expected: set[str],
    recorded: FreshStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each missing privilege or RLS off fails doctor with the repair fix once; plain migrate says so; --repair fixes it; rows land."""
    gw, db = recorded
    db.execute(breakage)
    if breakage.startswith("revoke"):  # the write probe sees it without SUPABASE_DB_URL
        monkeypatch.delenv("SUPABASE_DB_URL")
        code, out, _ = cli(capsys, "doctor")
        assert code == 1 and failed(out) == {n for n in expected if not n.startswith("grants")}
        assert fixes(out) == [FIX_REPAIR], out
        monkeypatch.setenv("SUPABASE_DB_URL", db.dsn)
    code, out, _ = cli(capsys, "doctor")
    assert code == 1 and failed(out) == expected, out
    assert fixes(out) == [FIX_REPAIR], out
    code, out, _ = cli(capsys, "migrate")
    assert code == 1 and "already applied" in out and "still differs" in out
    assert f"fix: {FIX_REPAIR}" in out
    code, out, _ = cli(capsys, "migrate", "--repair")
    assert code == 0 and "re-applied: " in out and "database is up to date" in out, out
    code, out, _ = cli(capsys, "doctor")
    assert code == 0 and out.rstrip().endswith("all checks passed"), out
    job_rows_land(gw, db, tmp_path)


def test_write_probe_leaves_nothing_behind_and_names_a_refused_delete(
    recorded: FreshStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A passing doctor leaves no probe row; without DELETE it says the probe run stayed and how to remove it."""
    _, db = recorded
    monkeypatch.delenv("SUPABASE_DB_URL")
    code, out, _ = cli(capsys, "doctor")
    assert code == 0 and "ok    write runs" in out and "ok    write logs" in out, out
    assert db.fetchval("select count(*) from runs where script_name = 'supabase-log-doctor'") == 0
    assert db.fetchval("select count(*) from logs where step = 'DOCTOR'") == 0
    db.execute("revoke delete on public.runs from service_role")
    code, out, _ = cli(capsys, "doctor")
    assert code == 1 and failed(out) == {"probe cleanup"}, out
    assert "delete from public.runs where script_name = 'supabase-log-doctor';" in out
    assert fixes(out) == [FIX_REPAIR]
    assert db.fetchval("select count(*) from runs where script_name = 'supabase-log-doctor'") == 1


def test_doctor_with_the_anon_key_says_so_with_one_fix(
    gateway: Gateway,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The anon key (JWT or sb_publishable_) is reported as the anon key; the only fix named is the service role key."""
    for key in (gateway.anon_key, gateway.publishable_key):
        point_at(monkeypatch, tmp_path, gateway, None, key=key)
        code, out, _ = cli(capsys, "doctor")
        assert code == 1 and "FAIL  key" in out and "is the anon key" in out, out
        assert fixes(out) == [FIX_SERVICE_KEY], out
        assert "write runs" not in out  # no probe with a key that cannot write


def test_empty_database_names_migrate_once(
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On a bare database every failure shares one fix line, `supabase-log migrate`; tables created by hand need only migrate too."""
    gw, db = fresh_gateway(migrations=False)
    point_at(monkeypatch, tmp_path, gw, db)
    code, out, _ = cli(capsys, "doctor")
    assert code == 1 and {"table runs", "table logs", "migrations"} <= failed(out)
    assert fixes(out) == [FIX_MIGRATE], out
    gw, db = fresh_gateway()  # tables made outside the CLI: nothing recorded
    db.execute("revoke insert on public.logs from service_role")
    point_at(monkeypatch, tmp_path, gw, db)
    code, out, _ = cli(capsys, "doctor")
    assert code == 1 and {"write logs", "grants logs", "migrations"} == failed(out), out
    assert fixes(out) == [FIX_MIGRATE], out
    code, out, _ = cli(capsys, "migrate")
    assert code == 0, out
    code, out, _ = cli(capsys, "doctor")
    assert code == 0, out


@pytest.fixture
def not_found_server() -> Iterator[str]:
    """A loopback web server that answers 404 with an HTML page to every request."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><body>Not Found</body></html>"
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_404_page_is_not_reachable(
    not_found_server: str,
    gateway: Gateway,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A URL whose server answers 404 pages, not PostgREST, fails `reachable` with the URL fix."""
    point_at(monkeypatch, tmp_path, gateway, None)
    monkeypatch.setenv("SUPABASE_URL", not_found_server)
    code, out, _ = cli(capsys, "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(out)}
    assert code == 1 and checks["reachable"]["ok"] is False
    assert "HTTP 404" in checks["reachable"]["detail"] and checks["reachable"]["fix"] == FIX_URL
    assert "table runs" not in checks


def test_integration_logs_is_checked_when_it_exists(
    recorded: FreshStack, capsys: pytest.CaptureFixture[str]
) -> None:
    """With an integration_logs table, doctor probes it (upsert, update in place) and reads its grants; a missing UPDATE fails."""
    _, db = recorded  # the migrations create integration_logs
    code, out, _ = cli(capsys, "doctor")
    assert (
        code == 0 and "ok    write integration_logs" in out and "insert, upsert and select" in out
    )
    assert "ok    grants integration_logs" in out
    assert db.fetchval("select count(*) from integration_logs") == 0
    db.execute("revoke update on public.integration_logs from service_role")
    code, out, _ = cli(capsys, "doctor")
    assert failed(out) == {"write integration_logs", "grants integration_logs"}, out
    assert "may not UPDATE public.integration_logs" in out and fixes(out) == [FIX_REPAIR]
    assert db.fetchval("select count(*) from integration_logs") == 0
