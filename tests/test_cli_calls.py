"""`calls` and `calls stats` against known data, in Supabase and in the local store."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from stack.fixtures import FreshStack
from test_cli_views import cli, parse_table
from test_integration_logs_schema import SEED_DDL

from supabase_log_handler.cli._common import CommandError
from supabase_log_handler.cli.calls import query_stats
from supabase_log_handler.local_integration import CALL_COLUMNS, ensure_schema
from supabase_log_handler.sinks import Sink
from supabase_log_handler.sinks.local import LocalSink
from supabase_log_handler.sinks.rest import SupabaseSink

UTC = dt.timezone.utc
HOUR = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def uid(n: int) -> str:
    return f"00000000-0000-7000-8000-{n:012d}"


RUN = uid(1)
LEAD_1, LEAD_2 = uid(901), uid(902)


def call(
    n: int, service: str, action: str, status: str, at: dt.datetime, **extra: Any
) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(CALL_COLUMNS)
    row.update(id=uid(n), service_name=service, action=action, status=status, retry_count=0)
    row.update(created_at=at.isoformat(), updated_at=at.isoformat(), **extra)
    return row


CALLS = [
    call(
        11,
        "amocrm",
        "sync_lead",
        "success",
        HOUR - dt.timedelta(minutes=115),
        duration_ms=100,
        related_entity_type="lead",
        related_entity_id=LEAD_1,
        run_id=RUN,
        request_payload={"lead": {"name": "Ivan", "phone": "+77001234567"}},
        response_payload={
            "id": 12345678,
            "_links": {"self": {"href": "https://crm.example/leads/12345678"}},
        },
    ),
    call(
        12,
        "amocrm",
        "sync_lead",
        "success",
        HOUR - dt.timedelta(minutes=110),
        duration_ms=201,
        related_entity_type="lead",
        related_entity_id=LEAD_2,
        run_id=RUN,
    ),
    call(
        13,
        "amocrm",
        "sync_lead",
        "failed",
        HOUR - dt.timedelta(minutes=100),
        duration_ms=50,
        related_entity_type="lead",
        related_entity_id=LEAD_1,
        run_id=RUN,
        retry_count=3,
        error_code="429",
        error_message="Too Many Requests\nretry after 30 s",
    ),
    call(
        14,
        "resend",
        "send_email",
        "failed",
        HOUR - dt.timedelta(hours=5),
        duration_ms=89,
        related_entity_type="lead",
        related_entity_id=LEAD_1,
        error_code="INVALID_EMAIL",
        error_message="Invalid email address",
        request_payload={"to": "user@example.com", "subject": "Welcome"},
    ),
    call(
        15,
        "mobizon",
        "send_sms",
        "retrying",
        HOUR - dt.timedelta(hours=30),
        duration_ms=3456,
        related_entity_type="lead",
        related_entity_id=LEAD_2,
        retry_count=2,
    ),
    call(16, "telegram", "send_telegram", "success", HOUR - dt.timedelta(days=3), duration_ms=40),
    call(17, "telegram", "send_telegram", "pending", HOUR - dt.timedelta(days=40)),
]
C11, C12, C13, C14, C15, C16, C17 = (uid(n) for n in range(11, 18))


def bucket(at: str, unit: str) -> str:
    when = dt.datetime.fromisoformat(at).astimezone(UTC)
    when = when.replace(minute=0, second=0, microsecond=0)
    return (when.replace(hour=0) if unit == "day" else when).isoformat()


def expected_stats(unit: str) -> list[dict[str, Any]]:
    """The view rows the known calls give, computed here from the rows themselves."""
    oldest = HOUR - (dt.timedelta(hours=23) if unit == "hour" else dt.timedelta(days=29))
    if unit == "day":
        oldest = oldest.replace(hour=0)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in CALLS:
        if dt.datetime.fromisoformat(row["created_at"]) >= oldest:
            key = (
                bucket(row["created_at"], unit),
                row["service_name"],
                row["action"],
                row["status"],
            )
            groups.setdefault(key, []).append(row)
    out = []
    for key in sorted(groups, key=lambda k: (_desc(k[0]), k[1], k[2], k[3])):
        rows = groups[key]
        durations = [r["duration_ms"] for r in rows if r["duration_ms"] is not None]
        entry: dict[str, Any] = {
            "service_name": key[1],
            "action": key[2],
            "status": key[3],
            unit: key[0],
            "count": len(rows),
            "avg_duration_ms": int(sum(durations) / len(durations) + 0.5) if durations else None,
        }
        if unit == "hour":
            entry["max_duration_ms"] = max(durations) if durations else None
        entry["failed_count"] = len(rows) if key[3] == "failed" else 0
        out.append(entry)
    return out


def _desc(text: str) -> float:
    return -dt.datetime.fromisoformat(text).timestamp()


class Backend(NamedTuple):
    name: str
    sink: Sink
    write: Callable[[list[dict[str, Any]]], None]  # stores more calls


def write_local_calls(path: Path, rows: list[dict[str, Any]]) -> None:
    """Calls written into the local store file as the local sink stores them (JSON as text)."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        ensure_schema(conn)
        marks = ", ".join("?" for _ in CALL_COLUMNS)
        conn.executemany(
            f"insert into integration_logs ({', '.join(CALL_COLUMNS)}) values ({marks})",
            [
                tuple(
                    json.dumps(r[c]) if c.endswith("_payload") and r[c] is not None else r[c]
                    for c in CALL_COLUMNS
                )
                for r in rows
            ],
        )
    finally:
        conn.close()


