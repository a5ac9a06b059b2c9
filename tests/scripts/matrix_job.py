"""A job for the fault matrix: ``python matrix_job.py SHAPE ENDING TAG``.

SHAPE   main | threads8 | fork_pool_logged | fork_pool_silent | spawn_pool
ENDING  script_ends | sys_exit | uncaught | close | logging_shutdown |
        sigterm_app_handler | sigterm_default | sigkill_disk

It attaches the handler to the root logger (settings from the environment), logs
its records (every message starts with TAG), then ends as ENDING says. It prints
JSON lines: ``{"run_id", "logged"}`` once the records are logged (and, for the
signal endings, once the worker has taken them: the test then sends the signal),
and, when the process ends by itself, the handler's ``stats()`` after the exit
drain (an ``atexit`` function registered before the package is imported runs
after the package's own).
"""

from __future__ import annotations

import atexit
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time

PER_UNIT = 60  # records per thread or pool worker
MAIN_RECORDS = 150
_handler: list[logging.Handler] = []


def _say(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _report() -> None:
    if _handler:
        _say({"stats": _handler[0].stats()})  # type: ignore[attr-defined]


atexit.register(_report)  # before the package's own exit hook: so it runs after it

from supabase_log_handler import SupabaseHandler, context, pool_options  # noqa: E402


def work(unit: int) -> int:
    log = logging.getLogger("matrix.worker")
    tag = os.environ["MATRIX_TAG"]
    for i in range(PER_UNIT):
        log.info("%s worker %d row %d", tag, unit, i)
    return unit


def main() -> None:
    shape, ending, tag = sys.argv[1], sys.argv[2], sys.argv[3]
    os.environ["MATRIX_TAG"] = tag
    if ending == "sigterm_app_handler":  # the application's own handler, there before ours
        signal.signal(signal.SIGTERM, lambda s, f: sys.exit(0))
    handler = SupabaseHandler(script_name=f"matrix-{tag}")
    _handler.append(handler)
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    log = logging.getLogger("matrix")
    logged = 0
    if shape == "main":
        for i in range(MAIN_RECORDS):
            log.info("%s main row %d", tag, i, extra={"meta": {"i": i}})
        logged = MAIN_RECORDS
    elif shape == "threads8":
        threads = [threading.Thread(target=work, args=(u,)) for u in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        logged = 8 * PER_UNIT
    elif shape.startswith("fork_pool"):
        if shape == "fork_pool_logged":
            log.info("%s parent before the pool", tag)
            logged += 1
        with multiprocessing.get_context("fork").Pool(4) as pool:
            assert sorted(pool.map(work, range(4))) == [0, 1, 2, 3]
        logged += 4 * PER_UNIT
    elif shape == "spawn_pool":
        log.info("%s parent before the pool", tag)
        with multiprocessing.get_context("spawn").Pool(2, **pool_options()) as pool:
            assert sorted(pool.map(work, range(2))) == [0, 1]
        logged = 1 + 2 * PER_UNIT
    run = context.current_run()
    assert run is not None
    _say({"run_id": run.id, "logged": logged})
    end(ending, handler, log, tag)


def end(ending: str, handler: SupabaseHandler, log: logging.Logger, tag: str) -> None:
    if ending == "sys_exit":
        sys.exit(3)
    if ending == "uncaught":
        raise RuntimeError(f"{tag} boom")
    if ending == "close":
        handler.close()
        log.info("%s after close", tag)  # kept, and settled at exit
    elif ending == "logging_shutdown":
        logging.shutdown()
        log.info("%s after shutdown", tag)
    elif ending.startswith("sig"):
        deadline = time.monotonic() + 60
        while handler.stats()["in_memory"] and time.monotonic() < deadline:
            time.sleep(0.01)
        _say({"ready": True, "in_memory": handler.stats()["in_memory"]})
        time.sleep(120)  # until the signal


if __name__ == "__main__":
    main()
