"""Fault tests on the real stack: outages, slow answers, exits, kills, bad rows, forks.

Each test runs twice: with the REST sink through the gateway, and with the direct
sink (``sink="postgres"``: COPY through PgBouncer in transaction mode), where the
pooler is stopped or its answers delayed as the gateway's are (see the block of
fixtures below the imports).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import exitclock
import pytest
from conftest import SCRIPTS, assert_identity, last_json_line, run_script, start_script, wait_until
from stack.fixtures import Db, FreshStack
from stack.gateway import Gateway
from stack.pgbouncer import DirectBackend

from supabase_log_handler import SupabaseHandler, start_run
from supabase_log_handler.spool_files import pending_entries, read_dead_letters

pytestmark = pytest.mark.process  # forks, signals or exits: also run on 3.10 and 3.13

# -- the direct sink: these fixtures replace the stack's for this module --------------------------


@pytest.fixture(params=["rest", "postgres"])
def sink(request: pytest.FixtureRequest) -> str:
    """Which sink the test's handler and processes use."""
    return str(request.param)


@pytest.fixture
def gateway_faults(gateway_faults: Gateway, sink: str, request: pytest.FixtureRequest) -> Any:
    """The backend a test stops or slows: the gateway, or PgBouncer behind its FaultLink."""
    return gateway_faults if sink == "rest" else request.getfixturevalue("direct_faults")


@pytest.fixture
def make_handler(make_handler: Callable[..., SupabaseHandler], sink: str,
                 request: pytest.FixtureRequest) -> Callable[..., SupabaseHandler]:  # fmt: skip
    """A handler on the session backend (or on ``gw``), writing through the test's sink."""
    if sink == "rest":
        return make_handler
    session = request.getfixturevalue("direct_faults")

    def factory(gw: Any = None, **settings: Any) -> SupabaseHandler:
        for name, value in (gw or session).settings.items():
            settings.setdefault(name, value)
        return make_handler(None, url=None, key=None, **settings)

    return factory


