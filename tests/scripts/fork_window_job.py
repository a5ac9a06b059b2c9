"""A parent whose spool segment is open, fully replayed, when it forks a child that is
sent SIGTERM during its at-fork hooks: ``python fork_window_job.py TAG``.

Steps, each after a line on stdin (the test changes the backend in between): log 50
rows while the backend is down (spooled), flush again once it is up (replayed: the
open segment is now empty), then, down again, fork a child (plain ``os.fork``) that
is signalled from an at-fork hook registered before the package was imported, and
log 50 more rows. The child must not touch the parent's spool: everything the
parent logged reaches PostgreSQL once ``push`` runs. Prints JSON lines.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time

ARMED = [False]


def _signal_child() -> None:  # runs in the child, before the package's own at-fork hooks
    if ARMED[0]:
        os.kill(os.getpid(), signal.SIGTERM)


os.register_at_fork(after_in_child=_signal_child)

from supabase_log_handler import SupabaseHandler, context  # noqa: E402


def say(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def step(name: str) -> None:
    say({"step": name})
    if sys.stdin.readline().strip() != "go":
        sys.exit(4)


def main() -> None:
    tag = sys.argv[1]
    handler = SupabaseHandler(script_name=f"fork-window-{tag}")
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    log = logging.getLogger("fork_window")
    for i in range(50):
        log.info("%s before %d", tag, i)
    handler.flush(30)
    run = context.current_run()
    assert run is not None
    say({"run_id": run.id, "spooled": handler.stats()["spooled_pending"]})
    step("spooled")  # the test starts the backend
    deadline = time.monotonic() + 60
    while handler.stats()["spooled_pending"] and time.monotonic() < deadline:
        handler.flush(1)  # replays this process's own segment once the backend answers
    say({"replayed": handler.stats()["spooled_pending"]})
    step("replayed")  # the test stops the backend
    ARMED[0] = True
    pid = os.fork()
    if pid == 0:  # the held SIGTERM ends this child here, by its handler
        os._exit(7)
    ARMED[0] = False
    _, status = os.waitpid(pid, 0)
    say({"child": os.waitstatus_to_exitcode(status)})
    for i in range(50):
        log.info("%s after %d", tag, i)
    say({"stats": handler.stats()})


if __name__ == "__main__":
    main()
