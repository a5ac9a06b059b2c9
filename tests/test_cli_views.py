"""`runs`, `logs`, `errors`, `stats` and `tail` against known data, in Supabase and in the local store."""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from stack.fixtures import FreshStack

from supabase_log_handler.cli import main
from supabase_log_handler.cli._common import select_all
from supabase_log_handler.sinks import Sink
from supabase_log_handler.sinks.local import LocalSink
from supabase_log_handler.sinks.rest import SupabaseSink

NOW = dt.datetime.now(dt.timezone.utc)


def ago(**delta: float) -> str:
    return (NOW - dt.timedelta(**delta)).isoformat()


def run_row(rid: str, script: str, status: str, started: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "script_name": script,
        "status": status,
        "started_at": started,
        "triggered_by": "cron",
        "metadata": {},
        **extra,
    }


def log_row(lid: str, rid: str, when: str, level: str, step: str, message: str) -> dict[str, Any]:
    return {
        "id": lid,
        "run_id": rid,
        "timestamp": when,
        "level": level,
        "step": step,
        "message": message,
        "meta": {"k": lid[-2:]},
    }


def uid(n: int) -> str:
    return f"00000000-0000-7000-8000-{n:012d}"


A, B, C, D, E = (uid(i) for i in range(1, 6))
RUNS = [
    run_row(
        A,
        "alpha",
        "success",
        ago(hours=2),
        finished_at=ago(hours=2, seconds=-1.5),
        duration_ms=1500,
        records_fetched=10,
        records_inserted=4,
        records_updated=6,
    ),
    run_row(
        B,
        "alpha",
        "error",
        ago(minutes=30),
        finished_at=ago(minutes=29),
        duration_ms=500,
        error_message="RuntimeError: VAPI returned 502\nmore detail",
        records_fetched=5,
    ),
    run_row(C, "beta", "running", ago(minutes=5)),
    run_row(
        D,
        "alpha",
        "success",
        ago(days=3),
        finished_at=ago(days=3),
        duration_ms=2500,
        records_fetched=1,
    ),
    run_row(E, "beta", "success", ago(days=10), finished_at=ago(days=10), duration_ms=100),
]
LOGS = [
    log_row(uid(101), A, ago(hours=2), "DEBUG", "LOG", "debug detail"),
    log_row(uid(102), A, ago(hours=2, seconds=-1), "INFO", "END", "done"),
    log_row(uid(103), B, ago(minutes=30), "INFO", "FETCH", "fetched 5"),
    log_row(uid(104), B, ago(minutes=29, seconds=30), "WARNING", "FETCH", "slow page"),
    log_row(uid(105), B, ago(minutes=29), "ERROR", "SAVE", "save failed"),
    log_row(uid(106), C, ago(minutes=5), "INFO", "START", "starting"),
    log_row(uid(107), D, ago(days=3), "ERROR", "PROCESS", "old error"),
]


class Backend(NamedTuple):
    name: str
    sink: Sink
    env: dict[str, str]


@pytest.fixture(params=["supabase", "local"])
def backend(
    request: pytest.FixtureRequest,
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Backend]:
    """The known runs and logs, written to a fresh Supabase database or to a local store; env points the CLI at it."""
    env = {
        "SUPABASE_LOG_LOCAL_DB": str(tmp_path / "local.sqlite3"),
        "SUPABASE_LOG_SPOOL": str(tmp_path / "spool"),
    }
    sink: Sink
    if request.param == "supabase":
        gw, _ = fresh_gateway()
        env.update(SUPABASE_URL=gw.url, SUPABASE_SERVICE_ROLE_KEY=gw.service_key)
        sink = SupabaseSink(gw.url, gw.service_key)
    else:
        sink = LocalSink(tmp_path / "local.sqlite3")
    for row in RUNS:
        sink.upsert_run("runs", row, final=True)
    sink.insert_rows("logs", LOGS)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    yield Backend(request.param, sink, env)
    sink.close()


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def parse_table(text: str) -> list[dict[str, str]]:
    """Rows of an aligned table, cut at the header's column starts (so misalignment shows)."""
    lines = text.rstrip("\n").splitlines()
    header = lines[0]
    names, starts, i = [], [], 0
    for part in header.split("  "):
        if part.strip():
            idx = header.index(part.strip(), i)
            names.append(part.strip())
            starts.append(idx)
            i = idx + len(part.strip())
    rows = []
    for line in lines[1:]:
        cells = [
            line[s : (starts[k + 1] if k + 1 < len(starts) else None)] for k, s in enumerate(starts)
        ]
        for k, s in enumerate(starts[1:], 1):
            assert line[s - 1 : s] in (" ", ""), f"column {names[k]} not aligned in {line!r}"
        rows.append({n: c.strip() for n, c in zip(names, cells, strict=True)})
    return rows