@pytest.fixture
def supabase_env(supabase_env: dict[str, str], sink: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """Environment for a process that writes to the session database through the test's sink."""
    return supabase_env if sink == "rest" else request.getfixturevalue("direct_faults").env


@pytest.fixture
def fresh_gateway(fresh_gateway: Callable[..., FreshStack], sink: str, pgbouncer: Any) -> Any:
    """A fresh database behind the gateway, or behind PgBouncer and its own FaultLink."""
    if sink == "rest":
        yield fresh_gateway
        return
    made: list[DirectBackend] = []

    def factory(**kwargs: Any) -> FreshStack:
        _, fdb = fresh_gateway(**kwargs)
        made.append(DirectBackend(pgbouncer, fdb.name))
        return FreshStack(made[-1], fdb)  # type: ignore[arg-type]

    yield factory
    for backend in made:
        backend.start()
        backend.close()


@pytest.fixture
def external_gateway(sink: str, request: pytest.FixtureRequest, pgbouncer: Any) -> Any:
    """A fresh database served from another process: the gateway's, or PgBouncer (already one)."""
    if sink == "rest":
        yield request.getfixturevalue("external_gateway")
        return
    _, fdb = request.getfixturevalue("fresh_gateway")()
    backend = DirectBackend(pgbouncer, fdb.name)
    yield backend, fdb
    backend.start()
    backend.close()


def _backend_env(gw: Any) -> dict[str, str]:
    """What a process needs to write through ``gw``."""
    if isinstance(gw, DirectBackend):
        return gw.env
    return {"SUPABASE_URL": gw.url, "SUPABASE_SERVICE_ROLE_KEY": gw.service_key}


def _first_write(gw: Any, table: str) -> tuple[int, bool]:
    """(rows, refused) of the first write to ``table`` as the backend saw it."""
    if isinstance(gw, DirectBackend):
        first = gw.writes(table)[0]
        return first.rows, first.sqlstate is not None
    posts = [r for r in gw.requests if r.method == "POST" and r.path.endswith(f"/{table}")]
    return posts[0].rows, posts[0].status == 400


# ---------------------------------------------------------------------------------------------


def _count(db: Db, run_id: str) -> tuple[int, int]:
    """(rows, distinct messages) of a run."""
    return db.fetch(
        "select count(*), count(distinct message) from logs where run_id = %s", (run_id,)
    )[0]


class _CollectorPauses:
    """Wall-clock intervals the garbage collector ran (it stops every thread, handler or not)."""

    def __init__(self) -> None:
        self.intervals: list[tuple[float, float, int]] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.intervals.append((self._start, time.perf_counter(), info["generation"]))

    def within(self, t0: float, t1: float) -> float:
        return sum(max(0.0, min(b, t1) - max(a, t0)) for a, b, _ in self.intervals)


@pytest.mark.slow
def test_outage_of_30s_loses_and_duplicates_nothing(
    external_gateway: tuple[Any, Db],
    make_handler: Callable[..., SupabaseHandler],
    attach: Callable[..., logging.Logger],
) -> None:
    """Gateway down for 30 s while 50,000 rows are logged: exactly 50,000 arrive, the ledger adds up, collections stay rare.

    The gateway runs in its own process, as Supabase would, and is killed for the
    outage. How long each call takes is the benchmark's to measure; this test
    checks the count and that the handler's queued rows keep the garbage
    collector's full passes (which stop every thread) rare.
    """
    import gc

    gw, edb = external_gateway
    handler = make_handler(gw, probe_interval_s=1.0, retry_deadline_s=2.0)
    log = attach(handler)
    with start_run("warm-up"):  # the client is imported and connected before the job's work
        log.info("warming up")
    assert handler.flush(30)
    pauses = _CollectorPauses()
    gc.callbacks.append(pauses)
    restarted = threading.Event()
    try:
        with start_run("outage-50k") as run:
            for i in range(5_000):
                log.info("row %d", i)
            gw.stop()
            restart = threading.Timer(30.0, lambda: (gw.start(), restarted.set()))
            restart.start()
            for i in range(5_000, 25_000):
                log.info("row %d", i)
            wait_until(lambda: handler.stats()["breaker_open"], 30, "the breaker to open")
            for i in range(25_000, 45_000):
                log.info("row %d", i)
            assert restarted.wait(60)
            for i in range(45_000, 50_000):
                log.info("row %d", i)
    finally:
        gc.callbacks.remove(pauses)
    assert handler.flush(90)
    stats = handler.stats()
    assert stats["replayed_foreign"] == 0 and stats["by_table"]["logs"]["delivered"] == 50_001
    assert_identity(stats)
    assert _count(edb, run.id) == (50_000, 50_000)
    assert edb.fetchval("select status from runs where id = %s", (run.id,)) == "success"
    full_collections = sum(1 for *_, gen in pauses.intervals if gen == 2)
    assert full_collections <= 5, f"{full_collections} full collections during 50,000 calls"


def test_timeout_after_commit_does_not_duplicate(
    db: Db,
    gateway_faults: Gateway,
    make_handler: Callable[..., SupabaseHandler],
    attach: Callable[..., logging.Logger],
) -> None:
    """The server commits but answers after the client's timeout: the retry creates no second row."""
    gw = gateway_faults
    handler = make_handler(request_timeout_s=0.5, retry_deadline_s=30.0, retry_max_wait_s=0.5)
    log = attach(handler)
    with start_run("ambiguous") as run:
        gw.delay_response_s = 1.5
        for i in range(200):
            log.info("maybe twice %d", i)
        handler.flush(0.1)
        wait_until(lambda: handler.stats()["retries"] >= 1, 30, "a retry after the timeout")
        gw.delay_response_s = 0.0
    assert handler.flush(30)
    assert _count(db, run.id) == (200, 200)
    assert handler.stats()["dead_lettered"] == 0


def test_exit_with_backend_down_spools_everything_within_deadline_then_next_process_replays(
    db: Db, gateway_faults: Gateway, supabase_env: dict[str, str], tmp_path: Path
) -> None:
    """Backend down at exit: the process ends within shutdown_timeout + 1 s, rows spooled; the next process replays them."""
    spool = tmp_path / "spool"
    env = {**supabase_env, "SUPABASE_LOG_SPOOL": str(spool), "SUPABASE_LOG_SHUTDOWN_TIMEOUT_S": "2"}
    gateway_faults.stop()
    out = run_script(
        """
import exitclock
import json, logging, sys, time
from supabase_log_handler import SupabaseHandler, context
logging.basicConfig(level=logging.INFO, handlers=[SupabaseHandler(script_name="exit-down")])
for i in range(3000):
    logging.getLogger("job").info("spooled %d", i)
print(json.dumps({"run_id": context.current_run().id}), flush=True)
exitclock.start()
""",
        env,
        timeout_s=60,
    )
    info = json.loads(out.stdout.strip().splitlines()[-2])
    clock = last_json_line(out.stdout)
    assert exitclock.within(clock, 2.0), clock
    assert pending_entries(spool)["logs"] == 3000
    assert _count(db, info["run_id"]) == (0, 0)
    gateway_faults.start()
    run_script(
        """
        import logging
        from supabase_log_handler import SupabaseHandler
        logging.basicConfig(level=logging.INFO, handlers=[SupabaseHandler(script_name="replayer")])
        logging.getLogger("job").info("a later process")
        """,
        env,
    )
    assert _count(db, info["run_id"]) == (3000, 3000)
    assert db.fetchval("select status from runs where id = %s", (info["run_id"],)) == "success"
    assert sum(pending_entries(spool).values()) == 0


def test_sigkill_with_disk_durability_loses_nothing_the_worker_took(
    fresh_gateway: Callable[..., Any], tmp_path: Path
) -> None:
    """With durability=disk, every row the worker took before SIGKILL arrives after replay."""
    gw, kdb = fresh_gateway()
    spool = tmp_path / "spool"
    env = {
        **_backend_env(gw),
        "SUPABASE_LOG_SPOOL": str(spool),
        "SUPABASE_LOG_DURABILITY": "disk",
        "SUPABASE_LOG_MAX_BATCH_ROWS": "200",
    }
    gw.delay_response_s = (
        60.0  # the first batch is committed, then its answer hangs: later rows wait
    )
    proc = start_script(
        """
import json, logging, sys, time
from supabase_log_handler import SupabaseHandler, context
h = SupabaseHandler(script_name="killed", flush_interval_s=0.1)
logging.basicConfig(level=logging.INFO, handlers=[h])
for i in range(2000):
    logging.getLogger("job").info("durable %d", i)
deadline = time.monotonic() + 30
while h.stats()["in_memory"] and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps({"run_id": context.current_run().id, "queued": h.stats()["in_memory"]}), flush=True)
time.sleep(120)
""",
        env,
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    assert info["queued"] == 0
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    gw.delay_response_s = 0.0
    assert kdb.fetchval("select count(*) from logs where run_id = %s", (info["run_id"],)) < 2000
    run_script(
        """
        import logging
        from supabase_log_handler import SupabaseHandler
        logging.basicConfig(level=logging.INFO, handlers=[SupabaseHandler(script_name="after-kill")])
        logging.getLogger("job").info("replaying")
        """,
        env,
    )
    rows = kdb.fetch(
        "select count(*), count(distinct message) from logs where run_id = %s", (info["run_id"],)
    )
    assert rows == [(2000, 2000)]


def test_one_bad_row_in_a_1000_row_batch_is_isolated_and_dead_lettered(
    fresh_gateway: Callable[..., Any],
    make_handler: Callable[..., SupabaseHandler],
    attach: Callable[..., logging.Logger],
    tmp_path: Path,
) -> None:
    """One row breaking a constraint: the other 999 land, the bad one is a dead letter with 23514."""
    gw, bdb = fresh_gateway()
    bdb.execute("alter table logs add constraint no_poison check (message <> 'poison')")
    handler = make_handler(gw, max_batch_rows=1002, flush_interval_s=5.0)  # + the run, its heartbeat
    log = attach(handler)
    with start_run("poisoned") as run:
        for i in range(1000):
            log.info("poison" if i == 617 else f"fine {i}")
    assert handler.flush(60)
    assert bdb.fetchval("select count(*) from logs where run_id = %s", (run.id,)) == 999
    assert bdb.fetchval("select count(*) from logs where message = 'poison'") == 0
    assert _first_write(gw, "logs") == (1000, True)
    dead = read_dead_letters(tmp_path / "spool")
    assert len(dead) == 1 and dead[0]["row"]["message"] == "poison" and dead[0]["code"] == "23514"
    assert handler.stats()["dead_lettered"] == 1


def test_multiprocessing_pool_workers_deliver_every_row_once(
    db: Db, supabase_env: dict[str, str], tmp_path: Path
) -> None:
    """A fork Pool of 4 workers logging 1,000 rows each gives exactly 4,000 rows in the parent's run."""
    out = run_script(
        """
        import json, logging, multiprocessing
        from supabase_log_handler import SupabaseHandler, context

        def work(w):
            log = logging.getLogger("pool")
            for i in range(1000):
                log.info("w%d-%d", w, i, extra={"meta": {"worker": w}})
            return w

        if __name__ == "__main__":
            logging.basicConfig(level=logging.INFO, handlers=[SupabaseHandler(script_name="pool-job")])
            logging.getLogger("pool").info("parent starts")
            with multiprocessing.get_context("fork").Pool(4) as pool:
                assert sorted(pool.map(work, range(4))) == [0, 1, 2, 3]
            print(json.dumps({"run_id": context.current_run().id}))
        """,
        {**supabase_env, "SUPABASE_LOG_SPOOL": str(tmp_path / "spool")},
    )
    run_id = last_json_line(out.stdout)["run_id"]
    assert _count(db, run_id) == (4001, 4001)
    assert db.fetch(
        "select meta->>'worker', count(*) from logs where run_id = %s and meta ? 'worker' group by 1 order by 1",
        (run_id,),
    ) == [("0", 1000), ("1", 1000), ("2", 1000), ("3", 1000)]


assert SCRIPTS.exists()


def test_flush_with_disk_durability_returns_once_rows_are_safe_while_a_batch_is_retried(
    make_handler: Callable[..., SupabaseHandler], attach: Callable[..., logging.Logger],
    gateway_faults: Any,
) -> None:  # fmt: skip
    """durability=disk, backend down, retry_deadline_s of an hour: the rows are safe in the
    spool, so a replay retries only for about one probe interval and flush() returns; it does
    not wait the hour for a replay round to give up."""
    gateway_faults.stop()
    handler = make_handler(durability="disk", retry_deadline_s=3600.0, retry_max_wait_s=0.2,
                           probe_interval_s=0.5)  # fmt: skip
    log = attach(handler)
    for i in range(10):
        log.info("safe %d", i)
    assert handler.flush(3600.0)  # without the fix: waits the hour (pytest's timeout ends it)
    stats = handler.stats()
    assert stats["in_memory"] == 0 and stats["by_table"]["logs"]["spooled_pending"] == 10
    handler.close(5.0)
    assert_identity(handler.stats())
