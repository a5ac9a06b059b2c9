"""The ``supabase-log ui`` command: check the bind, open the store, serve the app with uvicorn.

Owns the command's options and start-up: a non-loopback ``--host`` without a
token is refused before anything listens; the port is bound here first so a busy
port gives a plain error; the store is Supabase when configured, else the local
store. Third-party modules (the ``[ui]`` extra) are imported only when it runs.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
from typing import Any

from .._threads import start_without_signals, without_signals
from ..config import Settings, load_settings, read_env_file
from ..errors import ConfigurationError
from .security import TOKEN_ENV, check_bind, is_loopback

EXTRA = "pip install 'supabase-log-handler[ui]'"
DEFAULT_PORT = 8787
OPEN_WAIT_S = 10.0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ui",
        help="a local web dashboard: runs, logs, errors, calls, schedules",
        description="Serve a read-only dashboard over the configured Supabase project (the key stays "
        "in this process) or the local store. Binds to 127.0.0.1; any other address needs a token.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port (default {DEFAULT_PORT}; 0: any free port)",
    )
    p.add_argument("--open", action="store_true", help="open the dashboard in a browser")
    p.add_argument(
        "--token",
        help=f"require this token (at least 16 characters); prefer ${TOKEN_ENV}, since other users "
        "of the machine can see a command line",
    )
    p.add_argument(
        "--refresh",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often running runs and live tails refresh (default 2)",
    )
    p.set_defaults(func=cmd_ui)


def resolve_token(given: str | None, env_file: str | None) -> str | None:
    """``--token``, else ``$SUPABASE_LOG_UI_TOKEN``, else the same name in the ``.env`` file."""
    token = given or os.environ.get(TOKEN_ENV) or read_env_file(env_file).get(TOKEN_ENV) or ""
    return token.strip() or None


def open_store(settings: Settings) -> Any:
    """The store to read: Supabase when a URL is configured, else the local SQLite file."""
    if settings.uses_supabase:
        defaults = (settings.schema, settings.runs_table, settings.logs_table) == (
            "public",
            "runs",
            "logs",
        )
        if not defaults:
            raise ConfigurationError(
                "the dashboard's SQL functions read public.runs and public.logs; it cannot read "
                "other schemas or table names on Supabase (unset SUPABASE_LOG_SCHEMA and the "
                "table-name settings, or read the local store)"
            )
        from .store_rest import RestStore

        return RestStore(settings)
    from .store_local import LocalStore

    return LocalStore(settings)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a CommandError naming the fix."""
    from ..cli._common import CommandError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise CommandError(
            f"cannot listen on {host}:{port}: {exc.strerror}; pass another --port"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def cmd_ui(args: argparse.Namespace) -> int:
    from ..cli._common import CommandError, note

    token = resolve_token(args.token, args.env_file)
    check_bind(args.host, token)
    if args.refresh <= 0:
        raise CommandError("--refresh must be a number of seconds above 0")
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise CommandError(
            f"the dashboard needs its extra ({exc.name} is missing): {EXTRA}"
        ) from None
    from .app import create_app
    from .store import StoreError

    try:
        store = open_store(load_settings({}, env_file=args.env_file))
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    address = f"http://{shown}:{port}/"
    app = create_app(store, token=token, poll_interval_s=args.refresh)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, server_header=False, proxy_headers=False
    )
    server = uvicorn.Server(config)
    lock = "" if token is None else " (log in with the token)"
    where = "" if is_loopback(args.host) else ", reachable from other machines"
    note(f"dashboard at {address}{lock}{where}; reading the {store.description}; Ctrl-C stops it")
    if args.open:
        start_without_signals(
            threading.Thread(
                target=without_signals(lambda: _open_when_started(server, address)), daemon=True
            )
        )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        store.close()
    return 0


def _open_when_started(server: Any, address: str) -> None:
    import time
    import webbrowser

    deadline = time.monotonic() + OPEN_WAIT_S
    pause = threading.Event()
    while not server.started and time.monotonic() < deadline:
        pause.wait(0.05)
    if server.started and not webbrowser.open(address):
        print(f"supabase-log: no browser found; open {address}", file=sys.stderr, flush=True)
