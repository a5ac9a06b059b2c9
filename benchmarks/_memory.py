"""Section 3 of the benchmark: peak memory of SupabaseHandler during a sustained outage.

The parent side: starts ``_outage.py`` twice (once for RSS, once under
tracemalloc), stops the gateway while the child logs, restarts it, and sums up
the two runs against the bound ``max_queue_bytes`` + allowance.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _stack import LineChannel, Stack, progress

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024


def _b(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


def _gateway_answers(stack: Stack) -> int | str:
    gw = stack.gateway
    req = urllib.request.Request(
        gw.url + "/rest/v1/logs?select=id&limit=1",
        headers={"apikey": gw.service_key, "Authorization": f"Bearer {gw.service_key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError as exc:
        return f"no answer: {exc}"


def measure_outage(
    stack: Stack,
    tmp: Path,
    records: int,
    cleanup: Callable[[str, Callable[[], Any]], Callable[[], None]],
) -> dict[str, Any]:
    """Run the outage child in both modes; ``cleanup(name, fn)`` registers a clean-up step."""
    from supabase_log_handler.config import FIELDS

    max_rows, max_bytes = 20_000, 8 * MiB
    batch_bytes = int(FIELDS["max_batch_bytes"].default)
    fixed = 4 * MiB
    allowance = 3 * batch_bytes + fixed
    bound = max_bytes + allowance
    cfg = {
        "url": stack.gateway.url,
        "key": stack.gateway.service_key,
        "records": records,
        "max_queue_rows": max_rows,
        "max_queue_bytes": max_bytes,
        "settle_s": 0.5,
        "close_timeout_s": 3.0,
    }
    results: dict[str, Any] = {}
    for mode in ("rss", "tracemalloc"):
        chan = LineChannel(
            [sys.executable, str(HERE / "_outage.py"), json.dumps({**cfg, "mode": mode})],
            cwd=str(tmp),
        )
        stop_chan = cleanup(f"outage child ({mode})", lambda c=chan: c.close(10.0))
        stopped = False
        try:
            ready = chan.recv(90.0)
            if ready.get("event") != "ready":
                raise RuntimeError(f"outage child: {ready}")
            stack.gateway.stop()
            stopped = True
            chan.send("go")
            result = chan.recv(60.0 + records * 0.0005)
            if result.get("event") != "result":
                raise RuntimeError(f"outage child: {result}")
            results[mode] = result
        finally:
            if stopped:
                stack.gateway.start()
            stop_chan()
        progress(f"outage: {mode} run done")

    rss, tm = results["rss"], results["tracemalloc"]
    peak = int(tm["tracemalloc_peak_bytes"])
    rss_growth = int(rss["rss_growth_bytes"])
    # stats()["dropped"]: counts by level, or (since the ledger) by reason, then level.
    dropped: dict[str, int] = {}
    for key, value in rss["stats_during"].get("dropped", {}).items():
        for level, n in value.items() if isinstance(value, dict) else [(key, value)]:
            dropped[level] = dropped.get(level, 0) + n
    return {
        "records": records,
        "level_mix_percent": {"DEBUG": 30, "INFO": 60, "WARNING": 9, "ERROR": 1},
        "max_queue_rows": max_rows,
        "max_queue_bytes": max_bytes,
        "allowance_bytes": allowance,
        "allowance_rule": f"3 x max_batch_bytes ({batch_bytes}) + {fixed // MiB} MiB fixed",
        "bound_bytes": bound,
        "tracemalloc_peak_bytes": peak,
        "rss_growth_bytes": rss_growth,
        "rss_growth_method": rss["rss_growth_method"],
        "within_bound_tracemalloc": peak <= bound,
        "within_bound_rss": rss_growth <= bound,
        "log_s": rss["log_s"],
        "log_s_with_tracemalloc": tm["log_s"],
        "max_queue_rows_seen": rss["max_queue_rows_seen"],
        "max_queue_accounted_bytes_seen": rss["max_queue_accounted_bytes_seen"],
        "traced_bytes_per_queued_row": peak / max(tm["max_queue_rows_seen"], 1),
        "dropped_by_level": dropped,
        "dropped_total": sum(dropped.values()),
        "lost_after_close": _lost_at_close(rss["stats_during"], rss["stats_after_close"]),
        "sent_during_outage": rss["stats_during"].get(
            "delivered", rss["stats_during"].get("sent", 0)
        ),
        "closed_in_time": rss["closed_in_time"],
        "close_s": rss["close_s"],
        "runs": results,
        "gateway_restarted_status": _gateway_answers(stack),
    }


def _lost_at_close(during: dict[str, Any], after: dict[str, Any]) -> int:
    """Rows close() could neither send nor spool: ``stats()["lost"]`` (0.1.0), or what
    ``dropped_total`` grew by during the close (the ledger's stats)."""
    if "dropped_total" in after:
        return int(after["dropped_total"]) - int(during.get("dropped_total", 0))
    return int(after.get("lost", 0))


def render_outage(o: dict[str, Any]) -> list[str]:
    out: list[str] = []
    out.append("")
    out.append(
        f"3. Peak memory, sustained outage, spool=False, max_queue_rows={o['max_queue_rows']:,}, "
        f"max_queue_bytes={_b(o['max_queue_bytes'])}"
    )
    mix = ", ".join(f"{k} {v}%" for k, v in o["level_mix_percent"].items())
    out.append(f"   {'records logged':<30}{o['records']:,} ({mix}) in {o['log_s']:.2f} s")
    out.append(
        f"   {'bound':<30}{_b(o['bound_bytes'])} = {_b(o['max_queue_bytes'])} queue + "
        f"{_b(o['allowance_bytes'])} allowance ({o['allowance_rule']})"
    )
    out.append(
        f"   {'tracemalloc peak':<30}{_b(o['tracemalloc_peak_bytes'])}  "
        f"{'within bound' if o['within_bound_tracemalloc'] else 'EXCEEDS bound'}"
    )
    out.append(
        f"   {'RSS growth':<30}{_b(o['rss_growth_bytes'])}  "
        f"{'within bound' if o['within_bound_rss'] else 'EXCEEDS bound'} ({o['rss_growth_method']})"
    )
    out.append(
        f"   {'queue at its fullest':<30}{o['max_queue_rows_seen']:,} rows, "
        f"{_b(o['max_queue_accounted_bytes_seen'])} accounted; "
        f"{o['traced_bytes_per_queued_row']:,.0f} traced bytes per queued row"
    )
    dropped = ", ".join(f"{k} {v:,}" for k, v in sorted(o["dropped_by_level"].items())) or "none"
    out.append(f"   {'dropped (stats)':<30}{o['dropped_total']:,}: {dropped}")
    out.append(
        f"   {'lost at close (no spool)':<30}{o['lost_after_close']:,}; close took {o['close_s']:.2f} s "
        f"(in time: {o['closed_in_time']})"
    )
    out.append(f"   {'gateway restarted':<30}answers {o['gateway_restarted_status']}")
    verdict = o["within_bound_tracemalloc"] and o["within_bound_rss"]
    out.append(f"   verdict: {'stayed within' if verdict else 'did NOT stay within'} the bound")
    return out
