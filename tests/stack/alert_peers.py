"""Loopback servers that speak the alert channels' protocols, for the watch tests.

Owns: a Slack incoming-webhook look-alike (``POST /services/...`` with ``{"text"}``,
answered ``200 ok``, ``400 invalid_payload``, ``404 no_service``), a Telegram Bot
API look-alike (``POST /bot<token>/sendMessage``, answered ``{"ok": true, "result":
{...}}`` or the Bot API's error object), a generic JSON webhook that can hang
until released, and an SMTP server (``aiosmtpd``) with optional AUTH. Each
records what it received; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

__all__ = [
    "HttpPeer",
    "MailPeer",
    "Received",
    "mail_peer",
    "slack_peer",
    "telegram_peer",
    "webhook_peer",
]


class Received(NamedTuple):
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes


class HttpPeer:
    """A threaded HTTP server on 127.0.0.1 answering POSTs with ``respond(path, body)``."""

    def __init__(self, kind: str, secret_path: str = "") -> None:
        self.kind = kind
        self.secret_path = secret_path
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.hang = False
        self.arrived = threading.Event()  # a request reached a hanging peer
        self.release = threading.Event()  # lets hanging requests finish
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                record = Received(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body, raw
                )
                with peer.lock:
                    peer.received.append(record)
                if peer.hang:
                    peer.arrived.set()
                    peer.release.wait(60)
                status, payload = peer.respond(
                    self.path, body, self.headers.get("Content-Type", "")
                )
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header(
                    "Content-Type",
                    "text/html" if isinstance(payload, bytes) else "application/json",
                )
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def respond(self, path: str, body: Any, content_type: str) -> tuple[int, Any]:
        if self.kind == "slack":
            if path != self.secret_path:
                return 404, b"no_service"
            if (
                "application/json" not in content_type
                or not isinstance(body, dict)
                or not body.get("text")
            ):
                return 400, b"invalid_payload"
            return 200, b"ok"
        if self.kind == "telegram":
            if path != self.secret_path:
                return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
            if not isinstance(body, dict) or not str(body.get("text") or "").strip():
                return 400, {
                    "ok": False,
                    "error_code": 400,
                    "description": "Bad Request: message text is empty",
                }
            if not body.get("chat_id"):
                return 400, {
                    "ok": False,
                    "error_code": 400,
                    "description": "Bad Request: chat not found",
                }
            with self.lock:
                message_id = len(self.received)
            return 200, {
                "ok": True,
                "result": {
                    "message_id": message_id,
                    "chat": {"id": body["chat_id"]},
                    "date": 0,
                    "text": body["text"],
                },
            }
        return 200, {"received": True}

    def texts(self) -> list[str]:
        """The message text of every accepted request, in order."""
        with self.lock:
            received = list(self.received)
        out = []
        for r in received:
            if isinstance(r.body, dict):
                out.append(str(r.body.get("text", "")))
        return out

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def slack_peer() -> Iterator[HttpPeer]:
    peer = HttpPeer("slack", "/services/T0TEST/B0TEST/slacksecretpathvalue42")
    try:
        yield peer
    finally:
        peer.close()


@contextmanager
def telegram_peer(token: str = "123456:telegram-secret-token-value") -> Iterator[HttpPeer]:
    peer = HttpPeer("telegram", f"/bot{token}/sendMessage")
    try:
        yield peer
    finally:
        peer.close()


@contextmanager
def webhook_peer(hang: bool = False) -> Iterator[HttpPeer]:
    peer = HttpPeer("webhook", "/hook")
    peer.hang = hang
    try:
        yield peer
    finally:
        peer.close()


class MailPeer:
    """An aiosmtpd server on 127.0.0.1 that keeps every message; AUTH when ``password`` is set."""

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        peer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                with peer.lock:
                    peer.messages.append(
                        {
                            "from": envelope.mail_from,
                            "to": list(envelope.rcpt_tos),
                            "data": envelope.content.decode("utf-8", "replace"),
                        }
                    )
                return "250 Message accepted for delivery"

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> Any:
            ok = (
                isinstance(data, LoginPassword)
                and data.login.decode() == user
                and data.password.decode() == password
            )
            return AuthResult(success=ok)

        kwargs: dict[str, Any] = {}
        if password is not None:
            kwargs.update(authenticator=authenticator, auth_require_tls=False)
        with socket.socket() as probe:  # aiosmtpd checks readiness by connecting to its port
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()


@contextmanager
def mail_peer(user: str | None = None, password: str | None = None) -> Iterator[MailPeer]:
    peer = MailPeer(user, password)
    try:
        yield peer
    finally:
        peer.close()
