"""The application's own HTTP client records are stored; the handler's own requests are never
logged anywhere, not even on the application's console."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_identity, last_json_line, run_script
from stack.fixtures import Db


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def app_server() -> Iterator[str]:
    """A loopback HTTP server the application calls."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.process
def test_an_asyncio_httpx_program_at_debug_stores_its_requests_and_never_ours(
    db: Db, supabase_env: dict[str, str], app_server: str, tmp_path: Path
) -> None:
    """Root at DEBUG with a console handler: the program's 40 httpx calls are stored, exactly, and
    neither the table nor the console shows one of the handler's own requests."""
    out = run_script(
        f"""
        import asyncio, json, logging
        import httpx
        from supabase_log_handler import SupabaseHandler, context, last_successful_run
        logging.basicConfig(level=logging.DEBUG, format="console %(name)s %(message)s")
        handler = SupabaseHandler(script_name="async-http", flush_interval_s=0.1)
        logging.getLogger().addHandler(handler)
        last_successful_run("async-http")  # a read on the job's own thread

        async def main():
            async with httpx.AsyncClient() as client:
                for i in range(40):
                    r = await client.get("{app_server}/item/%d" % i)
                    assert r.status_code == 200

        asyncio.run(main())
        assert handler.flush(30)
        print(json.dumps({{"run_id": context.current_run().id, "stats": handler.stats()}}))
        """,
        {**supabase_env, "SUPABASE_LOG_SPOOL": str(tmp_path / "spool")},
    )
    info = last_json_line(out.stdout)
    stats = info["stats"]
    assert_identity(stats)
    assert stats["dropped_total"] == 0, stats["dropped"]
    rows = db.fetch(
        "select meta->'log'->>'logger', message from logs where run_id = %s", (info["run_id"],)
    )
    requests = [m for logger, m in rows if logger == "httpx" and m.startswith("HTTP Request: GET")]
    assert len(requests) == 40, requests
    assert any(logger.startswith("httpcore") for logger, _ in rows)  # its DEBUG records too
    assert len(rows) == stats["by_table"]["logs"]["delivered"]
    assert not [m for _, m in rows if "/rest/v1" in m]
    console = [line for line in out.stderr.splitlines() if line.startswith("console ")]
    assert sum("HTTP Request: GET" in line for line in console) == 40
    assert not [line for line in console if "/rest/v1" in line or "POST" in line], console
