"""The handler's PostgREST requests are the ones the official supabase client sends for the same calls."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

import pytest

from supabase_log_handler._jsonsafe import encode
from supabase_log_handler.sinks import LOG_COLUMNS
from supabase_log_handler.sinks.rest import SupabaseSink

KEY = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJlLXZhbHVl"
COMPARED_HEADERS = ("apikey", "authorization", "accept-profile", "content-profile", "prefer",
                    "content-type")  # fmt: skip


class Seen(NamedTuple):
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class _Recorder(BaseHTTPRequestHandler):
    seen: list[Seen]

    def _record(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        self.server.seen.append(  # type: ignore[attr-defined]
            Seen(
                self.command,
                url.path,
                dict(parse_qsl(url.query)),
                {k.lower(): v for k, v in self.headers.items()},
                json.loads(raw) if raw else None,
            )
        )
        body = b"[]" if self.command == "GET" else b""
        self.send_response(200 if self.command == "GET" else 201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = _record

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[Seen]]]:
    """A loopback HTTP server that records every request and answers as PostgREST would."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def _official(url: str) -> Any:
    from supabase import create_client
    from supabase.lib.client_options import SyncClientOptions

    options = SyncClientOptions(postgrest_client_retry=False, auto_refresh_token=False,
                                persist_session=False)  # fmt: skip
    return create_client(url, KEY, options)


def _same(ours: Seen, theirs: Seen) -> None:
    assert (ours.method, ours.path) == (theirs.method, theirs.path)
    assert ours.query.keys() == theirs.query.keys()
    for name, value in ours.query.items():
        if name == "columns":  # the client lists them in set order
            assert set(value.split(",")) == set(theirs.query[name].split(","))
        else:
            assert value == theirs.query[name], name
    for name in COMPARED_HEADERS:
        assert ours.headers.get(name) == theirs.headers.get(name), name
    assert ours.body == theirs.body


LOG_ROWS = [
    {"id": f"0190c6f1-0000-7000-8000-00000000000{i}", "run_id": "0190c6f1-0000-7000-8000-0000000000aa",
     "timestamp": "2026-11-29T10:00:00.000001+00:00", "level": "INFO", "step": "FETCH",
     "message": f"fetched {i} ünïcode", "meta": {"count": i, "log": {"line": 3}}}
    for i in range(3)
]  # fmt: skip
RUN = {"id": "0190c6f1-0000-7000-8000-0000000000aa", "script_name": "vapi-sync", "status": "success",
       "metadata": {"a": 1}, "api_cost": 0.25}  # fmt: skip


@pytest.mark.parametrize("merge", [False, True], ids=["insert", "merge"])
def test_writes_match_the_official_clients_upsert(recorder: tuple[str, list[Seen]], merge: bool) -> None:
    """write() sends what table(...).upsert(rows, on_conflict="id", ignore_duplicates=..., returning="minimal") sends."""
    url, seen = recorder
    rows = LOG_ROWS if not merge else [RUN]
    table = "logs" if not merge else "runs"
    columns = LOG_COLUMNS if not merge else tuple(RUN)
    sink = SupabaseSink(url, KEY)
    sink.write(table, [encode(r) for r in rows], merge=merge, columns=columns)
    sink.close()
    _official(url).table(table).upsert(
        rows, on_conflict="id", ignore_duplicates=not merge, returning="minimal"
    ).execute()
    ours, theirs = seen
    _same(ours, theirs)


def test_reads_and_functions_match_the_official_client(recorder: tuple[str, list[Seen]]) -> None:
    """select() with filters, order and limit, and rpc(), send what the client's builders send."""
    url, seen = recorder
    sink = SupabaseSink(url, KEY)
    sink.select("runs", filters=[("script_name", "eq", "vapi-sync"), ("status", "eq", "success"),
                                 ("finished_at", "not_null", None)],
                order=[("finished_at", True)], limit=1)  # fmt: skip
    sink.rpc("reap_stale_runs", {"multiple": 3})
    sink.close()
    client = _official(url)
    (client.table("runs").select("*").eq("script_name", "vapi-sync").eq("status", "success")
     .not_.is_("finished_at", "null").order("finished_at", desc=True).limit(1).execute())  # fmt: skip
    client.rpc("reap_stale_runs", {"multiple": 3}).execute()
    ours_select, ours_rpc, their_select, their_rpc = seen
    _same(ours_select, their_select)
    _same(ours_rpc, their_rpc)


def test_heartbeat_updates_match_the_official_clients_update(recorder: tuple[str, list[Seen]]) -> None:
    """update() sends what table(t).update(values).eq("id", ...).eq("status", "running") sends."""
    url, seen = recorder
    values = {"heartbeat_at": "2026-11-29T10:00:00.000001+00:00", "records_fetched": 7}
    sink = SupabaseSink(url, KEY)
    sink.update("runs", RUN["id"], encode({"id": RUN["id"], **values}), only_if=("status", "running"))
    sink.close()
    (_official(url).table("runs").update(values, returning="minimal").eq("id", RUN["id"])
     .eq("status", "running").execute())  # fmt: skip
    ours, theirs = seen
    _same(ours, theirs)
