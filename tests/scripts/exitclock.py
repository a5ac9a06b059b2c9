"""For child processes whose exit time a test checks: import this first thing.

``exitclock.start()`` (call it where the job's own work ends) notes the time; an
``atexit`` function registered before the handler is imported runs after the
handler's exit drain and prints one JSON line: how long the exit took, and how
much of it the machine's other work took from us (the run-queue delay summed over
every CPU, divided by the CPUs, from ``/proc/schedstat``; where the kernel does not
offer that file, as in some virtual machines, the time during which runnable tasks
waited for a CPU, from ``/proc/pressure/cpu``). A test then holds the
exit to its deadline plus one second, minus what a busy machine cost: a
deadline the code overran fails, a machine that was busy does not.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time

_marks: dict[str, float] = {}


def _machine_delay_s() -> float:
    try:
        total = 0
        cpus = 0
        with open("/proc/schedstat") as f:
            for line in f:
                if line.startswith("cpu"):
                    fields = line.split()
                    total += int(fields[8])  # ns tasks waited to run on this CPU
                    cpus += 1
        return total / 1e9 / max(cpus, 1)
    except (OSError, ValueError, IndexError):
        return _cpu_pressure_s()


def _cpu_pressure_s() -> float:
    """Seconds during which some runnable task waited for a CPU (pressure stall information)."""
    try:
        with open("/proc/pressure/cpu") as f:
            for line in f:
                if line.startswith("some "):
                    return int(line.rsplit("total=", 1)[1]) / 1e6  # microseconds
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def start() -> None:
    _marks["t0"] = time.monotonic()
    _marks["d0"] = _machine_delay_s()


def _report() -> None:
    if "t0" not in _marks:
        return
    took = time.monotonic() - _marks["t0"]
    busy = _machine_delay_s() - _marks["d0"]
    sys.stdout.write(json.dumps({"exit_s": took, "machine_busy_s": busy, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()


atexit.register(_report)


def within(report: dict[str, float], deadline_s: float) -> bool:
    """True when the exit took at most its deadline + 1 s, not counting the machine's other work."""
    return report["exit_s"] - report["machine_busy_s"] <= deadline_s + 1.0
