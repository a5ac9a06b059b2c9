"""``supabase-log run -- COMMAND...``: one run around any command, without changing it.

Owns starting the command, its environment, the run's start and end, and what
becomes rows. The wrapper opens the run (exported to the command through
``SUPABASE_LOG_RUN_ID``) and keeps a SupabaseHandler to deliver it.

* Python commands (``python script.py``, ``python -m pkg``, a ``#!...python``
  script): ``_inject`` goes first on ``PYTHONPATH`` so the handler attaches to
  the root logger inside the program and every Python child it starts
  (``autoattach.py``); their records are the rows, and so is what they print
  (``capture.py``; ``--no-capture-print`` turns that off).
* Any other command: each stdout line is an INFO row, each stderr line a
  WARNING row (ERROR when it looks like an error), both still echoed.

The exit code decides the status (non-zero: ``error`` with the code and the last
stderr lines); SIGINT/SIGTERM/SIGHUP/SIGQUIT are forwarded; the command's exit
code is returned (128 + signal when a signal ended it).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

from .. import autoattach
from .._cmdline import mask_argv
from .._scriptname import code_argument, name_for_code
from .._threads import start_without_signals, without_signals
from ..capture import ENV_CAPTURE_PRINT
from ..config import read_env_file
from ..diagnostics import PREFIX
from ..errors import ConfigurationError
from ..handler import SupabaseHandler
from ..runs import Run
from ._common import CommandError, note

INJECT_DIR = Path(__file__).resolve().parent.parent / "_inject"
_PYTHON_NAME = re.compile(r"^(python|pypy)(\d+(\.\d+)*)?w?(\.exe)?$", re.IGNORECASE)
_SHELLS = {"sh", "bash", "zsh", "dash", "ksh", "fish"}
_LOOKS_LIKE_ERROR = re.compile(
    r"error|traceback|fatal|exception|critical|panic|failed", re.IGNORECASE
)
_PY_OPTS_WITH_VALUE = {"-W", "-X", "-Q", "--check-hash-based-pycs"}
FORWARDED = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)
READER_GRACE_S = 5.0  # after exit, how long output still held open by grandchildren is read


def is_python_command(argv: list[str]) -> bool:
    """Is this a Python interpreter, or a script whose ``#!`` line names one?"""
    exe = argv[0]
    if _PYTHON_NAME.match(Path(exe).name):
        return True
    found = shutil.which(exe) or exe
    try:
        if os.path.realpath(found) == os.path.realpath(sys.executable):
            return True
        with open(found, "rb") as f:
            first = f.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first


def default_script_name(argv: list[str], python: bool) -> str:
    """``python sync.py`` -> sync, ``python -m jobs.sync`` -> jobs.sync, ``bash x.sh`` -> x, ``./job`` -> job.

    ``python -c CODE`` is named after the module CODE imports, else ``python-c`` (``_scriptname``).
    """
    exe = Path(argv[0]).name
    args = argv[1:]
    if python and _PYTHON_NAME.match(exe):
        i = 0
        while i < len(args):
            a = args[i]
            if a == "-m" and i + 1 < len(args):
                return args[i + 1]
            if a.startswith("-m") and len(a) > 2:
                return a[2:]
            if a.startswith("-c"):
                return name_for_code(code_argument(args[i:]))
            if a in _PY_OPTS_WITH_VALUE:
                i += 2
                continue
            if a.startswith("-"):
                i += 1
                continue
            return Path(a).stem or "python"
        return "python"
    if exe in _SHELLS:
        for a in args:
            if a == "-c":
                return exe
            if not a.startswith("-"):
                return Path(a).stem or exe
    return Path(argv[0]).stem or "command"


class _Tee:
    """Copies one pipe of the command to our own stream, keeping a tail and making rows."""

    def __init__(
        self,
        pipe: IO[bytes],
        echo: IO[bytes] | None,
        logger: logging.Logger | None,
        stream: str,
        command: str,
    ) -> None:
        self.pipe = pipe
        self.echo = echo
        self.logger = logger
        self.stream = stream
        self.command = command
        self.tail: collections.deque[str] = collections.deque(maxlen=200)
        self.lines = 0
        self.thread = threading.Thread(
            target=without_signals(self._run), name=f"supabase-log-{stream}", daemon=True
        )
        start_without_signals(self.thread)

    def _run(self) -> None:
        for raw in iter(lambda: self.pipe.readline(65536), b""):
            if self.echo is not None:
                try:
                    self.echo.write(raw)
                    self.echo.flush()
                except (OSError, ValueError):
                    self.echo = None  # our own stream is gone; keep recording
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.lines += 1
            if not text.strip() or text.startswith(PREFIX):  # the handler's own notices are not the
                continue  # command's output: no row, and never the reason a run failed
            self.tail.append(text)
            if self.logger is not None:
                self._row(text)
        self.pipe.close()

    def _row(self, text: str) -> None:
        assert self.logger is not None
        if self.stream == "stdout":
            level = logging.INFO
        else:
            level = logging.ERROR if _LOOKS_LIKE_ERROR.search(text) else logging.WARNING
        record = self.logger.makeRecord(
            self.logger.name,
            level,
            self.command,
            self.lines,
            text,
            (),
            None,
            func=None,
            extra={"meta": {"stream": self.stream}},
        )
        self.logger.handle(record)


