"""Rendering of a benchmark result: the plain-text report and the README's markdown table.

Both read only the JSON that ``bench.py`` writes, so a saved result
(benchmarks/results/*.json) can be rendered again at any time:
``python benchmarks/bench.py --markdown [PATH]``.
"""

from __future__ import annotations

from typing import Any

from _memory import render_outage

MiB = 1024 * 1024


def _us(ns: float) -> str:
    us = ns / 1000
    return f"{us:,.0f}" if us >= 100 else f"{us:.1f}"


def _rate(v: float) -> str:
    return f"{v:,.0f}"


def _x(row: dict[str, Any], phase: str, key: str) -> str:
    ratio = row.get(phase, {}).get("x_queue", {}).get(key)
    return f"{ratio['median']:.2f}" if ratio else "-"


def _settled(phase: dict[str, Any]) -> str:
    """Median records per child that the handler dropped, or that vanished uncounted."""
    parts = []
    if phase["dropped"]["max"]:
        parts.append(f"{phase['dropped']['median']:,.0f} dropped")
    if phase["lost"]["max"]:
        parts.append(f"{phase['lost']['median']:,.0f} lost uncounted")
    return ", ".join(parts) or "all delivered"


SUMMARY_HEAD = [
    "handler",
    "caller wall us/call",
    "x QueueHandler",
    "caller CPU us/call",
    "p99 us",
    "p99.9 us",
    "process CPU us/record",
    "x QueueHandler",
    "records/s delivered",
    "records per request (steady / burst)",
    "burst drain s",
    "peak RSS MiB",
]


def _summary_cells(h: dict[str, Any]) -> list[str]:
    """One handler's row of the summary table (text report and README alike)."""
    c = h["calls"]
    b = h.get("burst")
    drain = f"{b['drain_s']['median']:.2f}" if b else "-"
    if b and (b["dropped"]["max"] or b["lost"]["max"]):
        drain += f" ({_settled(b)})"
    return [
        h["label"],
        _us(c["caller_wall_ns_per_call"]["median"]),
        _x(h, "calls", "caller_wall_ns_per_call"),
        _us(c["caller_cpu_ns_per_call"]["median"]),
        _us(c["p99_ns"]["median"]),
        _us(c["p999_ns"]["median"]),
        _us(c["process_cpu_ns_per_record"]["median"]),
        _x(h, "calls", "process_cpu_ns_per_record"),
        _rate(c["records_per_s"]["median"]),
        _per_request(c, b),
        drain,
        f"{h['peak_rss_bytes']['median'] / MiB:.0f}",
    ]


def _per_request(calls: dict[str, Any], burst: dict[str, Any] | None) -> str:
    """Median records per request (per batch handed to the exporter), steady and in the burst."""
    cells = [f"{p['rows_per_request_median']['median']:,.0f}" if p and "rows_per_request_median" in p else "-"
             for p in (calls, burst)]  # fmt: skip
    return " / ".join(cells)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = [f"{h:<{widths[0]}}" if i == 0 else f"{h:>{widths[i]}}" for i, h in enumerate(head)]
    out = ["   " + "  ".join(fmt)]
    for r in rows:
        cells = [f"{c:<{widths[0]}}" if i == 0 else f"{c:>{widths[i]}}" for i, c in enumerate(r)]
        out.append("   " + "  ".join(cells))
    return out


