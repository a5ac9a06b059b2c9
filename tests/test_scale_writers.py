"""Many writers at once: 20 processes x 50,000 rows through each sink, nothing lost or doubled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, SCRIPTS, assert_identity
from stack.pgbouncer import DirectBackend, PgBouncer

WRITERS = 20
ROWS_EACH = 50_000

JOB = """
import json, logging, os, sys
from supabase_log_handler import SupabaseHandler, context
handler = SupabaseHandler(script_name="writer", install_signal_handlers=False)
log = logging.getLogger("writer")
log.addHandler(handler)
log.setLevel(logging.INFO)
log.propagate = False
tag, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    log.info("%s %d", tag, i)
done = handler.flush(600)
print(json.dumps({"run_id": context.current_run().id, "flushed": done, "stats": handler.stats()}))
"""


@pytest.mark.process
@pytest.mark.slow
@pytest.mark.parametrize("sink", ["rest", "postgres"])
def test_twenty_writers_store_exactly_a_million_rows(
    sink: str, fresh_gateway: Callable[..., Any], pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    """20 processes log 50,000 rows each at once: exactly 1,000,000 distinct rows, every ledger adds up, server connections stay within the pool."""
    gw, wdb = fresh_gateway()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(SCRIPTS)]),
               SUPABASE_LOG_SPOOL=str(tmp_path / "spool"), SUPABASE_LOG_MAX_BATCH_ROWS="2000")  # fmt: skip
    if sink == "rest":
        env.update(SUPABASE_URL=gw.url, SUPABASE_SERVICE_ROLE_KEY=gw.service_key)
    else:
        env.update(DirectBackend(pgbouncer, wdb.name).env)
    peak = [0]
    done = threading.Event()

    def watch_connections() -> None:  # server sessions on this database while the writers run
        while not done.wait(0.2):
            n = wdb.fetchval(
                "select count(*) from pg_stat_activity where datname = current_database()"
                " and pid <> pg_backend_pid() and backend_type = 'client backend'"
            )
            peak[0] = max(peak[0], int(n))

    watcher = threading.Thread(target=watch_connections, daemon=True)
    watcher.start()
    argv = [sys.executable, "-c", JOB]
    procs = [
        subprocess.Popen([*argv, f"w{w:02d}", str(ROWS_EACH)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for w in range(WRITERS)
    ]
    try:
        outputs = [p.communicate(timeout=900) for p in procs]
    finally:
        done.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
    watcher.join(5)
    reports = []
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    for r in reports:
        assert r["flushed"], r
        assert_identity(r["stats"])
        assert r["stats"]["by_table"]["logs"]["delivered"] == ROWS_EACH, r["stats"]
    total, distinct_ids, distinct_messages = wdb.fetch(
        "select count(*), count(distinct id), count(distinct message) from logs"
    )[0]
    assert (total, distinct_ids, distinct_messages) == (WRITERS * ROWS_EACH,) * 3
    assert wdb.fetchval("select count(distinct run_id) from logs") == WRITERS
    if sink == "postgres":  # PgBouncer lends at most default_pool_size server connections
        assert 0 < peak[0] <= pgbouncer.pool_size, peak[0]


def test_writers_sharing_one_pooled_server_connection_share_its_staging_table_empty(
    fresh_gateway: Callable[..., Any], pg_cluster: Any
) -> None:
    """Through a pool of one server connection, two direct sinks write in turn (one write refused
    midway): every good row stored once, and the staging table left in that connection is empty."""
    import psycopg

    from supabase_log_handler._ids import new_id
    from supabase_log_handler.errors import DataError
    from supabase_log_handler.rows import encode
    from supabase_log_handler.sinks import LOG_COLUMNS
    from supabase_log_handler.sinks.postgres import PostgresSink

    _, wdb = fresh_gateway()
    run_id = new_id()
    wdb.execute("insert into runs (id, script_name, status) values (%s, 'pooled', 'running')", (run_id,))
    bouncer = PgBouncer(pg_cluster.host, pg_cluster.port, pool_size=1).start()
    sinks = [PostgresSink(bouncer.dsn(wdb.name)) for _ in range(2)]
    try:

        def batch(n: int, run: str = run_id) -> list[bytes]:
            return [encode({"id": new_id(), "run_id": run, "timestamp": "2026-11-29T12:00:00+00:00",
                            "level": "INFO", "step": "S", "message": f"m{i}", "meta": {}})
                    for i in range(n)]  # fmt: skip

        stored = 0
        for turn in range(6):
            sinks[turn % 2].write("logs", batch(100), merge=False, columns=LOG_COLUMNS)
            stored += 100
            if turn == 2:  # copied into the staging table, then refused as a whole (no such run)
                with pytest.raises(DataError):
                    sinks[1].write("logs", batch(50) + batch(1, new_id()), merge=False, columns=LOG_COLUMNS)
        assert wdb.fetch("select count(*), count(distinct id) from logs") == [(stored, stored)]
        # The pool's one server connection, lent to this query too: the sinks' staging table
        # is there (a temporary table lives in its server connection), and empty.
        with psycopg.connect(bouncer.dsn(wdb.name), autocommit=True, prepare_threshold=None) as conn:
            assert conn.execute("select count(*) from pg_temp._slh_logs").fetchone() == (0,)
    finally:
        for sink in sinks:
            sink.close()
        bouncer.close()
