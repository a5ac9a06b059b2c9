"""emit never waits on a lock its own thread holds: signal handlers, __del__, GC callbacks and
other handlers may log while the same thread is logging, and every record is counted."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

import pytest
from conftest import assert_identity, last_json_line, run_script
from stack.fixtures import Db

from supabase_log_handler import SupabaseHandler, start_run


@pytest.mark.process
def test_a_signal_handler_logging_every_0_3_ms_while_the_main_thread_logs_never_hangs(
    db: Db, supabase_env: dict[str, str], tmp_path: object
) -> None:
    """SIGALRM every 0.3 ms logs from a signal handler while the main thread logs for 3 s: the
    process ends, every record is counted, and PostgreSQL holds each of them once."""
    out = run_script(
        """
        import json, logging, signal, time
        from supabase_log_handler import SupabaseHandler, context
        handler = SupabaseHandler(script_name="signal-storm", flush_interval_s=0.1)
        logging.basicConfig(level=logging.INFO, handlers=[handler])
        log = logging.getLogger("storm")
        fired = [0]

        def on_alarm(signum, frame):
            fired[0] += 1
            log.info("from the signal handler %d", fired[0])

        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
        main = 0
        stop = time.monotonic() + 3
        while time.monotonic() < stop:
            main += 1
            log.info("from the main thread %d", main, extra={"meta": {"n": main}})
        signal.setitimer(signal.ITIMER_REAL, 0)
        assert handler.flush(120)
        print(json.dumps({"run_id": context.current_run().id, "main": main, "fired": fired[0],
                          "stats": handler.stats()}))
        """,
        {**supabase_env, "SUPABASE_LOG_SPOOL": str(tmp_path) + "/spool"},
        timeout_s=240,
    )
    info = last_json_line(out.stdout)
    stats = info["stats"]
    assert info["fired"] > 100, info  # the timer really interrupted the logging loop
    assert_identity(stats)
    assert stats["in_memory"] == 0 and stats["dropped_total"] == 0, stats
    logs = stats["by_table"]["logs"]
    assert logs["accepted"] == info["main"] + info["fired"] + stats["drop_reports"]
    assert db.fetch(
        "select count(*), count(distinct message) from logs where run_id = %s", (info["run_id"],)
    ) == [(info["main"] + info["fired"], info["main"] + info["fired"])]


def test_del_gc_callbacks_and_other_handlers_may_log_from_inside_logging(
    db: Db,
    make_handler: Callable[..., SupabaseHandler],
    attach: Callable[..., logging.Logger],
) -> None:
    """__del__, a GC callback and another handler's emit that log are queued like any record."""
    import gc

    handler = make_handler()
    log = attach(handler, name="reentry")

    class Noisy:
        def __del__(self) -> None:
            log.info("from __del__")

    class Echo(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if not record.getMessage().startswith("echo"):
                log.info("echo of %s", record.getMessage())

    log.addHandler(Echo())
    callbacks = [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        # a collection may also run on the handler's own threads, whose records are
        # dropped as "own_thread" (no feedback loop): this test is about the job's thread
        if threading.current_thread() is not threading.main_thread():
            return
        if phase == "stop" and callbacks[0] < 5:
            callbacks[0] += 1
            log.info("from a gc callback")

    gc.callbacks.append(on_gc)
    try:
        with start_run("reentry") as run:
            for i in range(200):
                cycle: list[object] = [Noisy()]
                cycle.append(cycle)  # only the collector frees it, inside some later call
                log.info("plain %d", i)
            del cycle
            gc.collect()
    finally:
        gc.callbacks.remove(on_gc)
    assert handler.flush(30)
    stats = handler.stats()
    assert_identity(stats)
    counts = dict(
        db.fetch(
            "select case when message like 'echo of %%' then 'echo' else message end, count(*)"
            " from logs where run_id = %s group by 1",
            (run.id,),
        )
    )
    assert counts.get("from __del__") == 200
    assert counts.get("from a gc callback") == callbacks[0] > 0
    plain = sum(n for m, n in counts.items() if m.startswith("plain "))
    assert plain == 200
    assert counts["echo"] == plain + counts["from __del__"] + counts["from a gc callback"]
    assert json.dumps(stats["dropped"]) == "{}"


def test_a_job_thread_that_reuses_an_ended_worker_thread_id_is_not_taken_for_the_handler(
    make_handler: Callable[..., SupabaseHandler], attach: Callable[..., logging.Logger]
) -> None:
    """Thread ids are reused once a thread ends: after close, a job thread given the id of the
    handler's old worker logs like any other (kept, not dropped as the handler's own)."""
    import threading

    handler = make_handler()
    log = attach(handler)
    log.info("start")
    assert handler.flush(10)
    idents = set(handler._pipeline.thread_ids)
    threads = list(handler._pipeline.threads)
    assert len(idents) == len(threads) > 0
    handler.close(10)
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    reused = []

    def job() -> None:
        if threading.get_ident() in idents:
            reused.append(threading.get_ident())
            log.info("from a reused thread id")

    for _ in range(200):  # glibc hands a freed thread's id to the next thread at once
        t = threading.Thread(target=job)
        t.start()
        t.join(10)
        if reused:
            break
    assert reused, "no thread id was reused here"
    stats = handler.stats()
    assert_identity(stats)
    assert stats["dropped_total"] == 0, stats["dropped"]
    assert stats["by_table"]["logs"]["accepted"] == 2
