"""Recording calls to external services: record_call, the httpx and requests instrumentation,
tenacity, payload safety, ordering of states, outages and the local store, end to end."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from conftest import assert_identity, run_script
from stack.fixtures import Db
from stack.gateway import Gateway
from tenacity import retry, stop_after_attempt, wait_none

from supabase_log_handler import (
    SupabaseHandler,
    call_before_sleep,
    current_call,
    entity_uuid,
    instrument_httpx,
    instrument_requests,
    record_call,
    start_run,
)
from supabase_log_handler.call_values import ENTITY_NAMESPACE
from supabase_log_handler.cli import main
from supabase_log_handler.local_integration import CALL_COLUMNS

COLUMNS = ", ".join(CALL_COLUMNS)
CLIENT_TIMEOUT_S = 0.5


class Api(ThreadingHTTPServer):
    """A loopback HTTP server standing in for a third-party API."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ApiHandler)
        self.release = threading.Event()  # ends the /slow answers
        self.flaky: dict[str, int] = {}
        self.lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (a timeout) before the answer: nothing to report

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Api

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/ok":
            self._answer(200, {"id": 12345678, "ok": True})
        elif path == "/missing":
            self._answer(404, {"error": "lead not found"})
        elif path == "/boom":
            self._answer(500, b"internal error")
        elif path == "/slow":
            self.server.release.wait(10.0)
            self._answer(200, {"late": True})
        elif path.startswith("/flaky/"):
            with self.server.lock:
                seen = self.server.flaky[path] = self.server.flaky.get(path, 0) + 1
            self._answer(503 if seen <= 2 else 200, {"attempt": seen})
        else:
            self._answer(404, {"error": "no route"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._answer(200, {"received": json.loads(self.rfile.read(length) or b"null")})


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    server = Api()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10.0)


@pytest.fixture
def refused_url() -> str:
    """A loopback URL where nothing listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/anything"


@pytest.fixture
def service() -> str:
    """A service name no other test uses, so each test reads only its own rows."""
    return f"svc-{uuid.uuid4().hex[:10]}"


def stored(db: Db, service: str) -> list[dict[str, Any]]:
    rows = db.fetch(
        f"select {COLUMNS} from integration_logs where service_name = %s order by created_at, id",
        (service,),
    )
    return [dict(zip(CALL_COLUMNS, r, strict=True)) for r in rows]


def outcomes(rows: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [(r["action"], r["status"], r["error_code"]) for r in rows]


def check_outcomes(rows: list[dict[str, Any]], refused_code: str) -> None:
    """2xx, 4xx, 5xx, timeout and refused: one row each, right status, code and a duration."""
    assert outcomes(rows) == [
        ("GET /ok", "success", None),
        ("GET /missing", "failed", "404"),
        ("GET /boom", "failed", "500"),
        ("GET /slow", "failed", "ReadTimeout"),
        ("GET /anything", "failed", refused_code),
    ]
    assert [r["error_message"] for r in rows[1:3]] == [
        "HTTP 404 Not Found",
        "HTTP 500 Internal Server Error",
    ]
    assert all(type(r["duration_ms"]) is int and r["duration_ms"] >= 0 for r in rows)
    assert rows[3]["duration_ms"] >= CLIENT_TIMEOUT_S * 1000 * 0.9  # it waited for the timeout
    assert all(r["retry_count"] == 0 and r["related_entity_id"] is None for r in rows)
    ok = rows[0]
    assert ok["request_payload"]["method"] == "GET" and ok["request_payload"]["url"].endswith("/ok")
    assert ok["request_payload"]["query"] == {
        "page": "2",
        "token": "[REDACTED]",
        "key": "[REDACTED]",
    }
    assert ok["response_payload"] == {
        "status": 200
    }  # payloads are off by default: no body, no headers


def test_httpx_client_records_each_outcome_as_one_row(
    api: Api, refused_url: str, service: str, make_handler: Callable[..., SupabaseHandler], db: Db
) -> None:
    """An instrumented httpx client: 2xx, 4xx, 5xx, a timeout and a refused connection each give one row."""
    handler = make_handler()
    client = instrument_httpx(
        httpx.Client(timeout=CLIENT_TIMEOUT_S), service=service, handler=handler
    )
    with client:
        assert client.get(f"{api.url}/ok?page=2&token=abc123&key=xyz").json()["ok"] is True
        assert client.get(f"{api.url}/missing").status_code == 404
        assert client.get(f"{api.url}/boom").status_code == 500
        with pytest.raises(httpx.ReadTimeout):
            client.get(f"{api.url}/slow")
        with pytest.raises(httpx.ConnectError):
            client.get(refused_url)
    assert handler.flush(10.0)
    check_outcomes(stored(db, service), "ConnectError")
    assert_identity(handler.stats())


def test_requests_session_records_each_outcome_as_one_row(
    api: Api, refused_url: str, service: str, make_handler: Callable[..., SupabaseHandler], db: Db
) -> None:
    """An instrumented requests session: the same five outcomes, one row each."""
    handler = make_handler()
    session = instrument_requests(requests.Session(), service=service, handler=handler)
    with session:
        assert session.get(f"{api.url}/ok?page=2&token=abc123&key=xyz", timeout=CLIENT_TIMEOUT_S).ok
        assert session.get(f"{api.url}/missing", timeout=CLIENT_TIMEOUT_S).status_code == 404
        assert session.get(f"{api.url}/boom", timeout=CLIENT_TIMEOUT_S).status_code == 500
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.get(f"{api.url}/slow", timeout=CLIENT_TIMEOUT_S)
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(refused_url, timeout=CLIENT_TIMEOUT_S)
    assert handler.flush(10.0)
    check_outcomes(stored(db, service), "ConnectionError")


def test_async_client_and_payloads_when_asked(
    api: Api, service: str, make_handler: Callable[..., SupabaseHandler], db: Db
) -> None:
    """An instrumented AsyncClient records too; with record_payloads the bodies and masked headers are kept, capped."""
    handler = make_handler()

    async def job() -> None:
        client = instrument_httpx(
            httpx.AsyncClient(timeout=5.0), service=service, action="send_sms",
            record_payloads=True, max_payload_bytes=1024, handler=handler,
        )  # fmt: skip
        async with client:
            body = {"recipient": "+77001234567", "text": "Your code: 1234"}
            answer = await client.post(
                f"{api.url}/echo", json=body, headers={"Authorization": "Bearer abcdef123456"}
            )
            assert answer.json() == {"received": body}
            await client.post(f"{api.url}/echo", json={"text": "x" * 3000})

    asyncio.run(job())
    assert handler.flush(10.0)
    small, big = stored(db, service)
    assert (small["action"], small["status"]) == ("send_sms", "success")
    assert small["request_payload"]["body"] == {
        "recipient": "+77001234567",
        "text": "Your code: 1234",
    }
    assert small["request_payload"]["headers"]["authorization"] == "[REDACTED]"
    assert small["response_payload"]["body"] == {"received": small["request_payload"]["body"]}
    for payload in (big["request_payload"], big["response_payload"]):
        assert payload["truncated"] is True and payload["bytes"] > 1024
        assert len(json.dumps(payload, ensure_ascii=False, separators=(",", ":"))) <= 1024


def test_tenacity_retries_of_a_flaky_endpoint_are_one_row(
    api: Api, service: str, make_handler: Callable[..., SupabaseHandler], db: Db
) -> None:
    """Two failed attempts and a third that works: one row, pending -> retrying -> success, retry_count 2."""
    handler = make_handler()
    client = instrument_httpx(httpx.Client(timeout=5.0), service=service, handler=handler)
    flaky = f"{api.url}/flaky/{service}"

    @record_call(service, "fetch_flaky", entity=("lead", 12345), handler=handler)
    @retry(
        stop=stop_after_attempt(5), wait=wait_none(), before_sleep=call_before_sleep, reraise=True
    )
    def fetch() -> Any:
        answer = client.get(flaky)
        answer.raise_for_status()
        return answer.json()

    assert fetch() == {"attempt": 3}
    assert handler.flush(10.0)
    (row,) = stored(db, service)
    assert (row["action"], row["status"], row["retry_count"]) == ("fetch_flaky", "success", 2)
    assert (row["error_code"], row["error_message"]) == (None, None)
    assert row["related_entity_type"] == "lead"
    assert (
        str(row["related_entity_id"]) == entity_uuid("lead", 12345) == entity_uuid("lead", "12345")
    )
    db.execute('create extension if not exists "uuid-ossp"')  # as docs/integrations.md queries
    in_sql = db.fetchval("select uuid_generate_v5(%s, 'lead:12345')", (str(ENTITY_NAMESPACE),))
    assert row["related_entity_id"] == in_sql
    assert row["response_payload"] == {"attempt": 3} and row["request_payload"]["method"] == "GET"
    table = handler.stats()["by_table"]["integration_logs"]
    assert (table["accepted"], table["delivered"]) == (4, 4)  # pending, retrying 1 and 2, success


def test_failed_retries_end_failed_with_the_last_error(
    api: Api, service: str, make_handler: Callable[..., SupabaseHandler], db: Db
) -> None:
    """tenacity alone (a plain session): the hook counts the retries, and when it gives up the row ends failed with the last status."""
    handler = make_handler()
    session = requests.Session()

    @record_call(service, "give_up", handler=handler)
    @retry(stop=stop_after_attempt(3), wait=wait_none(), before_sleep=call_before_sleep)
    def fetch() -> None:
        session.get(f"{api.url}/boom", timeout=5.0).raise_for_status()

    with pytest.raises(Exception, match="RetryError"):
        fetch()
    assert handler.flush(10.0)
    (row,) = stored(db, service)
    assert (row["status"], row["retry_count"], row["error_code"]) == ("failed", 2, "500")
    assert row["request_payload"] is None and row["response_payload"] is None
    assert (
        row["error_message"].startswith("HTTPError: 500 Server Error")
        and "?" not in row["error_message"]
    )


def test_decorator_on_sync_and_async_functions(
    service: str, make_handler: Callable[..., SupabaseHandler], db: Db
) -> None:
    """Each invocation of a decorated function (sync or async) is its own row, linked to the current run."""
    handler = make_handler()

    @record_call(service, "send_email", handler=handler)
    def send(to: str) -> dict[str, str]:
        if "@" not in to:
            raise ValueError(f"invalid address {to!r}")
        assert current_call() is not None
        return {"id": f"msg-{to}"}

    @record_call(service, "send_telegram", handler=handler)
    async def notify(chat: int) -> None:
        call = current_call()
        assert call is not None
        call.fail("chat not found", code="400")

    with start_run("integration-decorators") as run:
        assert send("a@example.com") == {"id": "msg-a@example.com"}
        with pytest.raises(ValueError):
            send("nobody")
        asyncio.run(notify(42))
        assert current_call() is None
    assert handler.flush(10.0)
    rows = stored(db, service)
    assert [(r["action"], r["status"], r["error_code"], r["error_message"]) for r in rows] == [
        ("send_email", "success", None, None),
        ("send_email", "failed", "ValueError", "ValueError: invalid address 'nobody'"),
        ("send_telegram", "failed", "400", "chat not found"),
    ]
    assert rows[0]["response_payload"] == {"id": "msg-a@example.com"}
    assert len({r["id"] for r in rows}) == 3 and {str(r["run_id"]) for r in rows} == {run.id}


def test_secrets_in_payloads_are_masked(
    service: str, make_handler: Callable[..., SupabaseHandler], db: Db, gateway: Gateway
) -> None:
    """An Authorization header, a password, a token and the service key itself are stored masked."""
    handler = make_handler()
    request = {
        "headers": {"Authorization": "Bearer 0123456789abcdef", "Content-Type": "application/json"},
        "user": {"login": "ivan", "password": "hunter2"},
        "note": f"key is {gateway.service_key}",
    }
    with record_call(service, "sync_lead", request=request, handler=handler) as call:
        call.response = {"access_token": "tok-123456789", "lead": {"id": 12345678}}
    assert handler.flush(10.0)
    (row,) = stored(db, service)
    assert row["request_payload"] == {
        "headers": {"Authorization": "[REDACTED]", "Content-Type": "application/json"},
        "user": {"login": "ivan", "password": "[REDACTED]"},
        "note": "key is [REDACTED]",
    }
    assert row["response_payload"] == {"access_token": "[REDACTED]", "lead": {"id": 12345678}}
    assert request["user"]["password"] == "hunter2"  # the caller's object is untouched


def test_a_payload_the_database_refuses_is_stored_sanitised(
    service: str, make_handler: Callable[..., SupabaseHandler], db: Db
) -> None:
    """A row whose payload PostgreSQL refuses (a NUL) is stored with the payload as clean text, not lost."""
    handler = make_handler()
    call = record_call(service, "raw", handler=handler)
    row = call.row()
    row.update(
        status="failed", request_payload={"text": "nul\x00here"}, error_message="bad\x00byte"
    )
    handler.submit_row("integration_logs", row, merge=True)
    assert handler.flush(10.0)
    (stored_row,) = stored(db, service)
    assert stored_row["request_payload"] == {"sanitised": True, "text": '{"text": "nulhere"}'}
    assert stored_row["error_message"] == "badbyte"
    assert handler.stats()["dead_lettered"] == 0


def test_states_arriving_out_of_order_never_move_a_call_back(
    service: str, make_handler: Callable[..., SupabaseHandler], db: Db
) -> None:
    """A late pending or retrying state (as replayed from a spool) leaves a finished call as it is."""
    handler = make_handler()
    call = record_call(service, "sync_lead", handler=handler)
    base = call.row()
    final = {**base, "status": "success", "retry_count": 2, "duration_ms": 900}
    handler.submit_row("integration_logs", final, merge=True)
    assert handler.flush(10.0)
    before = db.fetch(
        "select status, retry_count, duration_ms, updated_at from integration_logs where id = %s",
        (call.id,),
    )
    for late in (
        {**base, "status": "retrying", "retry_count": 1},
        {**base, "status": "success", "retry_count": 1},
    ):
        handler.submit_row("integration_logs", late, merge=True)
    handler.submit_row("integration_logs", base, merge=False)
    assert handler.flush(10.0)
    assert (
        db.fetch(
            "select status, retry_count, duration_ms, updated_at from integration_logs where id = %s",
            (call.id,),
        )
        == before
    )
    assert before[0][:3] == ("success", 2, 900)
    forward = {**base, "status": "failed", "retry_count": 3}  # moving on is still allowed
    handler.submit_row("integration_logs", forward, merge=True)
    assert handler.flush(10.0)
    assert stored(db, service)[0]["status"] == "failed"


def test_outage_calls_are_spooled_then_pushed_exactly_once(
    service: str, make_handler: Callable[..., SupabaseHandler], db: Db, gateway_faults: Gateway,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Calls recorded while the gateway is down wait in the spool; `push` delivers each once, in its last state."""
    gw = gateway_faults
    handler = make_handler(retry_deadline_s=0.3, probe_interval_s=30.0)
    gw.stop()
    ids = []
    for n in range(3):
        with record_call(service, "send_sms", request={"n": n}, handler=handler) as call:
            call.retrying(1, "gateway timeout", code="504")
            if n == 2:
                call.fail("rate limited", code="429")
        ids.append(call.id)
    handler.close(5.0)
    stats = handler.stats()
    assert stats["by_table"]["integration_logs"]["spooled_pending"] > 0
    assert_identity(stats)
    gw.start()
    assert stored(db, service) == []

    monkeypatch.setenv("SUPABASE_URL", gw.url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", gw.service_key)
    monkeypatch.setenv("SUPABASE_LOG_SPOOL", str(tmp_path / "spool"))
    assert main(["push", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spool_pending"] == 0
    rows = stored(db, service)
    assert sorted(str(r["id"]) for r in rows) == sorted(ids)
    assert sorted((r["status"], r["retry_count"], r["error_code"]) for r in rows) == [
        ("failed", 1, "429"), ("success", 1, None), ("success", 1, None),
    ]  # fmt: skip
    gw.reset_log()
    assert main(["push", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spool_delivered"] == 0
    assert [r for r in gw.requests if r.method != "GET"] == []
    assert len(stored(db, service)) == 3


def test_calls_command_shows_recorded_calls(
    service: str, make_handler: Callable[..., SupabaseHandler], db: Db, gateway: Gateway,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """`supabase-log calls` lists what record_call wrote, on Supabase."""
    handler = make_handler()
    with record_call(service, "sync_lead", handler=handler):
        pass
    with pytest.raises(RuntimeError), record_call(service, "send_email", handler=handler):
        raise RuntimeError("smtp down")
    assert handler.flush(10.0)
    monkeypatch.setenv("SUPABASE_URL", gateway.url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", gateway.service_key)
    assert main(["calls", "--service", service, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(c["action"], c["status"], c["error_code"]) for c in listed] == [
        ("send_email", "failed", "RuntimeError"), ("sync_lead", "success", None),
    ]  # fmt: skip
    assert main(["calls", "--service", service, "--status", "failed"]) == 0
    assert "RuntimeError: smtp down" in capsys.readouterr().out


def test_local_store_records_calls_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without Supabase the calls land in the local store, a late older state is ignored there too, and `calls` shows them."""
    local = tmp_path / "local.sqlite3"
    handler = SupabaseHandler(
        local_path=str(local), spool_path=str(tmp_path / "spool"), flush_interval_s=0.2,
        install_signal_handlers=False, capture_uncaught=False,
    )  # fmt: skip
    with record_call(
        "amocrm", "sync_lead", entity=("lead", uuid.UUID(int=7)), handler=handler
    ) as call:
        call.retrying(1, TimeoutError("timed out"))
        call.retrying(2)
    assert handler.flush(10.0)
    late = {**call.row(), "status": "retrying", "retry_count": 1}
    handler.submit_row("integration_logs", late, merge=True)
    assert handler.flush(10.0)
    monkeypatch.setenv("SUPABASE_LOG_LOCAL_DB", str(local))
    assert main(["calls", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["id"], listed["status"], listed["retry_count"]) == (call.id, "success", 2)
    assert listed["related_entity_id"] == str(uuid.UUID(int=7))
    handler.close(5.0)


def test_a_script_that_only_records_calls_gets_a_handler_and_its_rows_at_exit(
    db: Db, supabase_env: dict[str, str], service: str
) -> None:
    """With no handler attached, record_call installs one; the calls reach the table by the time the script exits."""
    run_script(
        f"""
        from supabase_log_handler import record_call
        with record_call({service!r}, "send_telegram", request={{"chat_id": 42}}):
            pass
        record_call({service!r}, "send_sms").fail("no credit", code="402")
        """,
        env=supabase_env,
    )
    rows = stored(db, service)
    assert [(r["action"], r["status"], r["error_code"]) for r in rows] == [
        ("send_telegram", "success", None),
        ("send_sms", "failed", "402"),
    ]
    assert rows[0]["run_id"] is not None and rows[0]["run_id"] == rows[1]["run_id"]
    assert db.fetchval("select status from runs where id = %s", (rows[0]["run_id"],)) == "success"
