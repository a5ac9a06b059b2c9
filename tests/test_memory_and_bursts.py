"""Memory is really bounded (the byte estimate covers extras), bursts beyond memory go to the
spool instead of being dropped, and finished runs are released."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_identity, last_json_line, run_script
from stack.fixtures import Db
from stack.gateway import Gateway

from supabase_log_handler import SupabaseHandler, context, start_run

MiB = 1024 * 1024


@pytest.mark.process
@pytest.mark.parametrize("spool", [False, True], ids=["spool-off", "spool-on"])
def test_records_with_200_kb_extras_stay_within_twice_the_memory_bound(
    gateway_faults: Gateway, supabase_env: dict[str, str], tmp_path: Path, spool: bool
) -> None:
    """400 records with a 200 KB value in their extras against an 8 MiB bound, backend down:
    traced memory stays within 2x the bound; with the spool nothing is dropped."""
    gateway_faults.stop()
    out = run_script(
        f"""
        import json, logging, tracemalloc
        from supabase_log_handler import SupabaseHandler
        h = SupabaseHandler(script_name="big-extras", spool={spool}, max_queue_bytes=8 * 1024 * 1024,
                            probe_interval_s=0.2, retry_deadline_s=0.3, request_timeout_s=0.5)
        logging.basicConfig(level=logging.INFO, handlers=[h])
        log = logging.getLogger("big")
        log.info("warm up")
        h.flush(5)  # the client is loaded and has failed once: the breaker is open
        blob = "x" * 200_000
        tracemalloc.start()
        for i in range(400):
            log.info("record %d", i, extra={{"meta": {{"blob": blob, "i": i}}}})
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        h.flush(5)
        print(json.dumps({{"peak": peak, "stats": h.stats()}}))
        """,
        {**supabase_env, "SUPABASE_LOG_SPOOL": str(tmp_path / "spool"),
         "SUPABASE_LOG_SHUTDOWN_TIMEOUT_S": "2"},
        timeout_s=300,
    )
    info = last_json_line(out.stdout)
    stats = info["stats"]
    assert info["peak"] <= 2 * 8 * MiB, info["peak"]
    assert_identity(stats)
    assert stats["by_table"]["logs"]["accepted"] == 401 + stats["drop_reports"]
    if spool:
        assert stats["dropped_total"] == 0, stats["dropped"]
    else:
        assert stats["dropped"]["queue_full"]["INFO"] > 0  # shed, and counted


@pytest.fixture
def slow_gateway(gateway_faults: Gateway) -> Iterator[Gateway]:
    gateway_faults.delay_response_s = 0.5
    yield gateway_faults
    gateway_faults.delay_response_s = 0.0


@pytest.mark.process
@pytest.mark.slow
def test_eight_threads_bursting_against_a_backend_answering_in_half_a_second_lose_nothing(
    slow_gateway: Gateway, db: Db, supabase_env: dict[str, str], tmp_path: Path
) -> None:
    """8 threads x 50,000 records, every answer 500 ms late, spool on: nothing dropped, and after
    replay PostgreSQL holds all 400,000 rows exactly once."""
    spool = tmp_path / "spool"
    env = {**supabase_env, "SUPABASE_LOG_SPOOL": str(spool), "SUPABASE_LOG_SHUTDOWN_TIMEOUT_S": "3"}
    out = run_script(
        """
        import atexit, json, logging, threading
        handlers = []
        # Registered before the package's own exit hook, so it runs after the exit drain.
        atexit.register(lambda: print(json.dumps({"stats": handlers[0].stats()}), flush=True))
        from supabase_log_handler import SupabaseHandler, context
        h = SupabaseHandler(script_name="burst-slow")
        handlers.append(h)
        logging.basicConfig(level=logging.INFO, handlers=[h])
        log = logging.getLogger("burst")
        log.info("start")

        def work(t):
            for i in range(50_000):
                log.info("t%d row %d", t, i)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(json.dumps({"run_id": context.current_run().id}), flush=True)
        """,
        env,
        timeout_s=600,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    run_id = next(v for v in map(_json, lines) if "run_id" in v)["run_id"]
    stats = last_json_line(out.stdout)["stats"]
    assert_identity(stats)
    assert stats["dropped_total"] == 0, stats["dropped"]
    assert stats["in_memory"] == 0
    slow_gateway.delay_response_s = 0.0
    push = subprocess.run(
        [sys.executable, "-m", "supabase_log_handler", "push", "--json"],
        env={**_clean_env(), **env}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert push.returncode == 0, push.stderr
    assert db.fetch(
        "select count(*), count(distinct message) from logs where run_id = %s", (run_id,)
    ) == [(400_001, 400_001)]


def test_twenty_thousand_runs_one_after_another_keep_memory_flat(
    make_handler: Callable[..., SupabaseHandler],
    attach: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """Opening and finishing 20,000 runs in one process leaves only bounded registries behind."""
    import tracemalloc

    handler = make_handler(url=None, key=None, sink="local", local_path=str(tmp_path / "l.db"))
    log = attach(handler)

    def runs(n: int) -> None:
        for i in range(n):
            with start_run("many-runs"):
                log.info("run %d", i)
        assert handler.flush(60)

    tracemalloc.start()
    runs(5_000)  # every bounded cache is full by now
    before = tracemalloc.take_snapshot()
    runs(15_000)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    # Flat: far below the ~1.2 KB per run a registry that kept every run would add (18 MB here).
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 1024 * 1024, after.compare_to(before, "lineno")[:10]
    open_runs, recent = context.sizes()
    assert open_runs == 0 and recent <= context.RECENT_RUNS_KEPT
    stats = handler.stats()
    assert_identity(stats)
    assert stats["by_table"]["logs"]["delivered"] == 20_000


def _json(line: str) -> dict[str, Any]:
    import json

    value: dict[str, Any] = json.loads(line)
    return value


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
