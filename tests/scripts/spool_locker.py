"""Holds every lock anyone could want in a spool directory: ``python spool_locker.py DIR``.

It takes an exclusive ``flock`` and a POSIX record lock (``lockf``) on the
directory and on every file in it, and keeps taking them on each file that
appears (every millisecond or so), until a line arrives on stdin. It prints
``{"locked": N}`` once the files present at its start are held, then
``{"got": NAME}`` for each file it holds from then on (a renamed file included).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import sys


def _lock(path: str, directory: bool) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY if directory else os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not directory:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def main() -> None:
    directory = sys.argv[1]
    held: dict[str, int] = {}  # name -> inode
    fds: list[int] = []
    fd = _lock(directory, True)
    assert fd is not None, f"cannot lock the directory {directory}"
    held["."] = os.fstat(fd).st_ino
    announced = False
    while True:
        for name in os.listdir(directory):
            if name in held:
                continue
            path = os.path.join(directory, name)
            try:
                inode = os.stat(path).st_ino
            except OSError:
                continue
            if inode in held.values():  # the same file under its new name (a rename)
                held[name] = inode
            else:
                got = _lock(path, False)
                if got is None:
                    continue
                fds.append(got)
                held[name] = os.fstat(got).st_ino
            if announced:
                _say({"got": name})
        if not announced:
            _say({"locked": len(held) - 1})
            announced = True
        if select.select([sys.stdin], [], [], 0.001)[0]:
            break


def _say(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
