"""Child process: one tests/stack Gateway, driven by JSON lines on stdin.

Usage (by ``_stack.GatewayProcess``): ``python _gateway_proc.py <authenticator dsn>``.
Writes ``{"url", "service_key"}`` once started, then answers one line per command
(``requests``, ``reset_log``, ``stop``, ``start``, ``running``, ``close``). Exits on
``close``, on EOF (the parent is gone) or after an idle hour.
"""

from __future__ import annotations

import json
import select
import sys
from pathlib import Path

IDLE_LIMIT_S = 3600.0

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from stack.gateway import Gateway  # noqa: E402


def _say(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    gateway = Gateway(sys.argv[1])
    try:
        _say({"url": gateway.url, "service_key": gateway.service_key})
        stdin = sys.stdin.buffer
        while True:
            ready, _, _ = select.select([stdin], [], [], IDLE_LIMIT_S)
            if not ready:
                return 2
            line = stdin.readline()
            if not line:
                return 0
            try:
                op = json.loads(line)["op"]
            except (ValueError, KeyError, TypeError):
                _say({"error": f"bad command {line[:100]!r}"})
                continue
            try:
                if op == "requests":
                    _say({"requests": [list(r) for r in gateway.requests]})
                elif op == "reset_log":
                    gateway.reset_log()
                    _say({"ok": True})
                elif op == "stop":
                    gateway.stop()
                    _say({"ok": True})
                elif op == "start":
                    gateway.start()
                    _say({"ok": True})
                elif op == "running":
                    _say({"running": gateway.running})
                elif op == "close":
                    gateway.close()
                    _say({"ok": True})
                    return 0
                else:
                    _say({"error": f"unknown op {op!r}"})
            except Exception as exc:
                _say({"error": repr(exc)})
    finally:
        gateway.close()


if __name__ == "__main__":
    sys.exit(main())
