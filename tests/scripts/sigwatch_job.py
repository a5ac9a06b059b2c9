"""A fork child whose SIGTERM trips on another thread while its main thread waits on a
multiprocessing lock (as a pool worker waits for a task when Pool.terminate() signals it).

``sigwatch_job.py SECONDS`` (how long the parent waits for the child), or
``sigwatch_job.py SECONDS handled N``: the application's own SIGTERM handler is there
before ours, and the child sends itself N SIGTERMs whose handler runs at once; it
prints how often the application's handler ran and how often the watcher woke it.
``sigwatch_job.py SECONDS exiting``: the same handler, and the child is signalled as it
leaves, in multiprocessing's exit function before the package's drain; its 10 rows,
still in memory, must be stored.
``sigwatch_job.py SECONDS forkhook``: the application's handler (``sys.exit(0)``) is
there before ours, and the child is sent SIGTERM while it runs its at-fork hooks (as a
pool worker still starting when ``Pool.terminate()`` signals it); it must end."""

import logging
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import sys
import threading
import time

APP_CALLS = [0]
if sys.argv[2:3] == ["handled"]:  # the application's handler, installed before ours
    signal.signal(signal.SIGTERM, lambda s, f: APP_CALLS.__setitem__(0, APP_CALLS[0] + 1))
if sys.argv[2:3] in (["forkhook"], ["exiting"]):
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(0))

from supabase_log_handler import SupabaseHandler  # noqa: E402

handler = SupabaseHandler(script_name="sigwatch-job")
logging.basicConfig(level=logging.INFO, handlers=[handler])
log = logging.getLogger("job")


def child(lock: "multiprocessing.synchronize.Lock") -> None:
    log.info("child waiting")

    def trip() -> None:  # the signal's C handler runs here, not on the main thread
        time.sleep(0.3)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    threading.Thread(target=trip, daemon=True).start()
    lock.acquire()  # held by the parent forever: only a signal handler ends this wait


def handled_child(signals: int) -> None:
    from supabase_log_handler import _sigwatch

    log.info("child signalling itself")
    for i in range(1, signals + 1):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the watcher reads the byte
        while APP_CALLS[0] < i:
            pass
        counts = _sigwatch.wait_for_signals(i, 60)
        assert counts["signals"] == i, counts
    print("calls", APP_CALLS[0], "kicks", _sigwatch.wait_for_signals(signals, 60)["kicks"], flush=True)


def leaving_child() -> None:
    import multiprocessing.util

    for i in range(10):
        log.info("leaving %d", i)
    # Runs first among the exit function's finalizers, before the package's drain.
    multiprocessing.util.Finalize(None, os.kill, args=(os.getpid(), signal.SIGTERM), exitpriority=200)


def run_child(process: multiprocessing.process.BaseProcess) -> None:
    """Start the child, wait for it up to the deadline, say how it ended."""
    process.start()
    process.join(float(sys.argv[1]))
    print("exitcode", process.exitcode, flush=True)
    if process.exitcode is None:
        process.kill()


if __name__ == "__main__":
    log.info("parent")
    ctx = multiprocessing.get_context("fork")
    mode = sys.argv[2] if len(sys.argv) > 2 else "tripped"
    if mode == "exiting":
        run_child(ctx.Process(target=leaving_child))
    elif mode == "forkhook":
        lock = ctx.Lock()
        lock.acquire()
        os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGTERM))
        run_child(ctx.Process(target=lock.acquire))  # only the SIGTERM can end this child
    elif mode == "handled":
        run_child(ctx.Process(target=handled_child, args=(int(sys.argv[3]),)))
    else:
        lock = ctx.Lock()
        lock.acquire()
        run_child(ctx.Process(target=child, args=(lock,)))
