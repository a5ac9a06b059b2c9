"""A job for the many-processes and spool tests: ``python many_job.py TAG INDEX ROWS [--pause|--hold]``.

It attaches a ``SupabaseHandler`` (settings from the environment) to the root
logger, logs ROWS records ("TAG pINDEX row I") and ends by itself. With
``--pause`` it stops half way, waits until its sender has met the backend (a
retry or an open breaker: the test keeps it down meanwhile), prints
``{"half": ...}`` with what it met, and waits for a line on stdin (the test
brings the backend back meanwhile). With ``--hold`` it waits, once its records
are logged, until nothing is left in memory (all delivered or, with
``durability=disk`` and the backend down, in its spool segment), prints
``{"held": stats}`` and sleeps until it is killed. It prints JSON lines: the run id
once the records are logged, the handler's ``stats()`` after the package's exit
drain, and ``exitclock``'s report of how long the exit took.
"""

from __future__ import annotations  # noqa: I001

import exitclock  # first: its report runs last, after everything else at exit

import atexit
import json
import logging
import sys
import time

_handler: list[logging.Handler] = []


def _say(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _report() -> None:
    if _handler:
        _say({"stats": _handler[0].stats()})  # type: ignore[attr-defined]


atexit.register(_report)  # before the package's exit hook: so it runs after it

from supabase_log_handler import SupabaseHandler, context  # noqa: E402


def _met_backend(handler: SupabaseHandler) -> dict[str, object]:
    deadline = time.monotonic() + 60
    stats = handler.stats()
    while not (stats["retries"] or stats["breaker_open"]) and time.monotonic() < deadline:
        time.sleep(0.01)
        stats = handler.stats()
    return {"retries": stats["retries"], "breaker_open": stats["breaker_open"]}


def main() -> None:
    tag, index, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    pause = "--pause" in sys.argv[4:]
    hold = "--hold" in sys.argv[4:]
    handler = SupabaseHandler(script_name=f"many-{tag}")
    _handler.append(handler)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    log = logging.getLogger("many")
    for i in range(rows):
        if pause and i == rows // 2:
            _say({"half": _met_backend(handler)})
            sys.stdin.readline()
        log.info("%s p%d row %d", tag, index, i)
    run = context.current_run()
    assert run is not None
    _say({"run_id": run.id, "logged": rows})
    if hold:
        deadline = time.monotonic() + 120
        while handler.stats()["in_memory"] and time.monotonic() < deadline:
            time.sleep(0.01)
        _say({"held": handler.stats()})
        time.sleep(600)  # until the test kills it
    exitclock.start()  # the job's work is done: from here on it is the exit


if __name__ == "__main__":
    main()
