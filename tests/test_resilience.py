"""Resilience: bad input, secrets, signals, deadlocks, forks, setup errors, memory bounds."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, last_json_line, run_script, start_script, wait_until, wait_until_asleep
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stack.fixtures import Db
from stack.gateway import Gateway

from supabase_log_handler import SupabaseHandler, start_run
from supabase_log_handler.spool_files import pending_entries, read_dead_letters

pytestmark = pytest.mark.process  # forks, signals or exits: also run on 3.10 and 3.13

TERMS = ("delivered", "spooled_pending", "dead_lettered", "dropped", "in_memory")


def _python312() -> str | None:
    """An interpreter where threads cannot start inside atexit (CPython 3.12+), if installed."""
    candidates = [f"/root/.pyenv/versions/{v}/bin/python" for v in ("3.12.1", "3.13.0")]
    candidates += ["/usr/bin/python3.12", "/usr/bin/python3.13"]
    return next((c for c in candidates if os.path.exists(c)), None)


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")

    __str__ = __repr__


def test_bad_input_never_raises_and_never_spoils_other_rows(
    db: Db, make_handler: Callable[..., SupabaseHandler], attach: Callable[..., logging.Logger]
) -> None:
    """NUL, surrogates, NaN, 2 MB messages, cycles, failing repr, odd levels: every row lands, nothing raises."""
    handler = make_handler(max_message_chars=50_000)
    log = attach(handler, level=1)
    cyclic: dict[str, Any] = {"name": "loop"}
    cyclic["self"] = cyclic
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(200):
        node["child"] = {}
        node = node["child"]
    with start_run("bad-input") as run:
        log.info("nul\x00byte")
        log.info("lone \ud800 surrogate", extra={"meta": {"k\udfff": "v\ud800"}})
        log.info("floats", extra={"meta": {"nan": math.nan, "inf": math.inf, "ninf": -math.inf}})
        log.info("x" * 2_000_000)
        log.info("cyclic", extra={"meta": cyclic})
        log.info("deep", extra={"meta": deep})
        log.info({"not": "a string"})
        log.info(12345)
        log.info("%s and %d", _BadRepr(), "not a number")
        log.info("repr in meta", extra={"meta": {"obj": _BadRepr()}})
        log.log(5, "level five")
        log.log(55, "level fifty-five")
        log.info("after all that")
    assert handler.flush(30)
    rows = db.fetch(
        "select message, meta from logs where run_id = %s order by timestamp, id", (run.id,)
    )
    assert len(rows) == 13
    messages = [m for m, _ in rows]
    assert messages[0] == "nulbyte" and "\ufffd" in messages[1]
    assert rows[2][1]["nan"] == "NaN" and rows[2][1]["inf"] == "Infinity"
    assert (
        len(messages[3]) < 50_100
        and "truncated" in messages[3]
        and rows[3][1]["truncated"] == ["message"]
    )
    assert rows[4][1]["self"] == "<cycle>"
    assert "<max depth>" in json.dumps(rows[5][1])
    assert messages[6] == "{'not': 'a string'}" and messages[7] == "12345"
    assert "message formatting failed" in messages[8]
    assert rows[9][1]["obj"] == "<unrepresentable _BadRepr>"
    assert messages[-1] == "after all that"
    assert handler.stats()["dead_lettered"] == 0


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_property_every_record_is_delivered_or_dead_lettered_and_logging_never_raises(
    data: st.DataObject, fresh_gateway: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """For arbitrary messages, extras and levels: the call never raises; each record is a row or a dead letter."""
    stack = getattr(
        test_property_every_record_is_delivered_or_dead_lettered_and_logging_never_raises,
        "_stack",
        None,
    )
    if stack is None:
        gw, pdb = fresh_gateway()
        pdb.execute("alter table logs add constraint short_step check (length(step) < 150)")
        spool = tmp_path_factory.mktemp("prop") / "spool"
        handler = SupabaseHandler(
            url=gw.url,
            key=gw.service_key,
            spool_path=str(spool),
            flush_interval_s=0.1,
            install_signal_handlers=False,
            capture_uncaught=False,
            implicit_run=False,
        )
        logger = logging.getLogger("prop")
        logger.handlers, logger.propagate, logger.level = [handler], False, 1
        stack = (gw, pdb, handler, logger, spool)
        test_property_every_record_is_delivered_or_dead_lettered_and_logging_never_raises._stack = (
            stack  # type: ignore[attr-defined]
        )
    gw, pdb, handler, logger, spool = stack
    text = st.text(max_size=300)
    leaf = st.one_of(
        text, st.integers(), st.floats(), st.booleans(), st.none(), st.binary(max_size=40)
    )
    value = st.recursive(
        leaf,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(text, kids, max_size=4),
        max_leaves=15,
    )
    marker = f"m{data.draw(st.integers(0, 10**12))}-{time.monotonic_ns()}"
    message = data.draw(text)
    extras = data.draw(
        st.dictionaries(
            st.text(alphabet="abcdefghijklmnop_", min_size=1, max_size=10), value, max_size=4
        )
    )
    extras = {f"x_{k}": v for k, v in extras.items()}
    level = data.draw(st.integers(1, 60))
    step = data.draw(st.one_of(st.none(), st.text(max_size=200)))
    run = start_run("property")
    try:
        extra: dict[str, Any] = {**extras, "meta": {"marker": marker}, "run_id": run.id}
        if step is not None:
            extra["step"] = step
        logger.log(level, message, extra=extra)
    finally:
        run.finish("success")
    assert handler.flush(30)
    landed = pdb.fetchval("select count(*) from logs where meta->>'marker' = %s", (marker,))
    dead = [
        d
        for d in read_dead_letters(spool)
        if (isinstance(d["row"].get("meta"), dict) and d["row"]["meta"].get("marker") == marker)
        or marker in json.dumps(d["row"])
    ]
    assert landed + len(dead) == 1, (landed, dead)
    for d in dead:
        assert d["code"], "a dead letter always carries the server's reason"


def test_secrets_never_reach_the_database_the_spool_or_stderr(
    db: Db, gateway_faults: Gateway, tmp_path: Path
) -> None:
    """The service key, JWTs and passwords in messages, meta and exceptions appear nowhere after logging."""
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIiwicm9sZSI6ImFub24ifQ.c2lnbmF0dXJlLXZhbHVlLTEyMzQ1Ng"
    password, openai = "hunter2-correct-horse", "sk-proj-abcdefghijklmnopqrstuvwx"
    spool = tmp_path / "spool"
    env = {
        "SUPABASE_URL": gateway_faults.url,
        "SUPABASE_SERVICE_ROLE_KEY": gateway_faults.service_key,
        "SUPABASE_LOG_SPOOL": str(spool),
        "SUPABASE_LOG_SHUTDOWN_TIMEOUT_S": "2",
    }
    script = f"""