@pytest.fixture(params=["supabase", "local"])
def backend(
    request: pytest.FixtureRequest,
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Backend]:
    """The known calls (and their run), in a fresh Supabase database or a local store; env points the CLI at it."""
    local = tmp_path / "local.sqlite3"
    monkeypatch.setenv("SUPABASE_LOG_LOCAL_DB", str(local))
    monkeypatch.setenv("SUPABASE_LOG_SPOOL", str(tmp_path / "spool.sqlite3"))
    monkeypatch.chdir(tmp_path)
    sink: Sink
    run = {
        "id": RUN,
        "script_name": "crm-sync",
        "status": "success",
        "started_at": CALLS[0]["created_at"],
    }
    if request.param == "supabase":
        gw, _ = fresh_gateway()
        monkeypatch.setenv("SUPABASE_URL", gw.url)
        monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", gw.service_key)
        sink = SupabaseSink(gw.url, gw.service_key)
        write = partial(sink.insert_rows, "integration_logs")
    else:
        sink = LocalSink(local)
        write = partial(write_local_calls, local)
    sink.upsert_run("runs", run, final=True)
    write(CALLS)
    yield Backend(request.param, sink, write)
    sink.close()


def ids(out: str) -> list[str]:
    return [r["id"] for r in json.loads(out)]


