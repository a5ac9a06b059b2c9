"""Smoke test of benchmarks/call_cost.py (what recording a call costs the job)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_call_cost_benchmark_reports_both_sections() -> None:
    """`call_cost.py --json` times record_call and the three httpx clients with positive numbers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "call_cost.py"), "--calls", "200",
         "--requests", "30", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    timed = {
        "record_call": ("calls", "median_us", "p95_us"),
        "httpx": ("requests", "plain_median_us", "instrumented_median_us",
                  "instrumented_payloads_median_us"),
    }  # fmt: skip
    for section, keys in timed.items():
        for key in keys:
            value = result[section][key]
            assert isinstance(value, (int, float)) and value > 0, (section, key, value)
