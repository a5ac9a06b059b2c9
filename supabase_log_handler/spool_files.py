"""What a spool directory holds, read without taking anything: for ``push``, ``doctor`` and tests.

Segments are read without their lock, so a count made while a writer is alive
is a snapshot; nothing here changes a file.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from .spool import _open_segment, _parse, destination_key

__all__ = ["pending_entries", "pending_segments", "read_dead_letters"]


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
                parsed = _parse(data, pos)
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
