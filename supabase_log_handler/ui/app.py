"""The dashboard's web application: routes, templates, static files, login.

``create_app(store, token=..., poll_interval_s=...)`` returns the ASGI app that
``supabase-log ui`` serves with uvicorn. Pages are Jinja2 templates with
autoescaping on for every value (log lines are untrusted input); htmx asks for
fragments of the same templates (``web.py``). The routes of each page live in ``pages_runs.py`` (runs, run) and
``pages_insights.py`` (errors, script, integrations); ``security.Guard`` wraps
the whole app. Handlers are plain functions, run on Starlette's thread pool,
because the stores block.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .pages_insights import InsightPages
from .pages_runs import RunPages
from .security import COOKIE, Guard, safe_next, session_value, token_matches
from .store import Store, StoreError
from .web import HERE, Web

MAX_LOGIN_BODY_BYTES = 4096


def _login(web: Web) -> Callable[[Request], Any]:
    async def login(request: Request) -> Response:
        if web.token is None:
            return RedirectResponse("/", status_code=303)
        if request.method == "GET":
            return web.render(
                "login.html", next=safe_next(request.query_params.get("next")), failed=False, nav=""
            )
        body = await request.body()
        form = parse_qs(body[:MAX_LOGIN_BODY_BYTES].decode("utf-8", "replace"))
        offered = (form.get("token") or [""])[0]
        target = safe_next((form.get("next") or ["/"])[0])
        if not token_matches(web.token, offered):
            return web.render("login.html", status=401, next=target, failed=True, nav="")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE, session_value(web.token), httponly=True, samesite="strict", path="/"
        )
        return response

    return login


def create_app(store: Store, *, token: str | None = None, poll_interval_s: float = 2.0) -> Guard:
    """The dashboard as an ASGI app over ``store``; with ``token``, every page needs it."""
    web = Web(store, token=token, poll_interval_s=poll_interval_s)
    runs, insights = RunPages(web), InsightPages(web)

    async def store_failed(request: Request, exc: Exception) -> Response:
        return web.message("Cannot read the data", str(exc), 502)

    async def not_found(request: Request, exc: Exception) -> Response:
        return web.message("Not found", f"Nothing at {request.url.path}.", 404)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            store.close()

    app = Starlette(
        routes=[
            Route("/", runs.runs_page),
            Route("/runs/{run_id}", runs.run_page),
            Route("/runs/{run_id}/logs", runs.log_rows),
            Route("/runs/{run_id}/tail", runs.tail),
            Route("/runs/{run_id}/progress", runs.progress),
            Route("/errors", insights.errors_page),
            Route("/scripts/{script:path}", insights.script_page),
            Route("/integrations", insights.integrations_page),
            Route("/integrations/calls", insights.calls_rows),
            Route("/login", _login(web), methods=["GET", "POST"]),
            Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
        ],
        exception_handlers={StoreError: store_failed, 404: not_found},
        lifespan=lifespan,
    )
    return Guard(app, token=token)
