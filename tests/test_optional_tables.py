"""A table beside runs and logs that is not set up (integration_logs before its migration)
costs only its own rows: runs and logs keep flowing, the call rows wait as dead letters with
the fix, and ``push --dead-letters`` sends them once the table exists, exactly once."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_identity

from supabase_log_handler import SupabaseHandler, record_call, start_run
from supabase_log_handler.cli import main
from supabase_log_handler.cli.migrate import migrations_dir
from supabase_log_handler.spool_files import read_dead_letters


def test_missing_integration_table_costs_only_its_rows_until_pushed(
    fresh_gateway: Callable[..., Any], make_handler: Callable[..., SupabaseHandler],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    gw, db = fresh_gateway()
    db.execute("drop table integration_logs cascade")
    spool = tmp_path / "spool"
    handler = make_handler(gw, spool_path=str(spool), probe_interval_s=30.0)
    log = logging.getLogger("optional.tables")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    calls = []
    with start_run("calls-before-migrate") as run:
        for n in range(3):
            log.info("before call %d", n)
            with record_call("crm", "sync_lead", request={"n": n}, handler=handler) as call:
                pass
            calls.append(call.id)
            assert handler.flush(10.0)  # each call meets the missing table on its own batch
            log.info("after call %d", n)
    assert handler.flush(10.0)

    stats = handler.stats()
    assert_identity(stats)
    assert stats["by_table"]["integration_logs"]["dead_lettered"] == 6  # started + finished, x3
    assert stats["by_table"]["logs"]["dead_lettered"] == 0
    assert stats["breaker_open"] is False
    assert db.fetchval("select status from runs where id = %s", (run.id,)) == "success"
    assert db.fetch("select message from logs where run_id = %s order by timestamp, id",
                    (run.id,)) == [(f"{w} call {n}",) for n in range(3) for w in ("before", "after")]  # fmt: skip
    dead = read_dead_letters(spool)
    assert {d["row"]["id"] for d in dead} == set(calls)
    assert all("migrate" in d["error"] for d in dead)  # the fix travels with the row

    monkeypatch.setenv("SUPABASE_URL", gw.url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", gw.service_key)
    monkeypatch.setenv("SUPABASE_LOG_SPOOL", str(spool))
    assert main(["push", "--json", "--dead-letters"]) == 0  # the handler still writes its file
    out = json.loads(capsys.readouterr().out)
    assert (out["dead_letters_resent"], out["dead_letters_busy_files"]) == (0, 1)

    handler.close(10.0)
    log.removeHandler(handler)
    db.execute((migrations_dir() / "20261201100000_create_integration_logs.sql").read_text())
    assert main(["push", "--json", "--dead-letters"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["dead_letters_resent"], out["dead_letters"]) == (6, 0)
    rows = db.fetch("select id::text, status from integration_logs order by id")
    assert sorted(rows) == sorted((c, "success") for c in calls)
    assert read_dead_letters(spool) == []

    gw.reset_log()
    assert main(["push", "--json", "--dead-letters"]) == 0
    assert json.loads(capsys.readouterr().out)["dead_letters_resent"] == 0
    assert [r for r in gw.requests if r.method != "GET"] == []
