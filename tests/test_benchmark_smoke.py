"""Smoke tests of the benchmark's instruments (benchmarks/): tiny sizes, no timing assertions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
SUBJECTS = ("null", "queue", "otel", "watchtower", "supabase-fake", "supabase-gateway")

pytestmark = pytest.mark.timeout(240)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}


def _positive(section: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = section[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
        assert value > 0, (key, value)


def test_bench_quick_measures_every_handler_and_renders_the_readme_table(tmp_path: Path) -> None:
    """`bench.py --quick` measures all six handlers, start-up and outage, loses nothing, and
    `--markdown` renders a README row per handler from the saved JSON."""
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench.py"), "--quick", "--output", str(out)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=220,
    )
    result = json.loads(out.read_text())
    assert "error" not in result and "cleanup_problems" not in result, proc.stderr[-3000:]
    # Exit status 1 is for what the handler did (records it lost), which bench.py lists;
    # this test is about the instruments.
    assert proc.returncode == (1 if result["problems"] else 0), proc.stderr[-3000:]

    delivery = result["delivery"]
    assert tuple(delivery["handlers"]) == SUBJECTS
    for name, runs in delivery["runs"].items():
        (run,) = runs  # one fresh child per handler in --quick
        assert run["warmed_up"] is True, name
        calls = run["calls"]
        _positive(calls, "caller_wall_ns_per_call", "caller_cpu_ns_per_call", "p999_ns")
        _positive(calls, "process_cpu_ns_per_record", "records_per_s")
        assert calls["calls"] == delivery["calls"] and calls["requests"] > 0, name
        if not name.startswith("supabase"):  # the peers keep every record at this size
            assert calls["delivered"] == calls["calls"], name
        burst = run["burst"]
        assert burst["calls"] == delivery["burst"] == 5 * delivery["queue_rows"]
        for phase in (calls, burst):  # the sizes of the requests add up to what was delivered
            assert phase["rows_per_request_mean"] * phase["requests"] == pytest.approx(phase["delivered"])
            assert 1 <= phase["rows_per_request_median"] <= (500 if name.startswith("supabase") else 10**6)
        assert burst["delivered"] > 0, name
        assert run["peak_rss_bytes"] >= run["rss_ready_bytes"] > 0, name
    gateway_run = delivery["runs"]["supabase-gateway"][0]
    sent = gateway_run["calls"]["delivered"] + gateway_run["burst"]["delivered"]
    # The counting transport sees every row PostgreSQL stored (a row sent twice counts twice).
    assert 0 < gateway_run["db_rows"] <= sent + gateway_run["warmup"]
    assert delivery["runs"]["supabase-fake"][0]["injected_via"] in (
        "sinks.rest.transport_factory",
        "httpx.Client.__init__",
    )
    ratio = delivery["handlers"]["queue"]["calls"]["x_queue"]["caller_wall_ns_per_call"]
    assert ratio["median"] == 1.0  # QueueHandler against itself, round by round

    startup = result["startup"]
    _positive(startup, "baseline_ms", "fake_ms", "gateway_ms")
    assert startup["fake_delivered"] == [1] * startup["runs"]
    assert startup["gateway_rows_stored"] == startup["gateway_rows_expected"]
    assert result["outage"]["gateway_restarted_status"] == 200

    markdown = subprocess.run(
        [sys.executable, str(BENCH / "bench.py"), "--markdown", str(out)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(SUBJECTS)  # the header and one row per handler
    assert delivery["call"] in markdown


def test_gateway_bench_stores_every_upserted_row() -> None:
    """`gateway_bench.py` sends 500-row upserts through the gateway process and counts them in SQL."""
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "gateway_bench.py"),
            "--requests",
            "3",
            "--repeats",
            "2",
            "--json",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rows_per_request"] == 500 and len(result["rows_per_s"]) == 2
    assert all(rate > 0 for rate in result["rows_per_s"])