def _output_logger(handler: SupabaseHandler, name: str) -> logging.Logger:
    """A private logger (outside the logging tree, so nothing propagates) feeding ``handler``."""
    logger = logging.Logger(name, logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    return logger


def _child_env(python: bool, env_file: str | None, capture_print: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    if not capture_print:
        env[ENV_CAPTURE_PRINT] = "false"
    if env_file:  # the command reads the same settings as the wrapper
        for key, value in read_env_file(env_file).items():
            if key.startswith("SUPABASE_") or key in ("DEBUG",):
                env.setdefault(key, value)
    if python:
        parts = [
            str(INJECT_DIR),
            *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(INJECT_DIR)],
        ]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def _from_terminal(signum: int) -> bool:
    """A SIGINT that the terminal also sent to the command (same foreground group)."""
    if signum != signal.SIGINT:
        return False
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except (OSError, AttributeError):  # no terminal, or no job control (Windows)
        return False


class _Forwarder:
    """Passes the signals we receive on to the command; installed before it starts, so a
    signal that arrives while it starts is held and passed on as soon as it runs."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.pending: list[int] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if _from_terminal(signum):
            return  # the command got it from the terminal already
        if self.proc is None:
            self.pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            self.proc.send_signal(signum)

    def started(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        for signum in self.pending:
            self(signum, None)
        self.pending.clear()


@contextlib.contextmanager
def _forwarding() -> Iterator[_Forwarder]:
    """Signal handlers that forward to the command while it runs (``started(proc)`` names it)."""
    forward = _Forwarder()
    previous: dict[int, Any] = {}
    for sig in FORWARDED:
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            previous[sig] = signal.signal(sig, forward)
    try:
        yield forward
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _exit_code(rc: int) -> int:
    """A shell's view of the status: 128 + signal number when a signal ended the command."""
    return 128 - rc if rc < 0 else rc


def run_command(
    command: list[str],
    *,
    script_name: str | None,
    triggered_by: str | None,
    mode: str = "auto",
    env_file: str | None = None,
    tail_lines: int = 20,
    capture_print: bool = True,
) -> int:
    """Run ``command`` as one run; returns its exit code."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CommandError("nothing to run: supabase-log run [options] -- COMMAND [ARGS...]")
    autoattach.detach()
    python = mode == "python" or (mode == "auto" and is_python_command(command))
    try:
        handler = SupabaseHandler(
            env_file=env_file,
            implicit_run=False,
            capture_uncaught=False,
            install_signal_handlers=False,
        )
    except ConfigurationError as exc:  # never keep the job itself from running
        note(f"not recording this run: {exc}")
        return _run_unrecorded(command)
    s = handler.settings
    name = script_name or s.script_name or default_script_name(command, python)
    flags = [k for k in s.redact_keys.split(",") if k.strip().startswith("-")]
    shown = shlex.join(mask_argv(command, handler.redactor, flags=flags))[:2000]
    run = Run(
        name,
        triggered_by=triggered_by or s.triggered_by,
        metadata={"command": shown, "wrapper": "python" if python else "output"},
    )
    run.activate()
    env = _child_env(python, env_file, capture_print)
    rc = _execute(command, env, run, handler, python=python, tail_lines=tail_lines)
    handler.close(s.shutdown_timeout_s)
    return rc


def _run_unrecorded(command: list[str]) -> int:
    with _forwarding() as forward:
        try:
            proc = subprocess.Popen(command)
        except OSError as exc:
            note(f"cannot start {command[0]!r}: {exc.strerror or exc}")
            return 127 if isinstance(exc, FileNotFoundError) else 126
        forward.started(proc)
        return _exit_code(proc.wait())


def _execute(
    command: list[str],
    env: dict[str, str],
    run: Run,
    handler: SupabaseHandler,
    *,
    python: bool,
    tail_lines: int,
) -> int:
    out_echo = getattr(sys.stdout, "buffer", None)
    err_echo = getattr(sys.stderr, "buffer", None)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    tees: list[_Tee] = []
    with _forwarding() as forward:
        try:
            proc = subprocess.Popen(
                command,
                env=env,
                stdout=None if python else subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            message = f"cannot start {command[0]!r}: {exc.strerror or exc}"
            note(message)
            run.metadata["exit_code"] = code
            run.finish(error=message)
            return code
        forward.started(proc)
        run.metadata["pid"] = proc.pid
        if proc.stdout is not None:
            tees.append(
                _Tee(proc.stdout, out_echo, _output_logger(handler, "stdout"), "stdout", command[0])
            )
        assert proc.stderr is not None
        err = _Tee(
            proc.stderr,
            err_echo,
            None if python else _output_logger(handler, "stderr"),
            "stderr",
            command[0],
        )
        tees.append(err)
        rc = proc.wait()
        deadline = time.monotonic() + READER_GRACE_S
        for tee in tees:
            tee.thread.join(max(deadline - time.monotonic(), 0.0))
    tail = list(err.tail)[-tail_lines:] if tail_lines > 0 else []
    if rc == 0:
        run.metadata["exit_code"] = 0
        run.finish("success")
        return 0
    if rc < 0:
        try:
            signame = signal.Signals(-rc).name
        except ValueError:
            signame = f"signal {-rc}"
        run.metadata["signal"] = signame
        headline = f"terminated by signal {signame}"
        rc = _exit_code(rc)
    else:
        headline = f"exit code {rc}"
    run.metadata["exit_code"] = rc
    message = headline + (f": {tail[-1]}" if tail else "")
    if tail:
        message += "\n\nlast stderr lines:\n" + "\n".join(tail)
    run.finish(error=message)
    return rc
