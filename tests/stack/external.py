"""The gateway in a process of its own, for tests that measure the client's process.

An in-process gateway parses every request body in the test's own interpreter,
so its garbage and its GIL time would be billed to the code under test. This one
runs as ``python -m stack.gateway``; ``stop()`` kills it (a real outage: refused
connections, broken keep-alives) and ``start()`` brings a new one up on the same
port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from stack.gateway import Gateway

_TESTS = Path(__file__).resolve().parent.parent


class ExternalGateway:
    """A gateway subprocess with the same URL and keys across restarts."""

    def __init__(self, dsn: str, *, start_timeout_s: float = 30.0) -> None:
        self.dsn = dsn
        self.start_timeout_s = start_timeout_s
        probe = Gateway(dsn, start=False)  # only for its keys and secret
        self.jwt_secret = probe.jwt_secret
        self.service_key = probe.service_key
        self.anon_key = probe.anon_key
        self.port = 0
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> ExternalGateway:
        if self._proc is not None:
            return self
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(_TESTS), os.environ.get("PYTHONPATH", "")]),
        }
        command = [sys.executable, "-m", "stack.gateway", self.dsn, "--port", str(self.port),
                   "--jwt-secret", self.jwt_secret]  # fmt: skip
        with tempfile.TemporaryFile(mode="w+") as errors:
            proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors,
                                    text=True)  # fmt: skip
            assert proc.stdout is not None
            line = proc.stdout.readline()  # the child prints READY as soon as it listens
            if not line.startswith("READY "):
                proc.kill()
                proc.wait(self.start_timeout_s)
                errors.seek(0)
                said = errors.read()[-2000:]
                raise RuntimeError(f"gateway process did not start: {line!r}; it said: {said}")
        self.url = line.split()[1]
        self.port = int(self.url.rsplit(":", 1)[1])
        self._proc = proc
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait(self.start_timeout_s)
            if proc.stdout is not None:
                proc.stdout.close()

    def __enter__(self) -> ExternalGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
