"""The dashboard keeps its data private: bind rules, the token and its cookie, the Host check,
security headers on every answer, and templates without inline script or style.

The servers are real ``supabase-log ui`` processes over a local store, spoken to over HTTP.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ui_support import ROOT, UiProcess

from supabase_log_handler.errors import ConfigurationError
from supabase_log_handler.ui.security import TOKEN_ENV, check_bind, session_value

TOKEN = "a-long-enough-dashboard-token-0123"
TEMPLATES = ROOT / "supabase_log_handler" / "ui" / "templates"


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A dashboard started with a token (from the environment), on 127.0.0.1."""
    work = tmp_path_factory.mktemp("ui-token")
    env = {"SUPABASE_LOG_LOCAL_DB": str(work / "local.sqlite3"), TOKEN_ENV: TOKEN}
    ui = UiProcess(env, cwd=work)
    try:
        yield ui.url
    finally:
        ui.stop()


@pytest.fixture(scope="module")
def open_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A dashboard without a token, on 127.0.0.1."""
    work = tmp_path_factory.mktemp("ui-open")
    ui = UiProcess({"SUPABASE_LOG_LOCAL_DB": str(work / "local.sqlite3")}, cwd=work)
    try:
        yield ui.url
    finally:
        ui.stop()


def test_non_loopback_bind_without_token_is_refused(tmp_path: Path) -> None:
    """`supabase-log ui --host 0.0.0.0` without a token exits 2 naming the fix, and never listens."""
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "SUPABASE_LOG_LOCAL_DB": str(tmp_path / "s.db"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "supabase_log_handler", "ui", "--host", "0.0.0.0", "--port", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert TOKEN_ENV in proc.stderr and "refusing to listen on 0.0.0.0" in proc.stderr
    assert "dashboard at" not in proc.stderr
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        with pytest.raises(ConfigurationError):
            check_bind(host, None)
    with pytest.raises(ConfigurationError, match="at least 16"):
        check_bind("0.0.0.0", "short")
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        check_bind(host, None)
    check_bind("0.0.0.0", TOKEN)


def test_token_login_sets_a_cookie_that_is_not_the_token(locked: str) -> None:
    """Without the token every page sends to the login form; a wrong token is refused; the right
    one (posted, never in a URL) sets an HttpOnly, SameSite=Strict cookie holding an HMAC of it."""
    with httpx.Client(base_url=locked, timeout=30) as client:
        first = client.get("/errors?window=7d")
        assert first.status_code == 303
        assert first.headers["location"] == "/login?next=%2Ferrors%3Fwindow%3D7d"
        assert client.get("/errors", headers={"HX-Request": "true"}).status_code == 401
        form = client.get("/login?next=/errors")
        assert form.status_code == 200 and 'name="token"' in form.text
        wrong = client.post("/login", data={"token": TOKEN[:-1] + "x", "next": "/errors"})
        assert wrong.status_code == 401 and "login-failed" in wrong.text
        assert "set-cookie" not in wrong.headers
        right = client.post("/login", data={"token": TOKEN, "next": "//evil.example/"})
        assert right.status_code == 303 and right.headers["location"] == "/"
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert TOKEN not in cookie and session_value(TOKEN) in cookie
        page = client.get("/errors")
        assert page.status_code == 200 and "Failed runs" in page.text
        assert TOKEN not in page.text
    with httpx.Client(base_url=locked, timeout=30) as script:  # no cookie
        assert script.get("/static/htmx.min.js").status_code == 200
        assert script.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert script.get("/", headers={"Authorization": "Bearer nope"}).status_code == 303


def test_only_loopback_host_names_are_answered_without_a_token(open_ui: str) -> None:
    """Without a token, a request for another host name (DNS rebinding) is refused."""
    port = open_ui.rsplit(":", 1)[1]
    with httpx.Client(base_url=open_ui, timeout=30) as client:
        assert client.get("/").status_code == 200
        assert client.get("/", headers={"Host": f"localhost:{port}"}).status_code == 200
        refused = client.get("/", headers={"Host": f"attacker.example:{port}"})
        assert refused.status_code == 421


def test_every_answer_carries_the_security_headers(open_ui: str) -> None:
    """Pages, fragments, static files and error pages all carry the CSP and its companions."""
    with httpx.Client(base_url=open_ui, timeout=30) as client:
        answers = [
            client.get("/"),
            client.get("/", headers={"HX-Request": "true"}),
            client.get("/static/dashboard.js"),
            client.get("/runs/not-a-uuid"),
            client.get("/nothing/here"),
        ]
    for answer in answers:
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
        assert "frame-ancestors 'none'" in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert [a.status_code for a in answers] == [200, 200, 200, 404, 404]


def test_templates_hold_no_inline_script_or_style() -> None:
    """No template has an inline <script>, a <style> element, a style attribute or an on* handler."""
    found = []
    for path in sorted(TEMPLATES.glob("*.html")):
        text = path.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            if "src=" not in tag:
                found.append((path.name, tag))
        found += [(path.name, m) for m in re.findall(r"<style\b|\sstyle=|\son[a-z]+=", text)]
    assert len(list(TEMPLATES.glob("*.html"))) >= 10
    assert found == []
