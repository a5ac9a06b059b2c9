"""What a spool directory holds, read without taking anything: for ``push``, ``doctor`` and tests.

Segments are read without their lock, so a count made while a writer is alive
is a snapshot; nothing here changes a segment. ``resend_dead_letters`` takes the
dead-letter files no live process writes (their lock) and rewrites each with
only the rows refused again.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .spool import _open_segment, _try_lock, destination_key
from .spool_frames import parse_frame

__all__ = ["pending_entries", "pending_segments", "read_dead_letters", "resend_dead_letters"]


def pending_segments(directory: Path, destination: str | None = None) -> list[Path]:
    """Segment files waiting to be replayed (of one destination, or all)."""
    if not directory.is_dir():
        return []
    prefix = destination_key(destination) if destination else ""
    return sorted(p for p in directory.glob(f"{prefix}*.seg"))


def pending_entries(directory: Path, destination: str | None = None) -> Counter[str]:
    """Entries not yet replayed, per table, across the directory's segments."""
    counts: Counter[str] = Counter()
    for path in pending_segments(directory, destination):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            seg = _open_segment(path, fd, "runs")
            if seg is None:
                continue
            data = os.pread(fd, seg.end - seg.progress, seg.progress)
            pos = 0
            while True:
                parsed = parse_frame(data, pos)
                if parsed is None:
                    break
                entry, pos = parsed
                counts[entry[1]] += 1
        finally:
            os.close(fd)
    return counts


def read_dead_letters(directory: Path, destination: str | None = None) -> list[dict[str, Any]]:
    """Every dead letter in the directory (of one destination, or all), oldest file first."""
    out: list[dict[str, Any]] = []
    if not directory.is_dir():
        return out
    prefix = destination_key(destination) if destination else ""
    for path in sorted(directory.glob(f"{prefix}*.dead")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def resend_dead_letters(
    directory: Path,
    destination: str | None,
    send: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
) -> tuple[int, int, int]:
    """Offer every free dead-letter file's records to ``send``, which returns those refused again.

    A file is kept with only those (deleted when none is left). Returns (sent,
    kept, files busy because a live process writes them). ``send`` raising
    leaves the file as it was.
    """
    sent = kept = busy = 0
    if not directory.is_dir():
        return sent, kept, busy
    prefix = destination_key(destination) if destination else ""
    for path in sorted(directory.glob(f"{prefix}*.dead")):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            if not _try_lock(fd):
                busy += 1
                continue
            data = b""
            while chunk := os.read(fd, 1 << 20):
                data += chunk
            records = []
            for line in data.decode("utf-8", errors="replace").splitlines():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
            again = send(records)
            if not again:
                os.unlink(path)
            else:
                body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in again).encode()
                os.ftruncate(fd, 0)
                view = memoryview(body)
                while view:
                    view = view[os.pwrite(fd, view, len(body) - len(view)):]
            sent += len(records) - len(again)
            kept += len(again)
        finally:
            os.close(fd)
    return sent, kept, busy
