"""Imported first thing (by a ``sitecustomize.py`` a test writes): the handlers' final ledger.

Its ``atexit`` function is registered before anything else in the process, so it
runs last, after the package's exit drain, and writes ``stats()`` of every
``SupabaseHandler`` of this process to ``$STATS_REPORT_DIR/<pid>.json``. A forked
child inherits it and reports its own handlers when it exits normally; a process
ended by a signal reports nothing.
"""

from __future__ import annotations

import atexit
import json
import os
import sys


def _report() -> None:
    directory = os.environ.get("STATS_REPORT_DIR")
    package = sys.modules.get("supabase_log_handler.lifecycle")
    if not directory or package is None:
        return
    stats = [h.stats() for h in package.handlers()]
    if not stats:
        return
    path = os.path.join(directory, f"{os.getpid()}.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"pid": os.getpid(), "stats": stats}, f, default=str)
    os.replace(path + ".tmp", path)


atexit.register(_report)
