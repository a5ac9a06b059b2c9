"""The durable spool: a directory of append-only segment files.

What cannot be delivered now (backend down, a burst bigger than memory, the exit
deadline) is appended to this process's own segment as the encoded rows it
already is, and replayed later, oldest first, by this process or any other one
using the directory. Writers never share a file, so many processes ending at
once never wait on each other and never meet "database is locked".

A segment is owned through ``flock``: its writer holds an exclusive lock for as
long as it lives, and the kernel releases it when the process ends, however it
ends. A replayer takes any segment whose lock it can get, sends its records in
chunks and writes its progress (an offset in the header) after each one, in
place, so a segment can always be drained without growing the disk; a finished
segment is deleted. Ids make a resent chunk harmless. Each segment carries the
run rows its log rows need, so it can be replayed alone. Rows the database
refuses for good go to a ``.dead`` file with the server's error.

File: ``MAGIC | progress u64 | header length u32 | header JSON | frames``;
frames as ``spool_frames.py`` makes them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._files import make_private_dir
from .rows import E_ID, E_PAYLOAD, E_RUN, E_TABLE, Entry
from .spool_frames import frame, frame_length, frame_of, parse_frame

MAGIC = b"SLHSPL01"
_PROGRESS = struct.Struct("<Q")
DATA_LIMIT_BYTES = 64 * 1024 * 1024  # a segment this large is sealed; the next write starts another
READ_CHUNK_BYTES = 1 << 20
DEAD_FILE_TRIES = 16
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_FIX_DISK = "free space there, or point SUPABASE_LOG_SPOOL at a directory on another disk"

try:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

except ImportError:  # pragma: no cover - Windows: lock the first byte instead
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            return True
        except OSError:
            return False


class SpoolError(Exception):
    """The spool cannot take rows now; ``fix`` says what would help."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


class SpoolFullError(SpoolError):
    """The directory reached ``max_bytes``."""


@dataclass
class Segment:
    path: Path
    fd: int
    own: bool
    data_start: int
    progress: int
    end: int
    runs_table: str
    sealed: bool = False
    runs: set[str] = field(default_factory=set)


def destination_key(destination: str) -> str:
    return hashlib.sha1(destination.encode("utf-8")).hexdigest()[:12]


