"""A fork child whose SIGTERM trips on another thread while its main thread waits on a
multiprocessing lock (as a pool worker waits for a task when Pool.terminate() signals it).

Argument: how long the parent waits for the child, in seconds."""

import logging
import multiprocessing
import signal
import sys
import threading
import time

from supabase_log_handler import SupabaseHandler

handler = SupabaseHandler(script_name="sigwatch-job")
logging.basicConfig(level=logging.INFO, handlers=[handler])
log = logging.getLogger("job")


def child(lock) -> None:
    log.info("child waiting")

    def trip() -> None:  # the signal's C handler runs here, not on the main thread
        time.sleep(0.3)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    threading.Thread(target=trip, daemon=True).start()
    lock.acquire()  # held by the parent forever: only a signal handler ends this wait


if __name__ == "__main__":
    log.info("parent")
    ctx = multiprocessing.get_context("fork")
    lock = ctx.Lock()
    lock.acquire()
    p = ctx.Process(target=child, args=(lock,))
    p.start()
    p.join(float(sys.argv[1]))
    print("exitcode", p.exitcode, flush=True)
    if p.exitcode is None:
        p.kill()