import json, logging, os
from supabase_log_handler import SupabaseHandler, context
logging.basicConfig(level=logging.INFO, handlers=[SupabaseHandler(script_name="secrets")])
log = logging.getLogger("auth")
key = os.environ["SUPABASE_SERVICE_ROLE_KEY"]
log.info("using key %s and token {jwt}", key)
log.info("login", extra={{"meta": {{"password": "{password}", "headers": {{"Authorization": "Bearer {jwt}"}}, "api_key": key}}}})
log.info("calling openai with {openai} and password={password}")
try:
    raise RuntimeError(f"auth failed for {{key}} with password={password}")
except RuntimeError:
    log.exception("failure")
print(json.dumps({{"run_id": context.current_run().id}}))
"""
    first = run_script(script, env)  # delivered to the database
    gateway_faults.stop()
    second = run_script(script, env)  # backend down: everything ends in the spool
    secrets = [gateway_faults.service_key, jwt, password, openai]
    for out in (first, second):
        for secret in secrets:
            assert secret not in out.stderr and secret not in out.stdout
    run_ids = [last_json_line(first.stdout)["run_id"], last_json_line(second.stdout)["run_id"]]
    dumped = json.dumps(
        db.fetch("select message, meta::text from logs where run_id = %s", (run_ids[0],))
    )
    assert (
        "[REDACTED]" in dumped
        and db.fetchval("select count(*) from logs where run_id = %s", (run_ids[0],)) == 4
    )
    spooled = b"".join(p.read_bytes() for p in spool.iterdir())
    assert b"[REDACTED]" in spooled
    for secret in secrets:
        assert secret not in dumped
        assert secret.encode() not in spooled


def test_secrets_in_a_failing_runs_error_and_metadata_are_masked(
    db: Db, gateway: Gateway, make_handler: Callable[..., SupabaseHandler]
) -> None:
    """An exception carrying the key and a password ends a run: runs.error_message, metadata and the row are masked."""
    handler = make_handler()
    logging.getLogger().addHandler(handler)
    key = gateway.service_key
    with (
        pytest.raises(RuntimeError),
        start_run("leaky", metadata={"db_password": "hunter2-x"}) as run,
    ):
        raise RuntimeError(f"login with {key} and password=hunter2-y failed")
    assert handler.flush(10)
    error, metadata = db.fetch("select error_message, metadata from runs where id = %s", (run.id,))[
        0
    ]
    stored = json.dumps(
        [error, metadata, db.fetch("select message, meta from logs where run_id = %s", (run.id,))]
    )
    assert "[REDACTED]" in error and metadata["db_password"] == "[REDACTED]"
    for secret in (key, "hunter2-x", "hunter2-y"):
        assert secret not in stored


def _communicate_or_dump(proc: subprocess.Popen[str], timeout_s: float) -> tuple[str, str]:
    """Wait for the child; if it hangs, have it dump every thread's stack, then fail with that."""
    try:
        return proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # faulthandler in the child writes all stacks to stderr
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        raise AssertionError(
            f"the child hung after SIGTERM; its threads:\n{err[-8000:]}\nstdout:\n{out}"
        ) from None


