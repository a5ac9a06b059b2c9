"""Shared fixtures: the real stack (``stack/``) plus handler and subprocess helpers."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from stack.fixtures import *  # noqa: F403 - the stack's fixtures
from stack.gateway import Gateway

from supabase_log_handler import SupabaseHandler, context, lifecycle

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "scripts"
sys.path.insert(0, str(SCRIPTS))  # helpers the child scripts import (exitclock, vendorlib)
IDENTITY_TERMS = ("delivered", "spooled_pending", "dead_lettered", "dropped", "in_memory")


def assert_identity(stats: dict[str, Any]) -> None:
    """The ledger adds up, overall and per table: accepted = delivered + spooled + dead + dropped + in memory."""
    for name, counts in [("all", stats), *stats["by_table"].items()]:
        terms = {k: counts[k] for k in IDENTITY_TERMS}
        if name == "all":
            terms["dropped"] = stats["dropped_total"]
        assert counts["accepted"] == sum(terms.values()), (name, counts)


@pytest.fixture(autouse=True)
def _clean_logging_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with the root logger, runs and env as they were; handlers are closed."""
    for var in list(os.environ):
        if var.startswith(("SUPABASE_", "GITHUB_")) or var in ("CI", "DEBUG"):
            monkeypatch.delenv(var, raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in lifecycle.handlers():
        if not h.closed:
            h.close(1.0)
    root.setLevel(level)
    context.reset()
    lifecycle.reset()


@pytest.fixture
def make_handler(gateway: Gateway, tmp_path: Path) -> Callable[..., SupabaseHandler]:
    """Factory for a SupabaseHandler on the session gateway, with a private spool."""

    def factory(gw: Gateway | None = None, **settings: Any) -> SupabaseHandler:
        target = gw or gateway
        settings.setdefault("url", target.url)
        settings.setdefault("key", target.service_key)
        settings.setdefault("spool_path", str(tmp_path / "spool"))
        settings.setdefault("install_signal_handlers", False)
        settings.setdefault("capture_uncaught", False)
        settings.setdefault("flush_interval_s", 0.2)
        return SupabaseHandler(**settings)

    return factory


@pytest.fixture
def attach() -> Callable[..., logging.Logger]:
    """Attach a handler to a fresh, non-propagating logger and return the logger."""
    created: list[logging.Logger] = []

    def factory(
        handler: logging.Handler, name: str = "job", level: int = logging.DEBUG
    ) -> logging.Logger:
        logger = logging.getLogger(f"test.{name}.{len(created)}.{id(handler)}")
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(level)
        created.append(logger)
        return logger

    yield factory
    for logger in created:
        logger.handlers = []


def start_script(source: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start Python ``source`` in a fresh interpreter (project importable, pipes for output)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(source)],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_script(
    source: str,
    env: dict[str, str] | None = None,
    *,
    timeout_s: float = 120,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run Python ``source`` in a fresh interpreter with the project importable."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(SCRIPTS), full_env.get("PYTHONPATH", "")]
    )
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"script failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def abort_tree(pid: int) -> str:
    """SIGABRT to a process and its descendants, children first: with PYTHONFAULTHANDLER set,
    each Python among them prints every thread's stack on stderr (for a hang's report).
    Returns each process's and thread's signal masks, read from /proc first."""
    said = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        said.append(abort_tree(int(child)))
    try:
        for task in sorted(os.listdir(f"/proc/{pid}/task")):
            status = Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines()
            keep = [ln for ln in status if ln.startswith(("Name:", "State:", "SigPnd:", "ShdPnd:",
                                                          "SigBlk:", "SigIgn:", "SigCgt:"))]  # fmt: skip
            said.append(f"pid {pid} task {task}: " + "; ".join(keep))
    except OSError:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGABRT)
    return "\n".join(said)


def last_json_line(text: str) -> Any:
    """The last line of ``text`` that parses as JSON (scripts report through stdout)."""
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise AssertionError(f"no JSON line in output:\n{text}")


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str = "condition") -> None:
    """Wait for ``condition()`` to hold, checking every 20 ms, failing after ``timeout_s``."""
    import threading
    import time

    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        pause.wait(0.02)


# nanosleep, clock_nanosleep, select, pselect6, poll, ppoll
_SLEEP_SYSCALLS = {"x86_64": {35, 230, 23, 270, 7, 271}, "aarch64": {101, 115, 72, 73}}


def wait_until_asleep(pid: int, timeout_s: float = 60) -> None:
    """Wait until the main thread of process ``pid`` is blocked in a timed sleep.

    CPython runs a Python signal handler only between bytecodes or when a blocking
    call is interrupted. A signal that lands after the main thread's last check and
    before it enters ``time.sleep`` interrupts nothing: the handler runs when the sleep
    ends (a test would wait for it to time out). So a test that signals a job which
    announced it is about to sleep waits until it really sleeps (its kernel wait
    channel is a timer or poll wait, not the GIL's futex).
    """

    task = Path(f"/proc/{pid}/task/{pid}")

    def asleep() -> bool:
        try:
            channel = (task / "wchan").read_text().strip()
            if channel not in ("", "0"):
                return any(word in channel for word in ("nanosleep", "poll_schedule", "select"))
            number = (task / "syscall").read_text().split()[0]  # wchan hidden: the syscall
        except (OSError, IndexError):
            return True  # gone, or nothing to read this from: signal it now
        if not number.isdigit():
            return number != "running"
        return int(number) in _SLEEP_SYSCALLS.get(platform.machine(), {int(number)})

    wait_until(asleep, timeout_s, f"process {pid} to sleep")


@pytest.fixture
def external_gateway(pg_cluster: Any) -> Iterator[tuple[Any, Any]]:
    """A fresh database served by a gateway in its own process: ``(gateway, db)``."""
    import uuid

    from stack.external import ExternalGateway
    from stack.fixtures import Db

    name = f"ext_{uuid.uuid4().hex[:12]}"
    pg_cluster.create_database(name)
    gw = ExternalGateway(pg_cluster.authenticator_dsn(name)).start()
    try:
        yield gw, Db(pg_cluster, name)
    finally:
        gw.stop()
        pg_cluster.drop_database(name)
