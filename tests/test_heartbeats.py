"""An open run shows it is alive: its row gets heartbeat_at and its metrics so far, and a run
whose process was killed is found by the stale-run reaper while a live slow one never is."""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import start_script, wait_until
from stack.fixtures import Db
from stack.pgbouncer import DirectBackend, PgBouncer

from supabase_log_handler import SupabaseHandler, start_run


@pytest.mark.process
@pytest.mark.parametrize("sink", ["rest", "postgres"])
def test_metrics_set_during_a_run_show_within_one_heartbeat(
    sink: str, db: Db, make_handler: Callable[..., SupabaseHandler],
    attach: Callable[..., logging.Logger], pgbouncer: PgBouncer,
) -> None:  # fmt: skip
    """run.add() is visible in the run's row within a heartbeat interval, with heartbeat_at,
    through the REST gateway and through the direct sink."""
    backend = DirectBackend(pgbouncer, db.name) if sink == "postgres" else None
    direct = backend.settings if backend is not None else {}
    try:
        handler = make_handler(heartbeat_interval_s=0.2, flush_interval_s=0.05, **direct)
        log = attach(handler)
        with start_run("beating") as run:
            log.info("start")
            run.add(records_fetched=7)
            wait_until(
                lambda: db.fetchval("select records_fetched from runs where id = %s", (run.id,)) == 7,
                30, "the heartbeat to carry the metric")  # fmt: skip
            beat = db.fetchval("select heartbeat_at from runs where id = %s", (run.id,))
            status = db.fetchval("select status from runs where id = %s", (run.id,))
            assert beat is not None and status == "running"
            meta = db.fetchval("select metadata from runs where id = %s", (run.id,))
            assert meta["heartbeat_interval_s"] == 0.2
        assert handler.flush(10)
        assert db.fetchval("select status from runs where id = %s", (run.id,)) == "success"
    finally:
        if backend is not None:
            backend.close()


@pytest.mark.process
def test_on_the_seeds_schema_heartbeats_stop_quietly(
    fresh_gateway: Callable[..., Any], make_handler: Callable[..., SupabaseHandler],
    attach: Callable[..., logging.Logger],
) -> None:  # fmt: skip
    """Without a heartbeat_at column the handler stops sending heartbeats and loses nothing."""
    gw, sdb = fresh_gateway()
    sdb.execute("alter table runs drop column heartbeat_at cascade")
    sdb.execute("notify pgrst, 'reload schema'")
    handler = make_handler(gw, heartbeat_interval_s=0.1, flush_interval_s=0.05)
    log = attach(handler)
    with start_run("old-schema") as run:
        for i in range(20):
            log.info("row %d", i)
        run.add(records_fetched=3)
        assert handler.flush(10)
    assert handler.flush(10)
    assert sdb.fetchval("select count(*) from logs where run_id = %s", (run.id,)) == 20
    assert sdb.fetch("select status, records_fetched from runs where id = %s", (run.id,)) == [
        ("success", 3)
    ]
    stats = handler.stats()
    assert not stats["breaker_open"] and stats["dead_lettered"] == 0


@pytest.mark.process
def test_a_killed_job_is_reaped_and_a_live_slow_one_is_not(
    db: Db, supabase_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL stops a job's heartbeats: reap_stale_runs marks it 'lost', never the job still beating."""
    script = """
import json, logging, time
from supabase_log_handler import SupabaseHandler, start_run
h = SupabaseHandler(heartbeat_interval_s=0.3, flush_interval_s=0.05)
logging.basicConfig(level=logging.INFO, handlers=[h])
run = start_run("%s")
logging.getLogger("job").info("working")
h.flush(10)
print(json.dumps({"run_id": run.id}), flush=True)
time.sleep(300)
"""
    env = {**supabase_env, "SUPABASE_LOG_SPOOL": str(tmp_path / "spool")}
    killed = start_script(script % "reaped-job", env)
    live = start_script(script % "live-slow-job", env)
    try:
        ids = {}
        for name, proc in (("killed", killed), ("live", live)):
            assert proc.stdout is not None
            ids[name] = json.loads(proc.stdout.readline())["run_id"]
        wait_until(lambda: db.fetchval("select heartbeat_at is not null from runs where id = %s",
                                       (ids["killed"],)), 30, "a first heartbeat")  # fmt: skip
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)

        def reaped() -> bool:
            db.fetchval("select count(*) from reap_stale_runs(10)")  # stale after 10 x 0.3 s
            return bool(db.fetchval("select status = 'error' from runs where id = %s", (ids["killed"],)))

        wait_until(reaped, 60, "the killed job's run to be reaped")
        message = db.fetchval("select error_message from runs where id = %s", (ids["killed"],))
        assert message.startswith("lost: no heartbeat since")
        assert db.fetchval("select status from runs where id = %s", (ids["live"],)) == "running"
    finally:
        for proc in (killed, live):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.mark.process
def test_a_failing_job_alerts_once_by_itself_and_a_hanging_webhook_never_delays_its_exit(
    db: Db, supabase_env: dict[str, str], tmp_path: Path
) -> None:
    """A run that ends in error alerts the Slack-like webhook with its error rows; with a webhook
    that never answers, the job still exits within its shutdown deadline."""
    import exitclock
    from conftest import run_script
    from stack.alert_peers import slack_peer, webhook_peer

    job = """
import exitclock
import logging
from supabase_log_handler import SupabaseHandler, start_run
logging.basicConfig(level=logging.INFO, handlers=[SupabaseHandler(flush_interval_s=0.05)])
try:
    with start_run("%s"):
        logging.getLogger("job").error("VAPI returned 502")
        raise RuntimeError("sync failed")
except RuntimeError:
    pass
exitclock.start()
"""
    env = {**supabase_env, "SUPABASE_LOG_SPOOL": str(tmp_path / "spool"),
           "SUPABASE_LOG_SHUTDOWN_TIMEOUT_S": "2"}  # fmt: skip
    with slack_peer() as slack:
        out = run_script(job % "alerting-job",
                         {**env, "SUPABASE_LOG_SLACK_WEBHOOK_URL": slack.base_url + "/slack"})  # fmt: skip
        texts = slack.texts()
    assert len(texts) == 1 and "alerting-job" in texts[0] and "VAPI returned 502" in texts[0], texts
    assert supabase_env["SUPABASE_SERVICE_ROLE_KEY"] not in texts[0]
    with webhook_peer(hang=True) as hook:
        out = run_script(job % "alerting-job-2",  # another job: an incident of its own
                         {**env, "SUPABASE_LOG_WEBHOOK_URL": hook.base_url + "/hook"})  # fmt: skip
        assert hook.arrived.is_set()
    assert exitclock.within(json.loads(out.stdout.strip().splitlines()[-1]), 2.0)
