"""PgBouncer in transaction mode in front of the test cluster, and a link that can fail.

Owns: the direct sink's side of the test stack. ``PgBouncer`` runs Debian's
``pgbouncer`` (installed by ``scripts/test.sh``) as the ``postgres`` user when
root, with ``pool_mode = transaction`` (what Supabase's pooler does on port
6543: a server connection is lent for one transaction, so prepared statements
and session state do not survive it) and a bounded pool. ``stop()`` kills it
(clients see their connections drop and new ones refused), ``start()`` brings
it back on the same port.

``FaultLink`` is a TCP relay between the client and PgBouncer: the client's
side of a slow network. With ``delay_response_s`` set, an answer that carries
a ``COMMIT``'s completion is held that long, so the server has committed when
the client's deadline passes (what the REST gateway's ``delay_response_s``
does). It also reads the protocol it relays, to record each COPY the client
sent (rows, target) and the SQLSTATE the server answered (``writes()``).

``DirectBackend`` puts both together behind the gateway's fault interface
(``stop``/``start``/``delay_response_s``/``clear_faults``), with ``env`` and
``settings`` for a handler that uses ``sink="postgres"`` through them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "DirectBackend",
    "FaultLink",
    "PgBouncer",
    "Write",
    "direct_faults",
    "find_pgbouncer",
    "pgbouncer",
]

_START_WAIT_S = 15.0


def find_pgbouncer() -> str:
    """Path of the pgbouncer binary (``scripts/test.sh`` installs Debian's package)."""
    for candidate in (shutil.which("pgbouncer"), "/usr/sbin/pgbouncer"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("pgbouncer is not installed: `apt-get install -y pgbouncer` (scripts/test.sh does it)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.01)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class PgBouncer:
    """A PgBouncer process in transaction mode for one PostgreSQL server."""

    def __init__(self, pg_host: str, pg_port: int, *, pool_size: int = 20) -> None:
        self.pg_host, self.pg_port, self.pool_size = pg_host, pg_port, pool_size
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="supabase-log-pgbouncer-", dir="/tmp"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._run_as = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self._write_config()

    def _write_config(self) -> None:
        (self.dir / "userlist.txt").write_text('"postgres" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={self.pg_host} port={self.pg_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 1000\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
        )
        if self._run_as is not None:
            os.chown(self.dir, self._run_as.pw_uid, self._run_as.pw_gid)
            for f in self.dir.iterdir():
                os.chown(f, self._run_as.pw_uid, self._run_as.pw_gid)

    def dsn(self, dbname: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}?sslmode=disable"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> PgBouncer:
        if self.running:
            return self
        kwargs: dict[str, Any] = {}
        if self._run_as is not None:  # PgBouncer refuses to run as root
            kwargs.update(user=self._run_as.pw_uid, group=self._run_as.pw_gid, extra_groups=[])
        for _attempt in range(50):  # the port may still be held by the last run's sockets
            self.proc = subprocess.Popen(
                [find_pgbouncer(), "-q", str(self.dir / "pgbouncer.ini")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                cwd=str(self.dir), **kwargs,
            )  # fmt: skip
            try:
                _wait_port(self.port, time.monotonic() + _START_WAIT_S, self.proc)
                return self
            except RuntimeError:
                self.proc.wait(5)
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not start:\n{self.log()}")

    def stop(self) -> None:
        """Kill it at once: connected clients lose their connections."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "pgbouncer.log").read_text(errors="replace")[-4000:]
        return ""


@dataclass
class Write:
    """One COPY a client sent through the link, and how the server answered it."""

    table: str
    rows: int = 0
    sqlstate: str | None = None  # the first error answered after it, if any


@dataclass
class _Conn:
    client: socket.socket
    server: socket.socket
    writes: list[Write] = field(default_factory=list)
    last: Write | None = None
    pending: bytes = b""
    closed: bool = False


_COMMIT_DONE = b"C\x00\x00\x00\x0bCOMMIT\x00"


class FaultLink:
    """A TCP relay to ``target_port`` that can be stopped, or made to answer commits late."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = _free_port()
        self.delay_response_s = 0.0
        self._listener: socket.socket | None = None
        self._conns: list[_Conn] = []
        self._lock = threading.Lock()
        self._writes: list[Write] = []

    def start(self) -> FaultLink:
        if self._listener is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(256)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True, name="fault-link").start()
        return self

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        sock, self._listener = self._listener, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            self._close(c)

    def writes(self, table: str | None = None) -> list[Write]:
        """The COPYs seen so far (into the staging table of ``table``, or all)."""
        with self._lock:
            return [w for w in self._writes if table is None or w.table == table]

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), 5)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(client, server)
            with self._lock:
                if self._listener is not listener:
                    self._close(conn)
                    return
                self._conns.append(conn)
            threading.Thread(target=self._pump_up, args=(conn,), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(conn,), daemon=True).start()

    def _close(self, conn: _Conn) -> None:
        conn.closed = True
        for s in (conn.client, conn.server):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def _pump_up(self, conn: _Conn) -> None:
        """Client to server; reads the messages to see COPYs (the startup packet has no type)."""
        buf = b""
        started = False
        kind, left = b"", 0  # the message being streamed through and its bytes still to come
        try:
            while True:
                data = conn.client.recv(65536)
                if not data:
                    break
                conn.server.sendall(data)
                buf += data
                while buf:
                    if left:
                        part, buf = buf[:left], buf[left:]
                        left -= len(part)
                        if kind == b"d" and conn.last is not None:  # COPY text: a row per line
                            conn.last.rows += part.count(b"\n")
                        if kind in (b"Q", b"P"):
                            conn.pending += part
                            if not left:
                                self._note_query(conn, conn.pending)
                                conn.pending = b""
                        continue
                    head = 4 if not started else 5
                    if len(buf) < head:
                        break
                    if not started:
                        (n,) = struct.unpack("!I", buf[:4])
                        kind, left, buf, started = b"", n - 4, buf[4:], n != 8  # SSLRequest: 8
                        continue
                    kind, (n,) = buf[:1], struct.unpack("!I", buf[1:5])
                    left, buf = n - 4, buf[5:]
        except OSError:
            pass
        finally:
            self._close(conn)

    def _note_query(self, conn: _Conn, payload: bytes) -> None:
        text = payload.decode("utf-8", "replace").lower().replace('"', "")
        marker = "copy _slh_"  # the direct sink's staging table: _slh_<target table>
        at = text.find(marker)
        if at >= 0:
            name = text[at + len(marker) :].split(" ", 1)[0]
            conn.last = Write(name)
            with self._lock:
                self._writes.append(conn.last)

    def _pump_down(self, conn: _Conn) -> None:
        """Server to client; an answer carrying a COMMIT's completion waits ``delay_response_s``."""
        try:
            while True:
                data = conn.server.recv(65536)
                if not data:
                    break
                if conn.last is not None and conn.last.sqlstate is None:
                    conn.last.sqlstate = _sqlstate(data)
                if self.delay_response_s and _COMMIT_DONE in data:
                    deadline = time.monotonic() + self.delay_response_s
                    while not conn.closed and time.monotonic() < deadline:
                        select.select([], [], [], min(0.05, deadline - time.monotonic()))
                conn.client.sendall(data)
        except OSError:
            pass
        finally:
            self._close(conn)


def _sqlstate(data: bytes) -> str | None:
    """The SQLSTATE of the first ErrorResponse in ``data`` (fields: S severity ... C code)."""
    at = data.find(b"SERROR\x00")
    code = data.find(b"\x00C", at) if at >= 0 else -1
    return data[code + 2 : code + 7].decode("ascii", "replace") if code >= 0 else None


class DirectBackend:
    """PgBouncer (transaction mode) plus a FaultLink, driven like the REST gateway in fault tests."""

    def __init__(self, bouncer: PgBouncer, dbname: str) -> None:
        self.bouncer = bouncer
        self.dbname = dbname
        self.link = FaultLink(bouncer.port).start()
        self.closed = False

    @property
    def db_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.link.port}/{self.dbname}?sslmode=disable"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a process that should write through this backend."""
        return {"SUPABASE_LOG_SINK": "postgres", "SUPABASE_DB_URL": self.db_url}

    @property
    def settings(self) -> dict[str, Any]:
        """Handler keywords for writing through this backend."""
        return {"sink": "postgres", "db_url": self.db_url}

    @property
    def delay_response_s(self) -> float:
        return self.link.delay_response_s

    @delay_response_s.setter
    def delay_response_s(self, value: float) -> None:
        self.link.delay_response_s = value

    def stop(self) -> None:
        """The pooler goes away: connections drop, new ones are refused."""
        self.link.stop()
        self.bouncer.stop()

    def start(self) -> None:
        """The pooler is back (the link too, unless :meth:`close` retired it)."""
        self.bouncer.start()
        if not self.closed:
            self.link.start()

    def clear_faults(self) -> None:
        self.link.delay_response_s = 0.0

    def writes(self, table: str | None = None) -> list[Write]:
        return self.link.writes(table)

    def close(self) -> None:
        self.closed = True
        self.link.stop()


@pytest.fixture(scope="session")
def pgbouncer(pg_cluster: Any) -> Any:
    """PgBouncer in transaction mode in front of the session's cluster, stopped at the end."""
    bouncer = PgBouncer(pg_cluster.host, pg_cluster.port).start()
    try:
        yield bouncer
    finally:
        bouncer.close()


@pytest.fixture
def direct_faults(pgbouncer: PgBouncer, database: str) -> Any:
    """The session database through PgBouncer and a FaultLink, for a test that stops or slows
    it (the direct sink's ``gateway_faults``); running and undelayed again afterwards."""
    backend = DirectBackend(pgbouncer, database)
    try:
        yield backend
    finally:
        backend.clear_faults()
        backend.start()
        backend.close()
