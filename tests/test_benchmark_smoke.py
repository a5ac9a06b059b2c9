"""Smoke test of the benchmark command (benchmarks/bench.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _positive(section: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = section[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
        assert value > 0, (key, value)


def test_benchmark_quick_json_reports_every_section() -> None:
    """`bench.py --quick --json` runs every section with positive numbers and a matching SQL count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in result and "cleanup_problems" not in result, result

    caller = result["caller_cost"]
    assert {"null", "queue", "supabase"} <= set(caller["handlers"])
    for row in caller["handlers"].values():
        _positive(
            row, "wall_ns_per_call", "cpu_ns_per_call", "wall_ratio_vs_queue", "cpu_ratio_vs_queue"
        )
        assert row["flush_failures"] == 0
    _positive(caller["target"], "cpu_ratio", "wall_ratio")

    _positive(
        result["startup"],
        "import_logging_ms",
        "import_handler_ms",
        "construct_ms",
        "import_plus_construct_ms",
        "process_wall_logging_ms",
        "process_wall_handler_ms",
    )

    e2e = result["end_to_end"]
    _positive(e2e, "rows", "rows_per_s", "log_post_requests", "avg_rows_per_request", "db_count")
    assert e2e["flushed"] is True
    assert e2e["count_matched"] is True and e2e["db_count"] == e2e["rows"]

    outage = result["outage"]
    _positive(
        outage,
        "records",
        "bound_bytes",
        "tracemalloc_peak_bytes",
        "rss_growth_bytes",
        "dropped_total",
    )
    assert outage["gateway_restarted_status"] == 200
