"""The benchmark's local stack: PostgreSQL + the PostgREST-compatible gateway.

Both come from ``tests/stack`` (the same classes the tests use), imported with
``tests/`` on ``sys.path``. By default the gateway runs in a child process
(``_gateway_proc.py``) so that its HTTP and JSON work does not compete for this
process's GIL while caller-thread cost is measured: a real Supabase project is
remote, too. ``GatewayProcess`` offers the part of ``Gateway``'s interface the
benchmark uses (``url``, ``service_key``, ``requests``, ``reset_log``, ``stop``,
``start``, ``close``); ``in_process=True`` uses ``Gateway`` itself instead.

Every wait here has a deadline; ``Stack.close`` stops everything and never raises.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, NamedTuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TESTS_DIR = ROOT / "tests"
DATABASE = "supabase_log_bench"


def import_stack() -> tuple[Any, Any]:
    """(PgCluster, Gateway) from tests/stack, with tests/ put on sys.path."""
    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))
    from stack.gateway import Gateway
    from stack.postgres import PgCluster

    return PgCluster, Gateway


def progress(message: str) -> None:
    """A progress line on stderr (stdout is kept for the result)."""
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def child_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: the project importable, no SUPABASE_* settings
    (a run opened here exports SUPABASE_LOG_RUN_ID, which children must not join)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


class ChildError(RuntimeError):
    """A helper process failed, answered garbage or missed its deadline."""


class LineChannel:
    """JSON lines to and from a child process, every read with a deadline."""

    def __init__(
        self, argv: list[str], *, cwd: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=cwd,
            env=env if env is not None else child_env(),
        )
        self._buf = b""
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()

    def send(self, obj: Any) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise ChildError(f"child process is gone ({exc}){self.stderr_tail()}") from None

    def recv(self, timeout_s: float) -> Any:
        """The next JSON line from the child; ChildError on EOF, garbage or timeout."""
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(self._fd, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ChildError(
                        f"no answer from child within {timeout_s:.0f} s{self.stderr_tail()}"
                    )
                if not sel.select(remaining):
                    continue
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    self.proc.poll()
                    raise ChildError(
                        f"child exited (code {self.proc.returncode}) without answering{self.stderr_tail()}"
                    )
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError:
            raise ChildError(
                f"child wrote a non-JSON line: {line[:200]!r}{self.stderr_tail()}"
            ) from None

    def stderr_tail(self, limit: int = 2000) -> str:
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""
        return f"\n--- child stderr (tail) ---\n{text[-limit:]}" if text.strip() else ""

    def close(self, timeout_s: float = 10.0) -> None:
        """Close stdin (the child exits on EOF), wait, then kill if need be. Never raises."""
        try:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5.0)
        for stream in (self.proc.stdout, self._stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass


class RequestRecord(NamedTuple):
    """Same fields as tests/stack/gateway.RequestRecord."""

    method: str
    path: str
    rows: int
    status: int


class GatewayProcess:
    """A tests/stack Gateway running in a child process, driven over JSON lines."""

    def __init__(self, dsn: str, *, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self._chan = LineChannel([sys.executable, str(HERE / "_gateway_proc.py"), dsn])
        try:
            hello = self._chan.recv(timeout_s)
            self.url: str = hello["url"]
            self.service_key: str = hello["service_key"]
        except BaseException:
            self._chan.close(5.0)
            raise
        self._closed = False

    def _call(self, op: str) -> Any:
        self._chan.send({"op": op})
        answer = self._chan.recv(self.timeout_s)
        if not isinstance(answer, dict) or "error" in answer:
            raise ChildError(f"gateway process refused {op!r}: {answer!r}")
        return answer

    @property
    def requests(self) -> list[RequestRecord]:
        return [RequestRecord(*r) for r in self._call("requests")["requests"]]

    def reset_log(self) -> None:
        self._call("reset_log")

    def stop(self) -> None:
        self._call("stop")

    def start(self) -> GatewayProcess:
        self._call("start")
        return self

    @property
    def running(self) -> bool:
        return bool(self._call("running")["running"])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ChildError):
            self._call("close")
        self._chan.close(10.0)


class Stack:
    """PostgreSQL cluster + one bootstrapped database + a gateway in front of it."""

    def __init__(self, *, in_process_gateway: bool = False) -> None:
        self.in_process_gateway = in_process_gateway
        self.cluster: Any = None
        self.gateway: Any = None

    def start(self) -> Stack:
        PgCluster, Gateway = import_stack()
        self.cluster = PgCluster().start()  # pg_ctl -w -t 30, each command capped at 60 s
        self.cluster.create_database(DATABASE)
        dsn = self.cluster.authenticator_dsn(DATABASE)
        self.gateway = Gateway(dsn) if self.in_process_gateway else GatewayProcess(dsn)
        return self

    def fetchval(self, query: str, params: Any = None) -> Any:
        rows = self.cluster.fetch(DATABASE, query, params)
        return rows[0][0] if rows else None

    def close(self) -> list[str]:
        """Stop the gateway and the cluster; returns the problems met (never raises)."""
        problems: list[str] = []
        if self.gateway is not None:
            try:
                self.gateway.close()
            except Exception as exc:
                problems.append(f"gateway close: {exc!r}")
            self.gateway = None
        if self.cluster is not None:
            try:
                self.cluster.stop()
            except Exception as exc:
                problems.append(f"PostgreSQL stop: {exc!r}")
            self.cluster = None
        return problems