def test_sigterm_goes_to_the_applications_handler_which_decides_how_the_run_ends(
    db: Db, supabase_env: dict[str, str]
) -> None:
    """An application's own SIGTERM handler runs; its sys.exit(7) ends the run as an error with that code, rows kept."""
    proc = start_script(
        """
import faulthandler, json, logging, os, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)
seen = []
signal.signal(signal.SIGTERM, lambda s, f: (seen.append(s), print(json.dumps({"app_handler": True}), flush=True), sys.exit(7)))
from supabase_log_handler import SupabaseHandler, start_run
logging.basicConfig(level=logging.INFO, handlers=[SupabaseHandler(flush_interval_s=30)])
run = start_run("sigterm-job")
for i in range(500):
    logging.getLogger("job").info("before term %d", i)
print(json.dumps({"run_id": run.id}), flush=True)
time.sleep(60)
""",
        supabase_env,
    )
    assert proc.stdout is not None
    run_id = json.loads(proc.stdout.readline())["run_id"]
    wait_until_asleep(proc.pid)
    proc.send_signal(signal.SIGTERM)
    out, err = _communicate_or_dump(proc, 30)
    assert proc.returncode == 7, err
    assert json.loads(out.strip().splitlines()[-1]) == {"app_handler": True}
    status, message = db.fetch("select status, error_message from runs where id = %s", (run_id,))[0]
    assert (status, message) == ("error", "exited with code 7")
    assert db.fetchval("select count(*) from logs where run_id = %s and step <> 'ERROR'", (run_id,)) == 500
    assert db.fetch(
        "select level, message from logs where run_id = %s and step = 'ERROR'", (run_id,)
    ) == [("ERROR", "exited with code 7")]


def _blocked_signals(native_id: int) -> set[int]:
    """The signals a thread of this process blocks, read from /proc."""
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    mask = int(
        next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")), 16
    )
    return {n for n in range(1, 65) if mask >> (n - 1) & 1}


def test_signals_for_the_application_never_land_on_the_handlers_threads(
    make_handler: Callable[..., SupabaseHandler], attach: Callable[..., logging.Logger]
) -> None:
    """The worker and sender block SIGTERM/SIGINT, so the kernel delivers them to the job's own threads."""
    handler = make_handler()
    attach(handler).info("start the threads")
    assert handler.flush(10)
    threads = handler._pipeline.threads
    assert len(threads) == 2
    for thread in threads:
        assert thread.native_id is not None
        assert {signal.SIGTERM, signal.SIGINT, signal.SIGHUP} <= _blocked_signals(
            thread.native_id
        ), thread.name
    main = threading.main_thread().native_id
    assert main is not None and signal.SIGTERM not in _blocked_signals(main)