class Spool:
    """One spool directory seen from one pipeline; see the module docstring."""

    def __init__(
        self, directory: str | os.PathLike[str], *, max_bytes: int, destination: str,
        runs_table: str = "runs",
    ) -> None:  # fmt: skip
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.destination = destination
        self.runs_table = runs_table
        self.prefix = destination_key(destination)
        self._lock = threading.RLock()
        self._reset()

    def _reset(self) -> None:
        self._token = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._active: Segment | None = None
        self._own: list[Segment] = []  # sealed, oldest first
        self._serial = 0
        self._other_bytes = 0
        self._other_checked = 0.0
        self._dead_fd: int | None = None
        self._foreign: Segment | None = None  # a segment of another process we are replaying
        self.dirty = False  # this process may have something to replay

    # -- writing -------------------------------------------------------------------------
    def append(self, entries: Sequence[Entry], run_row: Callable[[str], bytes | None]) -> None:
        """Store entries (with the run rows they need) or raise SpoolError; all or nothing."""
        if not entries:
            return
        with self._lock:
            seg = self._writable()
            runs = seg.runs
            table = self.runs_table
            missing: set[str] = {r for e in entries if e[E_TABLE] != table and (r := e[E_RUN])}
            missing -= runs
            parts: list[bytes] = []
            for run_id in sorted(missing):  # the run rows these rows need, ahead of them
                row = run_row(run_id)
                if row is not None:
                    parts.append(frame(table, False, 1000, None, run_id, row))
            if all(len(e) > 7 for e in entries):  # framed by the callers: the bytes as they are
                parts.extend([e[7] for e in entries])  # type: ignore[misc]
            else:
                parts.extend([e[7] if len(e) > 7 else frame_of(e) for e in entries])
            runs = runs | missing | {e[E_ID] for e in entries if e[E_TABLE] == table}
            data = b"".join(parts)
            self._check_room(len(data))
            self._write(seg, data)
            seg.runs = runs
            self.dirty = True
            if seg.end - seg.data_start >= DATA_LIMIT_BYTES:
                seg.sealed = True
                self._own.append(seg)
                self._active = None

    def _writable(self) -> Segment:
        if self._active is not None:
            return self._active
        make_private_dir(self.directory)
        self._serial += 1
        name = f"{self.prefix}-{self._token}-{self._serial}.seg"
        tmp = self.directory / (".tmp-" + name)
        header = json.dumps(
            {"destination": self.destination, "runs_table": self.runs_table,
             "pid": os.getpid(), "created": time.time()}
        ).encode()
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _try_lock(fd)
            start = len(MAGIC) + 8 + 4 + len(header)
            blob = MAGIC + _PROGRESS.pack(start) + struct.pack("<I", len(header)) + header
            _write_all(fd, blob, 0, self.directory)
            os.rename(tmp, self.directory / name)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        self._active = Segment(self.directory / name, fd, True, start, start, start, self.runs_table)
        return self._active

    def _check_room(self, extra: int) -> None:
        now = time.monotonic()
        if now - self._other_checked > 5.0:
            self._other_checked = now
            mine = {s.path.name for s in self._segments_of_mine()}
            total = 0
            try:
                with os.scandir(self.directory) as it:
                    for d in it:
                        if d.name not in mine and d.is_file():
                            total += d.stat().st_size
            except OSError:
                pass
            self._other_bytes = total
        used = self._other_bytes + sum(s.end for s in self._segments_of_mine())
        if used + extra > self.max_bytes:
            raise SpoolFullError(
                f"the spool {self.directory} is full ({used} of {self.max_bytes} bytes)",
                "let it drain (the backend must be reachable: `supabase-log push`), or raise "
                "SUPABASE_LOG_MAX_SPOOL_BYTES",
            )

    def _write(self, seg: Segment, data: bytes) -> None:
        try:
            _write_all(seg.fd, data, seg.end, self.directory)
        except SpoolError:
            os.ftruncate(seg.fd, seg.end)  # shrinking never needs space: no torn frame stays
            raise
        seg.end += len(data)

    def dead_letter(
        self, table: str, payload: bytes, code: str | None, error: str, *, mode: int = 0
    ) -> None:
        """Keep a refused row with the server's error; only ``push --dead-letters`` sends it again.

        The file is locked for as long as this process writes it, so a push takes
        only the files of processes that are gone (or that let go of theirs).
        """
        record = json.dumps(
            {"table": table, "mode": mode, "code": code, "error": error[:2000], "at": time.time(),
             "row": json.loads(payload)}, ensure_ascii=False
        ).encode()  # fmt: skip
        with self._lock:
            if self._dead_fd is None:
                make_private_dir(self.directory)
                self._dead_fd = self._open_dead()
            os.write(self._dead_fd, record + b"\n")

    def _open_dead(self) -> int:
        for n in range(DEAD_FILE_TRIES):
            suffix = f"-{n}" if n else ""
            path = self.directory / f"{self.prefix}-{self._token}{suffix}.dead"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            if _try_lock(fd):
                return fd
            os.close(fd)  # a push is sending this one: start another
        raise OSError(errno.EBUSY, "every dead-letter file of this process is busy")

    # -- replay --------------------------------------------------------------------------
    def claim(self, *, foreign: bool = True) -> Segment | None:
        """A segment to replay: this process's own first, then one nobody holds."""
        with self._lock:
            for seg in self._segments_of_mine():
                if seg.progress < seg.end:
                    return seg
            self.dirty = False
        if self._foreign is not None:
            return self._foreign
        if not foreign:
            return None
        self._foreign = self._claim_foreign()
        return self._foreign

    def _claim_foreign(self) -> Segment | None:
        try:
            names = sorted(
                n for n in os.listdir(self.directory) if n.startswith(self.prefix) and n.endswith(".seg")
            )
        except OSError:
            return None
        mine = {s.path.name for s in self._segments_of_mine()}
        for name in names:
            if name in mine:
                continue
            path = self.directory / name
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            if not _try_lock(fd):
                os.close(fd)
                continue
            seg = _open_segment(path, fd, self.runs_table)
            if seg is None or seg.progress >= seg.end:
                _finish(path, fd)
                continue
            return seg
        return None

    def read(self, seg: Segment, max_rows: int, max_bytes: int) -> tuple[list[Entry], int]:
        """Entries from the segment's progress on, and the offset after them."""
        entries: list[Entry] = []
        offset = seg.progress
        size = 0
        want = READ_CHUNK_BYTES
        while len(entries) < max_rows and size < max_bytes and offset < seg.end:
            buf = os.pread(seg.fd, min(want, seg.end - offset), offset)
            pos = 0
            while len(entries) < max_rows and size < max_bytes:
                parsed = parse_frame(buf, pos)
                if parsed is None:
                    break
                entry, pos = parsed
                entries.append(entry)
                size += len(entry[E_PAYLOAD])
            if pos:
                offset += pos
                continue
            need = frame_length(buf)
            if len(buf) < need and offset + need <= seg.end:
                want = need  # one frame larger than a read: read it whole
                continue
            offset = seg.end  # a torn or damaged frame ends what can be read (a writer died mid-write)
            break
        return entries, offset

    def commit(self, seg: Segment, offset: int) -> None:
        """Record progress; delete (or empty) a segment that is done."""
        with self._lock:
            seg.progress = offset
            os.pwrite(seg.fd, _PROGRESS.pack(offset), len(MAGIC))
            if offset < seg.end:
                return
            if not seg.own or seg.sealed:
                if seg in self._own:
                    self._own.remove(seg)
                if seg is self._foreign:
                    self._foreign = None
                _finish(seg.path, seg.fd)
            else:  # our live segment, fully sent: start it over instead of letting it grow
                os.ftruncate(seg.fd, seg.data_start)
                os.pwrite(seg.fd, _PROGRESS.pack(seg.data_start), len(MAGIC))
                seg.progress = seg.end = seg.data_start
                seg.runs = set()

    def release(self, seg: Segment) -> None:
        """Stop replaying a foreign segment for now (another process may take it)."""
        with self._lock:
            if not seg.own:
                if seg is self._foreign:
                    self._foreign = None
                os.close(seg.fd)

    def has_own_pending(self) -> bool:
        with self._lock:
            return any(s.progress < s.end for s in self._segments_of_mine())

    def _segments_of_mine(self) -> list[Segment]:
        return self._own + ([self._active] if self._active is not None else [])

    def close(self) -> None:
        """Let go of our segments (finished ones are deleted): others may replay the rest."""
        with self._lock:
            for seg in self._segments_of_mine():
                if seg.progress >= seg.end:
                    _finish(seg.path, seg.fd)
                else:
                    os.close(seg.fd)
            if self._dead_fd is not None:
                os.close(self._dead_fd)
            if self._foreign is not None:
                os.close(self._foreign.fd)
            self._own, self._active, self._dead_fd, self._foreign = [], None, None, None

    def reset_after_fork(self) -> None:
        """In a forked child: close the parent's files (its locks stay its own), start afresh."""
        self._lock = threading.RLock()
        fds = [s.fd for s in self._segments_of_mine()] + [self._dead_fd]
        fds.append(self._foreign.fd if self._foreign is not None else None)
        for fd in fds:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._reset()


def _write_all(fd: int, data: bytes, offset: int, directory: Path) -> None:
    view = memoryview(data)
    try:
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise SpoolError(f"disk full at {directory}", _FIX_DISK) from exc
        raise SpoolError(f"cannot write the spool at {directory}: {exc}", _FIX_DISK) from exc


def _open_segment(path: Path, fd: int, runs_table: str) -> Segment | None:
    head = os.pread(fd, len(MAGIC) + 12, 0)
    if len(head) < len(MAGIC) + 12 or not head.startswith(MAGIC):
        return None
    (progress,) = _PROGRESS.unpack_from(head, len(MAGIC))
    (hlen,) = struct.unpack_from("<I", head, len(MAGIC) + 8)
    try:
        header: dict[str, Any] = json.loads(os.pread(fd, hlen, len(MAGIC) + 12))
    except ValueError:
        return None
    start = len(MAGIC) + 12 + hlen
    end = os.fstat(fd).st_size
    table = str(header.get("runs_table") or runs_table)
    return Segment(path, fd, False, start, max(progress, start), end, table)


def _finish(path: Path, fd: int) -> None:
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)