def render_text(res: dict[str, Any]) -> str:
    out: list[str] = []
    cfg = res["config"]
    versions = ", ".join(f"{k} {v}" for k, v in cfg.get("versions", {}).items())
    out.append("supabase_log_handler benchmark")
    out.append(
        f"  python {cfg['python']} on {cfg['platform']}, {cfg['cpus']} CPUs"
        + ("; --quick" if cfg["quick"] else "")
    )
    out.append(f"  {versions}")
    out.append("  (numbers from this run on this machine; compare within one run)")

    d = res.get("delivery")
    if d:
        hs = d["handlers"]
        out.append("")
        out.append(f"1. Delivery cost of {d['call']}")
        out.append(
            f"   {d['calls']:,} calls per child, then a burst of {d['burst']:,} (5x a queue of"
            f" {d['queue_rows']:,}); {d['repeats']} fresh child(ren) per handler, interleaved;"
            " medians over children"
        )
        rows = [[*_summary_cells(h), _settled(h["calls"])] for h in hs.values()]
        out += _table([*SUMMARY_HEAD, "calls phase"], rows)
        out.append("")
        out.append(f"   Burst of {d['burst']:,} records at full speed, after the calls phase:")
        rows = []
        for h in hs.values():
            b = h.get("burst")
            if not b:
                continue
            rows.append(
                [
                    h["label"],
                    _us(b["process_cpu_ns_per_record"]["median"]),
                    _x(h, "burst", "process_cpu_ns_per_record"),
                    _rate(b["records_per_s"]["median"]),
                    f"{b['drain_s']['median']:.2f}",
                    _us(b["p999_ns"]["median"]),
                    _settled(b),
                ]
            )
        if rows:
            out += _table(
                [
                    "handler",
                    "proc CPU us/rec",
                    "xQH",
                    "delivered rec/s",
                    "drain s",
                    "p99.9 us",
                    "burst",
                ],
                rows,
            )
        out.append("")
        out.append("   Spread over children (min-max):")
        rows = []
        for h in hs.values():
            c = h["calls"]

            def span(
                key: str, scale: float = 1000.0, fmt: str = "{:.1f}", c: dict[str, Any] = c
            ) -> str:
                v = c[key]
                return f"{fmt.format(v['min'] / scale)}-{fmt.format(v['max'] / scale)}"

            rows.append(
                [
                    h["label"],
                    span("caller_wall_ns_per_call"),
                    span("caller_cpu_ns_per_call"),
                    span("p999_ns", fmt="{:,.0f}"),
                    span("process_cpu_ns_per_record"),
                    span("records_per_s", scale=1.0, fmt="{:,.0f}"),
                ]
            )
        out += _table(
            ["handler", "wall us/call", "CPU us/call", "p99.9 us", "proc CPU us/rec", "rec/s"], rows
        )

    s = res.get("startup")
    if s:
        out.append("")
        out.append(
            f"2. Start-up: whole `python -c` that configures the handler, logs one record and"
            f" ends (median of {s['runs']})"
        )
        out.append(f"   without the handler            {s['baseline_ms']:8.1f} ms")
        out.append(
            f"   with the handler, fake transport {s['fake_ms']:6.1f} ms  (+{s['fake_extra_ms']:.1f} ms)"
        )
        out.append(
            f"   with the handler, real gateway {s['gateway_ms']:8.1f} ms  (+{s['gateway_extra_ms']:.1f} ms)"
        )
        out.append(
            f"   rows stored through the gateway: {s['gateway_rows_stored']} of"
            f" {s['gateway_rows_expected']}; fake deliveries per process: {s['fake_delivered']}"
        )

    o = res.get("outage")
    if o:
        out.append("")
        out += render_outage(o)

    for problem in res.get("problems", []):
        out.append(f"PROBLEM: {problem}")
    if res.get("error"):
        out.append("")
        out.append(f"ERROR: {res['error']}")
    if res.get("cleanup_problems"):
        out.append(f"cleanup problems: {res['cleanup_problems']}")
    return "\n".join(out)


def render_markdown(res: dict[str, Any]) -> str:
    """The README's performance table (and the lines that say what was measured)."""
    d = res["delivery"]
    cfg = res["config"]
    lines = [
        f"Measured with `{d['call']}`: {d['calls']:,} calls per process, then a burst of"
        f" {d['burst']:,} records (5x a queue of {d['queue_rows']:,}); {d['repeats']} fresh"
        f" processes per handler, interleaved; medians. Python {cfg['python']},"
        f" {cfg['cpus']} CPUs. `bench.py --markdown` regenerates this table.",
        "",
        "| " + " | ".join(SUMMARY_HEAD) + " |",
        "|" + "---|" * len(SUMMARY_HEAD),
    ]
    lines += ["| " + " | ".join(_summary_cells(h)) + " |" for h in d["handlers"].values()]
    s = res.get("startup")
    if s:
        lines.append("")
        lines.append(
            f"Start-up (a whole `python -c` that configures the handler, logs one record and"
            f" ends, minus the same process without the handler, median of {s['runs']}):"
            f" +{s['fake_extra_ms']:.0f} ms with the fake transport,"
            f" +{s['gateway_extra_ms']:.0f} ms delivering to the gateway."
        )
    return "\n".join(lines)