def test_runs_table_and_json_with_filters(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """`runs` lists newest first with script/status/since filters, as an aligned table and as a JSON array."""
    code, out, _ = cli(capsys, "runs")
    assert code == 0
    rows = parse_table(out)
    assert [r["ID"] for r in rows] == [C, B, A, D, E]
    assert rows[1] == {
        "ID": B,
        "SCRIPT": "alpha",
        "STATUS": "error",
        "STARTED (UTC)": RUNS[1]["started_at"][:19].replace("T", " "),
        "DURATION": "500ms",
        "TRIGGERED BY": "cron",
        "ERROR": "RuntimeError: VAPI returned 502",
    }
    assert rows[2]["DURATION"] == "1.5s" and rows[0]["DURATION"] == ""
    code, out, _ = cli(capsys, "runs", "--json", "--script", "alpha", "--since", "24h")
    assert [r["id"] for r in json.loads(out)] == [B, A]
    data = json.loads(out)[0]
    assert (
        data["status"] == "error"
        and data["records_fetched"] == 5
        and data["error_message"].startswith("RuntimeError")
    )
    code, out, _ = cli(capsys, "runs", "--json", "--status", "success", "--since", "7d")
    assert [r["id"] for r in json.loads(out)] == [A, D]
    code, out, _ = cli(capsys, "runs", "--json", "--limit", "2")
    assert [r["id"] for r in json.loads(out)] == [C, B]


def test_logs_of_a_run_with_level_and_step_filters(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """`logs RUN_ID` shows the run's rows in order; --level is a minimum, --step exact; 'last' is the newest run."""
    code, out, _ = cli(capsys, "logs", B)
    assert code == 0
    assert [(r["LEVEL"], r["STEP"], r["MESSAGE"]) for r in parse_table(out)] == [
        ("INFO", "FETCH", "fetched 5"),
        ("WARNING", "FETCH", "slow page"),
        ("ERROR", "SAVE", "save failed"),
    ]
    code, out, _ = cli(capsys, "logs", B, "--level", "warning", "--json")
    assert [(r["id"], r["level"], r["meta"]) for r in json.loads(out)] == [
        (uid(104), "WARNING", {"k": "04"}),
        (uid(105), "ERROR", {"k": "05"}),
    ]
    code, out, _ = cli(capsys, "logs", B, "--step", "FETCH", "--json")
    assert [r["message"] for r in json.loads(out)] == ["fetched 5", "slow page"]
    code, out, _ = cli(capsys, "logs", "last", "--script", "alpha", "--json")
    assert [r["message"] for r in json.loads(out)] == ["fetched 5", "slow page", "save failed"]
    code, _, err = cli(capsys, "logs", uid(999))
    assert code == 1 and "no run" in err


def test_errors_since_with_script_names(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """`errors --since` lists ERROR rows in the window, newest first, with their run's script."""
    code, out, _ = cli(capsys, "errors", "--since", "24h")
    assert code == 0
    assert [(r["SCRIPT"], r["RUN"], r["STEP"], r["MESSAGE"]) for r in parse_table(out)] == [
        ("alpha", B, "SAVE", "save failed")
    ]
    code, out, _ = cli(capsys, "errors", "--since", "7d", "--json")
    assert [(r["id"], r["script_name"], r["message"]) for r in json.loads(out)] == [
        (uid(105), "alpha", "save failed"),
        (uid(107), "alpha", "old error"),
    ]
    code, out, _ = cli(capsys, "errors", "--since", "7d", "--script", "beta", "--json")
    assert json.loads(out) == []


def test_stats_per_script(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    """`stats --since 7d`: per script totals, outcomes, durations (average, p50, p95, max), record sums and last run, as table and JSON object."""
    code, out, _ = cli(capsys, "stats", "--since", "7d", "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats == {
        "alpha": {
            "total": 3,
            "succeeded": 2,
            "failed": 1,
            "running": 0,
            "avg_duration_ms": 1500,
            "records": {"fetched": 16, "inserted": 4, "updated": 6, "failed": 0},
            "success_rate": 66.7,
            "p50_duration_ms": 1500,
            "p95_duration_ms": 2400,
            "max_duration_ms": 2500,
            "calls_analyzed": 0,
            "api_cost": 0.0,
            "last_run": {
                "id": B,
                "started_at": stats["alpha"]["last_run"]["started_at"],
                "status": "error",
                "duration_ms": 500,
            },
        },
        "beta": {
            "total": 1,
            "succeeded": 0,
            "failed": 0,
            "running": 1,
            "avg_duration_ms": None,
            "records": {"fetched": 0, "inserted": 0, "updated": 0, "failed": 0},
            "success_rate": None,
            "p50_duration_ms": None,
            "p95_duration_ms": None,
            "max_duration_ms": None,
            "calls_analyzed": 0,
            "api_cost": 0.0,
            "last_run": {
                "id": C,
                "started_at": stats["beta"]["last_run"]["started_at"],
                "status": "running",
                "duration_ms": None,
            },
        },
    }
    code, out, _ = cli(capsys, "stats", "--since", "30d")
    rows = parse_table(out)
    assert [
        (
            r["SCRIPT"],
            r["RUNS"],
            r["OK"],
            r["FAILED"],
            r["RUNNING"],
            r["AVG DURATION"],
            r["FETCHED"],
            r["LAST STATUS"],
        )
        for r in rows
    ] == [
        ("alpha", "3", "2", "1", "0", "1.5s", "16", "error"),
        ("beta", "2", "1", "0", "1", "100ms", "0", "running"),
    ]


class Lines:
    """A subprocess's stdout, line by line, with a deadline on every wait."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, ""):
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def next(self, timeout_s: float = 30) -> str | None:
        return self.q.get(timeout=timeout_s)

    def rest(self) -> list[str]:
        out = []
        while (line := self.next()) is not None:
            out.append(line)
        return out


def start_tail(backend: Backend, *args: str) -> Lines:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    env.update(backend.env)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "supabase_log_handler",
            "tail",
            *args,
            "--interval",
            "0.1",
            "--timeout",
            "60",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return Lines(proc)


def test_tail_follows_a_run_until_it_finishes(backend: Backend) -> None:
    """`tail RUN_ID` prints the run's rows, then new ones as they arrive, and exits when the run ends (JSON lines too)."""
    plain, as_json = start_tail(backend, C), start_tail(backend, C, "--json")
    first = plain.next()
    assert first is not None and first.endswith("INFO     START     starting")
    assert json.loads(as_json.next() or "")["id"] == uid(106)
    backend.sink.insert_rows(
        "logs", [log_row(uid(108), C, ago(minutes=-1), "WARNING", "FETCH", "page 2 slow")]
    )
    assert (plain.next() or "").endswith("WARNING  FETCH     page 2 slow")
    assert json.loads(as_json.next() or "")["message"] == "page 2 slow"
    backend.sink.insert_rows(
        "logs", [log_row(uid(109), C, ago(minutes=-2), "ERROR", "SAVE", "gave up")]
    )
    backend.sink.upsert_run(
        "runs",
        {**RUNS[2], "status": "error", "finished_at": ago(minutes=-2), "duration_ms": 1234},
        final=True,
    )
    assert plain.rest() == [
        plain_line(uid(109), "ERROR", "SAVE", "gave up"),
        f"-- run {C} (beta) finished: error in 1.2s",
    ]
    assert [json.loads(line)["id"] for line in as_json.rest()] == [uid(109)]
    assert plain.proc.wait(30) == 1 and as_json.proc.wait(30) == 1


def plain_line(lid: str, level: str, step: str, message: str) -> str:
    row = next(
        r
        for r in [*LOGS, log_row(uid(109), C, ago(minutes=-2), "ERROR", "SAVE", "gave up")]
        if r["id"] == lid
    )
    when = dt.datetime.fromisoformat(row["timestamp"]).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"{when}  {level:<7}  {step:<8}  {message}"


def test_tail_follows_new_runs_of_a_script(backend: Backend) -> None:
    """`tail --script NAME --until-finished` picks up a run that starts later and stops when it ends."""
    lines = start_tail(backend, "--script", "gamma", "--until-finished")
    new = uid(200)
    backend.sink.upsert_run("runs", run_row(new, "gamma", "running", ago(seconds=-1)), final=False)
    backend.sink.insert_rows(
        "logs", [log_row(uid(201), new, ago(seconds=-1), "INFO", "START", "gamma begins")]
    )
    first = lines.next()
    assert first is not None and first.startswith(new[:8]) and first.endswith("gamma begins")
    backend.sink.upsert_run(
        "runs",
        run_row(
            new, "gamma", "success", ago(seconds=-1), finished_at=ago(seconds=-2), duration_ms=900
        ),
        final=True,
    )
    assert lines.rest() == [f"-- run {new} (gamma) finished: success in 900ms"]
    assert lines.proc.wait(30) == 0


def test_select_all_pages_through_ties(tmp_path: Path) -> None:
    """Views read every matching row a page at a time, also when rows share a timestamp across a page boundary."""
    sink = LocalSink(tmp_path / "local.sqlite3")
    same = ago(hours=1)
    rows = [
        run_row(
            uid(300 + i), "paged", "success", same if i in (2, 3, 4) else ago(hours=1, minutes=i)
        )
        for i in range(8)
    ]
    for row in rows:
        sink.upsert_run("runs", row, final=True)
    got = select_all(sink, "runs", [("script_name", "eq", "paged")], key="started_at", page=3)
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in rows) and len(got) == 8
    assert [r["started_at"] for r in got] == sorted((r["started_at"] for r in got), reverse=True)
    assert len(select_all(sink, "runs", [], key="started_at", page=3, max_rows=5)) == 5
    sink.close()
