"""What recording a call costs the job: ``record_call`` and an instrumented httpx client.

    python benchmarks/call_cost.py [--calls N] [--requests N] [--json]

1. ``with record_call(...)`` (a pending and a final row, a request payload of about
   1 KB with a password to mask, and a response) timed on the caller's thread, per
   call, with a handler writing to a local store in a temporary directory (the rows
   are sent by the handler's own threads; ``flush`` is not timed).
2. GET requests to a loopback HTTP server through a plain ``httpx.Client`` and
   through an instrumented one (payloads off, then on), alternating in rounds; the
   median time per request of each, and the difference.
Everything it starts is stopped at the end. A loopback request takes about a
millisecond and varies by more than the wrapper costs, so the difference can come
out negative: compare within one run, and re-run before reading much into it.
``tests/test_benchmark_call_cost.py`` runs it with small sizes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from supabase_log_handler import SupabaseHandler, instrument_httpx, record_call

PAYLOAD = {
    "lead": {"name": "Ivan Ivanov", "phone": "+77001234567", "notes": "x" * 900},
    "auth": {"login": "crm-bot", "password": "hunter2"},
}


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # headers and body leave in one write (no Nagle / delayed-ACK stall)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = b'{"id": 12345678, "ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def record_call_cost(handler: SupabaseHandler, calls: int) -> dict[str, float]:
    samples = []
    for i in range(calls):
        t0 = time.perf_counter()
        with record_call("amocrm", "sync_lead", entity=("lead", i), request=PAYLOAD, handler=handler) as call:
            call.response = {"id": i}
        samples.append(time.perf_counter() - t0)
    assert handler.flush(60.0)
    return {
        "calls": calls,
        "median_us": round(statistics.median(samples) * 1e6, 1),
        "p95_us": round(sorted(samples)[int(len(samples) * 0.95)] * 1e6, 1),
    }


def request_cost(handler: SupabaseHandler, url: str, requests_n: int) -> dict[str, float]:
    clients = {
        "plain": httpx.Client(),
        "instrumented": instrument_httpx(httpx.Client(), service="bench", handler=handler),
        "instrumented_payloads": instrument_httpx(
            httpx.Client(), service="bench", record_payloads=True, handler=handler
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in clients}
    try:
        for client in clients.values():
            client.get(url)  # connect once
        order = list(clients.items())
        for n in range(requests_n):
            for name, client in order[n % 3 :] + order[: n % 3]:  # each goes first in turn
                t0 = time.perf_counter()
                client.get(url)
                times[name].append(time.perf_counter() - t0)
    finally:
        for client in clients.values():
            client.close()
    assert handler.flush(60.0)
    medians = {name: statistics.median(values) * 1e6 for name, values in times.items()}
    return {
        "requests": requests_n,
        **{f"{name}_median_us": round(value, 1) for name, value in medians.items()},
        "added_median_us": round(medians["instrumented"] - medians["plain"], 1),
        "added_with_payloads_median_us": round(medians["instrumented_payloads"] - medians["plain"], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    with tempfile.TemporaryDirectory() as tmp:
        handler = SupabaseHandler(
            local_path=f"{tmp}/local.sqlite3", spool_path=f"{tmp}/spool",
            install_signal_handlers=False, capture_uncaught=False, diagnostics=False,
        )  # fmt: skip
        try:
            result = {
                "record_call": record_call_cost(handler, args.calls),
                "httpx": request_cost(handler, f"http://127.0.0.1:{server.server_address[1]}/lead", args.requests),
                "python": sys.version.split()[0],
            }
        finally:
            handler.close(10.0)
            server.shutdown()
            server.server_close()
            thread.join(10.0)
    if args.json:
        print(json.dumps(result))
    else:
        for section, values in result.items():
            print(f"{section}: {values}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
