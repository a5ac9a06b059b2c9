"""What keeps the dashboard private: where it may listen, who may read it, what a page may do.

- **Bind.** Loopback addresses need nothing; any other address needs a token of at
  least ``MIN_TOKEN_CHARS`` characters (``check_bind``).
- **Token.** Given once on the login form (a POST body, never a URL), compared in
  constant time; the browser then carries a cookie holding an HMAC of the token
  (HttpOnly, SameSite=Strict), so the token itself is not stored in the browser.
  Scripts may send ``Authorization: Bearer <token>`` instead.
- **Host.** Without a token the server answers only requests addressed to a
  loopback name, so a web page cannot reach it through DNS rebinding.
- **Headers.** Every answer carries a Content-Security-Policy that allows scripts
  and styles from the dashboard's own files only (no inline script, no inline
  style, no eval), and forbids framing; pages are not cached.

``Guard`` is plain ASGI middleware: it needs nothing from Starlette.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from ..errors import ConfigurationError

TOKEN_ENV = "SUPABASE_LOG_UI_TOKEN"
COOKIE = "supabase_log_ui"
MIN_TOKEN_CHARS = 16
LOGIN_PATH = "/login"
PUBLIC_PREFIXES = ("/static/", LOGIN_PATH)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a bind the dashboard cannot keep private; the message names the fix."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigurationError(
            f"the ui token must be at least {MIN_TOKEN_CHARS} characters; make one with "
            '`python -c "import secrets; print(secrets.token_urlsafe(24))"`'
        )
    if not is_loopback(host) and not token:
        raise ConfigurationError(
            f"refusing to listen on {host}: anyone who can reach it could read every run and log. "
            f"Set a token (the {TOKEN_ENV} environment variable, or --token), or keep the "
            "default --host 127.0.0.1"
        )


def session_value(token: str) -> str:
    """What the cookie holds: an HMAC of the token, not the token."""
    return hmac.new(token.encode(), b"supabase-log ui session", hashlib.sha256).hexdigest()


def token_matches(token: str, offered: str) -> bool:
    return hmac.compare_digest(token.encode(), offered.encode())


def safe_next(path: str | None) -> str:
    """A local path to go back to after login (never another site)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers") or []:
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def _hostname(scope: Scope) -> str:
    """The Host header's name, without the port (``[::1]`` keeps its brackets)."""
    host = _header(scope, b"host").strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _cookie(scope: Scope, name: str) -> str:
    for part in _header(scope, b"cookie").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


class Guard:
    """ASGI middleware: host check, token check, security headers on every answer."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self.token = token
        self.session = session_value(token) if token else None

    def allowed(self, scope: Scope) -> bool:
        if self.token is None or self.session is None:
            return True
        if hmac.compare_digest(_cookie(scope, COOKIE).encode(), self.session.encode()):
            return True
        auth = _header(scope, b"authorization")
        return auth.startswith("Bearer ") and token_matches(self.token, auth[7:].strip())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in HEADERS if k not in names]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        path = str(scope.get("path") or "/")
        if self.token is None and _hostname(scope) not in LOOPBACK_NAMES:
            await _plain(
                send_with_headers, 421, "This dashboard answers only at 127.0.0.1 or localhost."
            )
            return
        if not path.startswith(PUBLIC_PREFIXES) and not self.allowed(scope):
            if scope.get("method") == "GET" and not _header(scope, b"hx-request"):
                query = scope.get("query_string", b"").decode("latin-1")
                target = path + (f"?{query}" if query else "")
                location = f"{LOGIN_PATH}?next={quote(safe_next(target), safe='')}"
                await _redirect(send_with_headers, location)
            else:
                await _plain(send_with_headers, 401, "Log in first: open the dashboard's page.")
            return
        await self.app(scope, receive, send_with_headers)


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})