def test_calls_table_and_json_with_filters(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """`calls` lists newest first with service/action/status/since/run/entity filters and a limit, as a table and as JSON."""
    code, out, _ = cli(capsys, "calls")
    assert code == 0
    rows = parse_table(out)
    assert [r["SERVICE"] for r in rows] == [
        "amocrm",
        "amocrm",
        "amocrm",
        "resend",
        "mobizon",
        "telegram",
        "telegram",
    ]
    assert rows[0] == {
        "TIME (UTC)": CALLS[2]["created_at"][:19].replace("T", " "),
        "SERVICE": "amocrm",
        "ACTION": "sync_lead",
        "STATUS": "failed",
        "DURATION": "50ms",
        "RETRIES": "3",
        "ENTITY": f"lead:{LEAD_1}",
        "ERROR": "429: Too Many Requests",
    }
    assert rows[3]["ERROR"] == "INVALID_EMAIL: Invalid email address"
    assert (rows[4]["STATUS"], rows[4]["DURATION"], rows[4]["RETRIES"]) == ("retrying", "3.5s", "2")
    assert (rows[6]["DURATION"], rows[6]["ENTITY"], rows[6]["ERROR"]) == ("", "", "")

    code, out, _ = cli(capsys, "calls", "--json")
    data = json.loads(out)
    assert [r["id"] for r in data] == [C13, C12, C11, C14, C15, C16, C17]
    first = data[2]
    assert first["request_payload"] == CALLS[0]["request_payload"]
    assert first["response_payload"] == CALLS[0]["response_payload"]
    assert (first["run_id"], first["duration_ms"], first["retry_count"]) == (RUN, 100, 0)
    assert data[0]["error_message"] == "Too Many Requests\nretry after 30 s"
    assert data[6]["request_payload"] is None

    for args, expected in [
        (("--service", "amocrm"), [C13, C12, C11]),
        (("--status", "failed", "--since", "24h"), [C13, C14]),
        (("--since", "24h"), [C13, C12, C11, C14]),
        (("--run", RUN), [C13, C12, C11]),
        (("--entity", f"lead:{LEAD_1}"), [C13, C11, C14]),
        (("--entity", "lead", "--service", "mobizon"), [C15]),
        (("--action", "send_telegram", "--status", "pending"), [C17]),
        (("--limit", "2"), [C13, C12]),
    ]:
        code, out, _ = cli(capsys, "calls", "--json", *args)
        assert (code, ids(out)) == (0, expected), args
    code, _, err = cli(capsys, "calls", "--run", "last-week")
    assert code == 2 and "--run: expected a uuid, got 'last-week'" in err


def test_calls_stats_hourly_and_daily(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    """`calls stats` reads the hourly view (default) or the daily one, with --service, as a table and as JSON."""
    hourly, daily = expected_stats("hour"), expected_stats("day")
    assert [(r["service_name"], r["status"], r["count"], r["avg_duration_ms"]) for r in hourly] == [
        ("amocrm", "failed", 1, 50),
        ("amocrm", "success", 2, 151),
        ("resend", "failed", 1, 89),
    ]
    code, out, _ = cli(capsys, "calls", "stats", "--json")
    assert (code, json.loads(out)) == (0, hourly)
    code, out, _ = cli(capsys, "calls", "stats", "--daily", "--json")
    assert (code, json.loads(out)) == (0, daily)
    assert {r["service_name"] for r in daily} == {"amocrm", "resend", "mobizon", "telegram"}
    code, out, _ = cli(capsys, "calls", "stats", "--hourly", "--service", "resend", "--json")
    assert json.loads(out) == [r for r in hourly if r["service_name"] == "resend"]
    code, out, _ = cli(capsys, "calls", "--service", "mobizon", "stats", "--daily", "--json")
    assert json.loads(out) == [r for r in daily if r["service_name"] == "mobizon"]

    code, out, _ = cli(capsys, "calls", "stats")
    two_hours_ago = (HOUR - dt.timedelta(hours=2)).strftime("%Y-%m-%d %H:%M")
    assert parse_table(out)[1] == {
        "HOUR (UTC)": two_hours_ago,
        "SERVICE": "amocrm",
        "ACTION": "sync_lead",
        "STATUS": "success",
        "CALLS": "2",
        "FAILED": "0",
        "AVG DURATION": "151ms",
        "MAX DURATION": "201ms",
    }
    code, out, _ = cli(capsys, "calls", "stats", "--daily")
    rows = parse_table(out)
    assert "MAX DURATION" not in rows[0]
    assert [
        (r["DAY (UTC)"], r["SERVICE"], r["STATUS"], r["CALLS"], r["FAILED"], r["AVG DURATION"])
        for r in rows
    ] == [
        (
            r["day"][:10],
            r["service_name"],
            r["status"],
            str(r["count"]),
            str(r["failed_count"]),
            f"{r['avg_duration_ms']}ms" if r["avg_duration_ms"] < 1000 else "3.5s",
        )
        for r in daily
    ]


def test_stats_views_are_read_whole_a_page_at_a_time(backend: Backend) -> None:
    """Reading a view in small pages gives every row once, or says to narrow it when one bucket fills a page."""
    # View rows per hour, newest first: 1, 1, 3, 2; pages of 4 and 6 rows end inside a bucket.
    layout = {1: ["a"], 3: ["b"], 4: ["c", "d", "e"], 6: ["f", "g"]}
    backend.write(
        [
            call(100 + 10 * hours + k, "pager", action, "success", HOUR - dt.timedelta(hours=hours))
            for hours, actions in layout.items()
            for k, action in enumerate(actions)
        ]
    )
    whole = query_stats(backend.sink, "hour", service="pager")
    assert [r["action"] for r in whole] == ["a", "b", "c", "d", "e", "f", "g"]
    for page_rows in range(1, 9):
        if page_rows <= 3:
            with pytest.raises(CommandError, match="narrow it with --service"):
                query_stats(backend.sink, "hour", service="pager", page_rows=page_rows)
        else:
            assert query_stats(backend.sink, "hour", service="pager", page_rows=page_rows) == whole


def test_calls_on_a_local_store_without_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a local store that has never recorded a call, `calls` and `calls stats` show nothing, and the table is made."""
    monkeypatch.setenv("SUPABASE_LOG_LOCAL_DB", str(tmp_path / "store" / "local.sqlite3"))
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "calls", "--json")
    assert (code, json.loads(out)) == (0, []) and err == ""
    code, out, err = cli(capsys, "calls", "stats", "--daily")
    assert code == 0 and out.split() == [
        "DAY",
        "(UTC)",
        "SERVICE",
        "ACTION",
        "STATUS",
        "CALLS",
        "FAILED",
        "AVG",
        "DURATION",
    ]
    assert "reading the local store" in err
    conn = sqlite3.connect(str(tmp_path / "store" / "local.sqlite3"))
    names = {
        r[0] for r in conn.execute("select name from sqlite_master where type in ('table', 'view')")
    }
    conn.close()
    assert {"integration_logs", "integration_stats_hourly", "integration_stats_daily"} <= names


def test_calls_name_the_missing_table_and_column_on_supabase(
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without the migration `calls` says to apply it; on the original table it reads, and --run names the missing run_id."""
    gw, db = fresh_gateway(migrations=False)
    monkeypatch.setenv("SUPABASE_URL", gw.url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", gw.service_key)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "calls")
    assert code == 1 and "the table is missing" in err and "fix: apply the migrations" in err
    db.execute(SEED_DDL)
    db.execute(
        "insert into integration_logs (service_name, action, status, duration_ms) values ('amocrm', 'sync_lead', 'success', 234)"
    )
    code, out, _ = cli(capsys, "calls", "--json")
    assert code == 0 and [(r["service_name"], r["duration_ms"]) for r in json.loads(out)] == [
        ("amocrm", 234)
    ]
    code, out, _ = cli(capsys, "calls", "stats", "--json")
    assert code == 0 and [r["count"] for r in json.loads(out)] == [1]
    code, _, err = cli(capsys, "calls", "--run", RUN)
    assert code == 1 and "a column is missing" in err and "run_id" in err
    assert "fix: apply the migrations: `supabase-log migrate`" in err
