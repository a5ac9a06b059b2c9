"""Section 2 of the benchmark: start-up of a whole short process with the handler.

A ``python -c`` that configures SupabaseHandler, logs one record and ends (with
the fake transport, and delivering to the real gateway), against the same
process without the handler; the three kinds rotated, medians. The fake child
prints each delivery, and the parent counts the gateway's rows in PostgreSQL,
so a start-up that lost its record does not pass unnoticed.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _stack import Stack, child_env, progress

HERE = Path(__file__).resolve().parent

_START_BASE = """
import logging
log = logging.getLogger("job")
log.setLevel(logging.INFO)
log.info("fetched %d records", __N__, extra={"meta": {"count": __N__, "page": 3}})
"""

_START_FAKE = """
import sys
sys.path.insert(0, __BENCH__)
import _fakes
class Printed(_fakes.Delivery):
    def add(self, n):
        super().add(n)
        print("delivered", n, flush=True)
_fakes.inject_supabase_transport(Printed(), fake=True)
"""

_START_HANDLER = """
import logging
from supabase_log_handler import SupabaseHandler
log = logging.getLogger("job")
log.setLevel(logging.INFO)
log.addHandler(SupabaseHandler(url=__URL__, key=__KEY__))
log.info("fetched %d records", __N__, extra={"meta": {"count": __N__, "page": 3}})
"""


def _timed_child(code: str, cwd: Path) -> tuple[float, str]:
    env = child_env()
    # Measure what an installed package costs: modules load from cached bytecode.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"start-up child failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def measure_startup(stack: Stack, tmp: Path, runs: int) -> dict[str, Any]:
    cwd = tmp / "startup"  # no .env above it that the handler would read
    cwd.mkdir(exist_ok=True)
    token = 7_000_000 + int(time.time()) % 1_000_000  # this run's records in PostgreSQL

    def code(kind: str) -> str:
        n = repr(token)
        if kind == "baseline":
            return _START_BASE.replace("__N__", n)
        url = stack.gateway.url if kind == "gateway" else "http://127.0.0.1:9"
        body = _START_HANDLER.replace("__URL__", repr(url)).replace(
            "__KEY__", repr(stack.gateway.service_key)
        )
        body = body.replace("__N__", n)
        return (_START_FAKE.replace("__BENCH__", repr(str(HERE))) if kind == "fake" else "") + body

    kinds = ("baseline", "fake", "gateway")
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    fake_delivered: list[int] = []
    for k in kinds:  # warm-up: writes the bytecode caches, outside the figures
        _timed_child(code(k), cwd)
    for i in range(runs):
        for k in kinds[i % 3 :] + kinds[: i % 3]:  # rotate, so drift hits all alike
            wall, out = _timed_child(code(k), cwd)
            walls[k].append(wall)
            if k == "fake":
                fake_delivered.append(
                    sum(
                        int(line.split()[1])
                        for line in out.splitlines()
                        if line.startswith("delivered ")
                    )
                )
        progress(f"start-up: round {i + 1}/{runs}")
    stored = int(
        stack.fetchval(
            "select count(*) from logs where message = %s", (f"fetched {token} records",)
        )
    )
    med = {k: float(statistics.median(v)) * 1000 for k, v in walls.items()}
    return {
        "runs": runs,
        "baseline_ms": med["baseline"],
        "fake_ms": med["fake"],
        "gateway_ms": med["gateway"],
        "fake_extra_ms": med["fake"] - med["baseline"],
        "gateway_extra_ms": med["gateway"] - med["baseline"],
        "samples_ms": {k: [w * 1000 for w in v] for k, v in walls.items()},
        "fake_delivered": fake_delivered,
        "gateway_rows_stored": stored,
        "gateway_rows_expected": runs + 1,
    }