def test_sigterm_without_an_application_handler_still_ends_the_process(
    db: Db, supabase_env: dict[str, str]
) -> None:
    """With no handler of its own, the process still dies of SIGTERM, after the rows are delivered."""
    proc = start_script(
        """
import faulthandler, json, logging, signal, time
faulthandler.register(signal.SIGUSR1, all_threads=True)
from supabase_log_handler import SupabaseHandler, start_run
logging.basicConfig(level=logging.INFO, handlers=[SupabaseHandler(flush_interval_s=30)])
run = start_run("sigterm-default")
for i in range(100):
    logging.getLogger("job").info("row %d", i)
print(json.dumps({"run_id": run.id}), flush=True)
time.sleep(60)
""",
        supabase_env,
    )
    assert proc.stdout is not None
    run_id = json.loads(proc.stdout.readline())["run_id"]
    wait_until_asleep(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _communicate_or_dump(proc, 30)
    assert proc.returncode == -signal.SIGTERM
    assert db.fetchval("select count(*) from logs where run_id = %s", (run_id,)) == 100
    assert db.fetchval("select status from runs where id = %s", (run_id,)) == "error"


def test_flush_under_loggings_module_lock_and_from_the_worker_does_not_deadlock(
    db: Db, make_handler: Callable[..., SupabaseHandler], attach: Callable[..., logging.Logger]
) -> None:
    """flush() holding logging's module lock (as dictConfig/shutdown do) and from inside the sender both return."""
    handler = make_handler()
    log = attach(handler)
    with start_run("locks") as run:
        for i in range(300):
            log.info("locked %d", i)
        logging._lock.acquire()  # type: ignore[attr-defined]
        try:  # right after start the client may still be loading: flush must not wait for it
            handler.flush(10)
        finally:
            logging._lock.release()  # type: ignore[attr-defined]
        assert handler.flush(10)
        for i in range(300, 400):
            log.info("locked %d", i)
        logging._lock.acquire()  # type: ignore[attr-defined]
        try:  # with the client loaded, a flush under the lock delivers
            assert handler.flush(10)
        finally:
            logging._lock.release()  # type: ignore[attr-defined]
        assert db.fetchval("select count(*) from logs where run_id = %s", (run.id,)) == 400
        pipeline = handler._pipeline
        results: list[bool] = []
        original = pipeline.sender.deliver

        def deliver_and_flush(batch: Any, stage: str, deadline: Any = None) -> None:
            results.append(handler.flush(5))  # from the sender thread itself
            original(batch, stage, deadline)

        pipeline.sender.deliver = deliver_and_flush  # type: ignore[method-assign]
        log.error("wakes the worker at once")
        wait_until(lambda: bool(results), 10, "the sender to call flush")
        pipeline.sender.deliver = original  # type: ignore[method-assign]
    assert results == [False]  # refused at once instead of waiting for itself
    assert handler.flush(10)
    assert db.fetchval("select count(*) from logs where run_id = %s", (run.id,)) == 401


def test_dictconfig_reconfiguration_keeps_every_row(
    db: Db, supabase_env: dict[str, str], tmp_path: Path
) -> None:
    """Replacing the handler with dictConfig right after start (under logging's lock) loses nothing."""
    out = run_script(
        """
        import json, logging, logging.config
        from supabase_log_handler import context
        config = {"version": 1, "disable_existing_loggers": False,
                  "handlers": {"db": {"class": "supabase_log_handler.SupabaseHandler", "script_name": "reconf"}},
                  "root": {"level": "INFO", "handlers": ["db"]}}
        logging.config.dictConfig(config)
        for i in range(200):
            logging.getLogger("job").info("first %d", i)
        logging.config.dictConfig(config)  # closes the first handler while holding logging's lock
        for i in range(200):
            logging.getLogger("job").info("second %d", i)
        print(json.dumps({"run_id": context.current_run().id}))
        """,
        {**supabase_env, "SUPABASE_LOG_SPOOL": str(tmp_path / "spool")},
    )
    run_id = last_json_line(out.stdout)["run_id"]
    stored, distinct = db.fetch(
        "select count(*), count(distinct message) from logs where run_id = %s", (run_id,)
    )[0]
    # The first handler was closed while its sender may still have been loading its client:
    # its rows went to the spool then, and the exit replays them if time allows (on a busy
    # machine some may wait for the next process or push). None is lost or doubled.
    spool = tmp_path / "spool"
    assert stored == distinct and stored + pending_entries(spool)["logs"] == 400
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    env.update(supabase_env, SUPABASE_LOG_SPOOL=str(spool))
    done = subprocess.run([sys.executable, "-m", "supabase_log_handler", "push"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert db.fetch(
        "select count(*), count(distinct message) from logs where run_id = %s", (run_id,)
    ) == [(400, 400)]


def test_exit_drain_works_where_threads_cannot_start_at_exit(tmp_path: Path) -> None:
    """A first record logged inside atexit (threads cannot start then on 3.12+) is still written."""
    interpreter = _python312()
    local = tmp_path / "local.sqlite3"
    source = """
import atexit, logging, sys, threading
from supabase_log_handler import SupabaseHandler
handler = SupabaseHandler(script_name="atexit-job")
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
if sys.version_info < (3, 12):  # make 3.11 behave like 3.12: no new threads at exit
    def no_threads(*a, **k):
        raise RuntimeError("can't create new thread at interpreter shutdown")
    atexit.register(lambda: setattr(threading.Thread, "start", no_threads))
atexit.register(lambda: logging.getLogger("late").warning("logged during exit"))
"""
    env = {
        **os.environ,
        "SUPABASE_LOG_LOCAL_DB": str(local),
        "SUPABASE_LOG_SPOOL": str(tmp_path / "s"),
    }
    env.pop("SUPABASE_URL", None)
    site = next(p for p in sys.path if p.endswith("site-packages"))
    for exe in filter(None, [sys.executable, interpreter]):
        paths = [str(ROOT)] + ([site] if exe != sys.executable else [])
        proc = subprocess.run(
            [exe, "-c", source],
            env={**env, "PYTHONPATH": os.pathsep.join(paths)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
    import sqlite3

    rows = sqlite3.connect(local).execute("select message from logs").fetchall()
    assert rows == [("logged during exit",)] * (2 if interpreter else 1)


def test_forked_child_logs_into_the_parents_run_without_resending_its_rows(
    db: Db, supabase_env: dict[str, str]
) -> None:
    """os.fork: the child gets a fresh queue, writes only its own rows, into the parent's run."""
    out = run_script(
        """
        import json, logging, os
        from supabase_log_handler import SupabaseHandler, context
        handler = SupabaseHandler(script_name="forker", flush_interval_s=60)
        logging.basicConfig(level=logging.INFO, handlers=[handler])
        for i in range(10):
            logging.getLogger("parent").info("parent %d", i)   # still queued at the fork
        pid = os.fork()
        if pid == 0:
            for i in range(5):
                logging.getLogger("child").info("child %d", i)
            handler.flush(20)
            os._exit(0)
        os.waitpid(pid, 0)
        print(json.dumps({"run_id": context.current_run().id}))
        """,
        supabase_env,
    )
    run_id = last_json_line(out.stdout)["run_id"]
    rows = db.fetch("select message from logs where run_id = %s order by message", (run_id,))
    assert [r[0] for r in rows] == sorted(
        [f"child {i}" for i in range(5)] + [f"parent {i}" for i in range(10)]
    )


def test_retry_after_is_honoured_and_rows_arrive(
    db: Db,
    gateway_faults: Gateway,
    make_handler: Callable[..., SupabaseHandler],
    attach: Callable[..., logging.Logger],
) -> None:
    """429 with Retry-After: the client waits at least that long, then delivers everything once."""
    handler = make_handler(retry_max_wait_s=0.2)
    log = attach(handler)
    with start_run("rate-limited") as run:
        log.info("warm")
        assert handler.flush(10)
        gateway_faults.fail_next(2, status=429, retry_after=1, code="429")
        started = time.monotonic()
        for i in range(50):
            log.info("limited %d", i)
        assert handler.flush(30)
        elapsed = time.monotonic() - started
    assert elapsed >= 2.0, f"two Retry-After: 1 answers should cost 2 s, took {elapsed:.2f}"
    assert db.fetchval("select count(*) from logs where run_id = %s", (run.id,)) == 51
    assert handler.stats()["retries"] >= 2


def test_missing_tables_give_one_diagnostic_naming_the_fix_and_no_retry_storm(
    fresh_gateway: Callable[..., Any], tmp_path: Path
) -> None:
    """Without the tables (PGRST205): one message says to apply the migrations, rows are spooled, requests stay few."""
    gw, _ = fresh_gateway(migrations=False)
    proc = run_script(
        """
        import json, logging, time
        from supabase_log_handler import SupabaseHandler
        h = SupabaseHandler(script_name="no-tables", probe_interval_s=0.5, flush_interval_s=0.1)
        logging.basicConfig(level=logging.INFO, handlers=[h])
        deadline = time.monotonic() + 3
        i = 0
        while time.monotonic() < deadline:
            logging.getLogger("job").info("row %d", i)
            i += 1
            h.flush(0.05)
        print(json.dumps({"logged": i, **{k: h.stats()[k] for k in ("requests", "spooled_pending")}}))
        """,
        {
            "SUPABASE_URL": gw.url,
            "SUPABASE_SERVICE_ROLE_KEY": gw.service_key,
            "SUPABASE_LOG_SPOOL": str(tmp_path / "spool"),
            "SUPABASE_LOG_SHUTDOWN_TIMEOUT_S": "1",
        },
    )
    info = last_json_line(proc.stdout)
    assert proc.stderr.count("table is missing") == 1, (
        proc.stderr
    )  # one diagnostic, not one per retry
    assert "supabase-log migrate" in proc.stderr
    assert info["requests"] <= 10, info
    assert pending_entries(tmp_path / "spool")["logs"] == info["logged"]


def test_root_at_debug_with_backend_down_has_no_feedback_loop_and_bounded_memory(
    gateway_faults: Gateway, supabase_env: dict[str, str]
) -> None:
    """Root at DEBUG, backend down, spool off: only the job's records count, and memory stays within the bound."""
    gateway_faults.stop()
    out = run_script(
        """
        import json, logging, tracemalloc
        from supabase_log_handler import SupabaseHandler
        h = SupabaseHandler(script_name="debug-down", spool=False, max_queue_rows=5000,
                            max_queue_bytes=4 * 1024 * 1024, probe_interval_s=0.2, retry_deadline_s=0.5)
        logging.basicConfig(level=logging.DEBUG, handlers=[h])
        log = logging.getLogger("job")
        log.debug("start")
        h.flush(5)  # the client is imported and has failed once: the breaker is open
        tracemalloc.start()
        for i in range(60000):
            (log.debug if i % 20 else log.warning)("row %d", i)  # 3,000 warnings: fewer than the queue holds
        peak = tracemalloc.get_traced_memory()[1]
        st = h.stats()
        print(json.dumps({"peak": peak, "stats": st, "logged": 60001}))
        """,
        {**supabase_env, "SUPABASE_LOG_SHUTDOWN_TIMEOUT_S": "1"},
    )
    info = last_json_line(out.stdout)
    logs = info["stats"]["by_table"]["logs"]
    # nothing but the job's own records entered (and the handler's "N records dropped" rows)
    assert logs["accepted"] == info["logged"] + info["stats"]["drop_reports"], info
    assert logs["accepted"] == sum(logs[k] for k in TERMS), info
    # Backend down, spool off: rows are given up and counted (shed from a full queue, or
    # dropped by the worker when it keeps up: that depends on the interpreter's speed),
    # and a full queue never sheds a WARNING while it holds a DEBUG row to evict.
    assert logs["dropped"] > 0, info
    shed = info["stats"]["dropped"].get("queue_full", {})
    assert shed.get("WARNING", 0) == 0, info
    bound = (
        4 * 1024 * 1024 + 3 * 1_000_000 + 4 * 1024 * 1024
    )  # queue + batches in flight + allowance
    assert info["peak"] <= bound, info


def test_dropped_records_are_reported_by_a_warning_row_once_pressure_clears(
    db: Db, make_handler: Callable[..., SupabaseHandler], attach: Callable[..., logging.Logger]
) -> None:
    """When the queue sheds INFO records, a WARNING row 'N records dropped' follows with counts per level."""
    handler = make_handler(spool=False, max_queue_rows=200, flush_interval_s=5.0)
    log = attach(handler)
    with start_run("shedding") as run:
        for i in range(2000):
            log.info("flood %d", i)
    assert handler.flush(30)
    dropped = handler.stats()["dropped_total"]
    assert dropped > 0
    report = db.fetch(
        "select level, meta from logs where run_id = %s and message like '%% records dropped'",
        (run.id,),
    )
    assert len(report) == 1 and report[0][0] == "WARNING"
    assert report[0][1]["dropped_by_level"]["INFO"] == dropped
    landed = db.fetchval(
        "select count(*) from logs where run_id = %s and message like 'flood %%'", (run.id,)
    )
    assert landed + dropped == 2000


def test_overflow_block_waits_for_room_instead_of_dropping(
    db: Db, make_handler: Callable[..., SupabaseHandler], attach: Callable[..., logging.Logger]
) -> None:
    """overflow='block' makes a full queue wait (up to block_timeout_s) rather than shed."""
    handler = make_handler(
        spool=False, max_queue_rows=50, overflow="block", block_timeout_s=10.0, max_batch_rows=50
    )
    log = attach(handler)
    with start_run("blocking") as run:
        for i in range(2000):
            log.info("kept %d", i)
    assert handler.flush(30)
    assert handler.stats()["dropped_total"] == 0
    assert db.fetchval("select count(*) from logs where run_id = %s", (run.id,)) == 2000
