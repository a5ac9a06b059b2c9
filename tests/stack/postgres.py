"""A throwaway PostgreSQL cluster for the test stack.

Owns: finding the PostgreSQL server binaries, creating a private cluster in a
temporary directory (initdb, trust auth, durability off, optional extra
settings such as ``shared_preload_libraries``), starting and stopping it on a
free 127.0.0.1 port, pausing it (SIGSTOP) for fault tests,
and creating databases bootstrapped like a Supabase project
(``supabase_bootstrap.sql``) with the project's migrations applied.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pgsql

__all__ = [
    "BOOTSTRAP_SQL",
    "MIGRATIONS_DIR",
    "Params",
    "PgCluster",
    "PgCommandError",
    "find_pg_bindir",
]

STACK_DIR = Path(__file__).resolve().parent
BOOTSTRAP_SQL = STACK_DIR / "supabase_bootstrap.sql"
#: The project's migrations: every ``*.sql`` file, applied in name order.
MIGRATIONS_DIR = STACK_DIR.parent.parent / "migrations"

SUPERUSER = "postgres"
AUTHENTICATOR_PASSWORD = "authenticator-password"
_COMMAND_TIMEOUT_S = 60.0
_PG_CTL_WAIT_S = 30
_CONNECT_TIMEOUT_S = 10

Params = Sequence[Any] | Mapping[str, Any] | None


def find_pg_bindir() -> Path:
    """Return the directory holding ``initdb``/``pg_ctl`` (PATH first, else the highest
    /usr/lib/postgresql/*/bin). Raises RuntimeError when PostgreSQL is not installed."""
    initdb = shutil.which("initdb")
    if initdb:
        bindir = Path(initdb).resolve().parent
        if (bindir / "pg_ctl").exists():
            return bindir

    def version(path: str) -> tuple[int, ...]:
        match = re.search(r"/postgresql/([\d.]+)/bin", path)
        return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if candidates:
        return Path(candidates[-1]).parent
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or in "
        "/usr/lib/postgresql/*/bin; install the `postgresql` package "
        "(e.g. `apt-get install -y postgresql`) to run these tests."
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCommandError(RuntimeError):
    """A PostgreSQL command-line tool (initdb, pg_ctl) failed; the message has its output."""


class PgCluster:
    """A private PostgreSQL cluster on 127.0.0.1, deleted when stopped.

    ``start()`` then ``create_database(name)`` gives a superuser DSN to a database
    bootstrapped like Supabase, with the project's migrations applied.
    """

    def __init__(
        self,
        *,
        bindir: Path | None = None,
        migrations_dir: Path = MIGRATIONS_DIR,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.bindir = bindir or find_pg_bindir()
        self.migrations_dir = migrations_dir
        # Extra postgresql.conf lines, values as written there (e.g. pg_cron's preload).
        self.extra_settings = dict(settings or {})
        self.host = "127.0.0.1"
        self.port = 0
        self.base_dir: Path | None = None
        self._lock = threading.Lock()
        self._bootstrap_lock = threading.Lock()
        self._running = False
        self._paused_pids: list[int] = []
        self._run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use the postgres user
            try:
                self._run_as = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root needs a `postgres` system user to own the test cluster; "
                    "installing the `postgresql` package creates it"
                ) from None

    # ------------------------------------------------------------------ lifecycle

    @property
    def data_dir(self) -> Path:
        if self.base_dir is None:
            raise RuntimeError("cluster not started")
        return self.base_dir / "data"

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> PgCluster:
        """initdb a fresh cluster in a new temp dir and start it; returns self."""
        with self._lock:
            if self._running:
                return self
            self.base_dir = Path(tempfile.mkdtemp(prefix="supabase-log-pg-", dir=self._temp_root()))
            try:
                if self._run_as is not None:
                    os.chown(self.base_dir, self._run_as.pw_uid, self._run_as.pw_gid)
                self._initdb()
                self._start_postmaster()
            except BaseException:
                self._remove_dir()
                raise
            self._running = True
            atexit.register(self.stop)
            return self

    def _temp_root(self) -> str | None:
        """The default temp dir, unless the server user could not reach it (then /tmp)."""
        if self._run_as is None:
            return None
        path = Path(tempfile.gettempdir()).resolve()
        for directory in (path, *path.parents):
            if not directory.stat().st_mode & 0o001:  # not traversable by others
                return "/tmp"
        return str(path)

    def _initdb(self) -> None:
        base = [
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ]
        try:
            self._run([*base, "--locale=C.UTF-8"])
        except PgCommandError:  # no C.UTF-8 locale on this system: plain C still gives UTF8
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._run([*base, "--locale=C"])

    def _start_postmaster(self) -> None:
        last_error: PgCommandError | None = None
        for _attempt in range(3):
            self.port = _free_port()
            self._write_config()
            try:
                self._run(
                    [
                        str(self.bindir / "pg_ctl"),
                        "-D",
                        str(self.data_dir),
                        "-l",
                        str(self.data_dir / "server.log"),
                        "-w",
                        "-t",
                        str(_PG_CTL_WAIT_S),
                        "start",
                    ]
                )
                return
            except PgCommandError as exc:  # port taken meanwhile: try another
                last_error = exc
        log = self.server_log()
        raise RuntimeError(f"PostgreSQL did not start: {last_error}\n{log}")

    def _write_config(self) -> None:
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.data_dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "'32MB'",
            "log_min_messages": "warning",
            "timezone": "'UTC'",
            **self.extra_settings,
        }
        # postgresql.auto.conf is read last and owned by the server user already.
        conf = self.data_dir / "postgresql.auto.conf"
        conf.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        if self._run_as is not None:
            os.chown(conf, self._run_as.pw_uid, self._run_as.pw_gid)

    def stop(self) -> None:
        """Stop the cluster immediately and delete its directory; safe to call twice."""
        with self._lock:
            if self.base_dir is None:
                return
            atexit.unregister(self.stop)
            if self._running:
                self._resume_locked()
                try:
                    self._run(
                        [
                            str(self.bindir / "pg_ctl"),
                            "-D",
                            str(self.data_dir),
                            "-m",
                            "immediate",
                            "-w",
                            "-t",
                            str(_PG_CTL_WAIT_S),
                            "stop",
                        ]
                    )
                except (PgCommandError, subprocess.TimeoutExpired):
                    self._kill_all(signal.SIGKILL)
                self._running = False
            self._remove_dir()

    def _remove_dir(self) -> None:
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def server_log(self) -> str:
        """The server's log file (for failure messages)."""
        try:
            return (self.data_dir / "server.log").read_text(errors="replace")
        except (OSError, RuntimeError):
            return ""

    # ------------------------------------------------------------------ faults

    def postmaster_pid(self) -> int:
        first_line = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
        return int(first_line)

    def _process_tree(self) -> list[int]:
        """The postmaster followed by its children (Linux /proc)."""
        root = self.postmaster_pid()
        children: list[int] = []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                text = Path(stat).read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...; comm may contain spaces and parentheses.
            ppid = int(text[text.rindex(")") + 2 :].split()[1])
            if ppid == root:
                children.append(int(text.split(" ", 1)[0]))
        return [root, *children]

    def pause(self) -> None:
        """Freeze the server (SIGSTOP to the postmaster and its children)."""
        with self._lock:
            if not self._running or self._paused_pids:
                return
            pids = self._process_tree()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            self._paused_pids = pids

    def resume(self) -> None:
        """Undo :meth:`pause` (SIGCONT)."""
        with self._lock:
            self._resume_locked()

    def _resume_locked(self) -> None:
        for pid in reversed(self._paused_pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._paused_pids = []

    def _kill_all(self, sig: signal.Signals) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError, RuntimeError):
            for pid in self._process_tree():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    # ------------------------------------------------------------------ SQL

    def dsn(
        self, dbname: str = "postgres", *, user: str = SUPERUSER, password: str | None = None
    ) -> str:
        """A libpq URL for ``dbname`` (superuser ``postgres`` unless ``user`` is given)."""
        auth = user if password is None else f"{user}:{password}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    def authenticator_dsn(self, dbname: str) -> str:
        """The DSN PostgREST uses: the ``authenticator`` login role."""
        return self.dsn(dbname, user="authenticator", password=AUTHENTICATOR_PASSWORD)

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """A new superuser psycopg connection (autocommit) to ``dbname``; caller closes it."""
        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", _CONNECT_TIMEOUT_S)
        return psycopg.connect(self.dsn(dbname), **kwargs)

    def execute(self, dbname: str, query: str | pgsql.Composable, params: Params = None) -> None:
        """Run ``query`` (several statements allowed when ``params`` is None) in autocommit."""
        with self.connect(dbname) as conn:
            conn.execute(query, params)  # type: ignore[arg-type]

    def fetch(
        self, dbname: str, query: str | pgsql.Composable, params: Params = None
    ) -> list[tuple[Any, ...]]:
        """Run ``query`` and return all its rows as tuples."""
        with self.connect(dbname) as conn:
            cur = conn.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description is not None else []

    def create_database(
        self,
        name: str,
        *,
        migrations: bool = True,
        sql: str | None = None,
    ) -> str:
        """Create database ``name`` bootstrapped with supabase_bootstrap.sql, then run
        ``sql`` (if given) and the project's migrations (unless ``migrations=False``),
        each in its own transaction. Returns the superuser DSN."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"invalid database name: {name!r}")
        self.execute("postgres", pgsql.SQL("create database {}").format(pgsql.Identifier(name)))
        with self._bootstrap_lock:  # roles are cluster-wide: never create them concurrently
            self.run_script(name, BOOTSTRAP_SQL.read_text())
        if sql is not None:
            self.run_script(name, sql)
        if migrations:
            self.apply_migrations(name)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting its sessions."""
        self.execute(
            "postgres",
            pgsql.SQL("drop database if exists {} with (force)").format(pgsql.Identifier(name)),
        )

    def migration_files(self) -> list[Path]:
        return sorted(self.migrations_dir.glob("*.sql"), key=lambda p: p.name)

    def apply_migrations(self, dbname: str) -> list[Path]:
        """Apply every migration file in name order, one transaction each."""
        files = self.migration_files()
        for path in files:
            self.run_script(dbname, path.read_text())
        return files

    def run_script(self, dbname: str, script: str) -> None:
        """Run a multi-statement SQL script in one transaction."""
        with self.connect(dbname) as conn, conn.transaction():
            conn.execute(script)

    # ------------------------------------------------------------------ processes

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8",
            "TZ": "UTC",
        }
        kwargs: dict[str, Any] = {}
        if self._run_as is not None:
            kwargs.update(user=self._run_as.pw_uid, group=self._run_as.pw_gid, extra_groups=[])
            env["HOME"] = self._run_as.pw_dir
            env["USER"] = env["LOGNAME"] = self._run_as.pw_name
        try:
            return subprocess.run(
                argv,
                env=env,
                cwd=str(self.base_dir),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_COMMAND_TIMEOUT_S,
                check=True,
                **kwargs,
            )
        except subprocess.CalledProcessError as exc:
            raise PgCommandError(
                f"{Path(argv[0]).name} exited with {exc.returncode}:\n{exc.stdout}{exc.stderr}"
            ) from None
