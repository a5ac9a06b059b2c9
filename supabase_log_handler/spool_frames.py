"""One spool record: an entry framed with its length and a CRC, so a torn write is seen.

Frame: ``length u32 | crc32 u32 | mode u8 | level u16 | lengths u8 x3 | table | run id | id | JSON``.
A caller that builds its own row under pressure frames it too (``frame_of``:
CPU only, no I/O), so the worker only appends the bytes.
"""

from __future__ import annotations

import struct
import zlib

from .rows import E_ID, E_MERGE, E_PAYLOAD, E_RUN, E_TABLE, Entry

_FRAME = struct.Struct("<II")
_BODY = struct.Struct("<BHBBB")


def frame_of(e: Entry) -> bytes:
    """The spool frame of an entry (callers building their own rows make it too: no I/O)."""
    return frame(e[E_TABLE], e[E_MERGE], e[5], e[E_RUN], e[E_ID], e[E_PAYLOAD])


def frame(
    table: str, mode: int, levelno: int, run_id: str | None, row_id: str, payload: bytes
) -> bytes:
    t, r, i = table.encode(), (run_id or "").encode(), row_id.encode()
    head = _BODY.pack(int(mode), min(max(levelno, 0), 0xFFFF), len(t), len(r), len(i))
    body = head + t + r + i + payload
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def parse_frame(buf: bytes, pos: int) -> tuple[Entry, int] | None:
    if pos + _FRAME.size > len(buf):
        return None
    length, crc = _FRAME.unpack_from(buf, pos)
    start = pos + _FRAME.size
    end = start + length
    if end > len(buf) or length < _BODY.size:
        return None
    body = buf[start:end]
    if zlib.crc32(body) != crc:
        return None
    merge, level, tlen, rlen, ilen = _BODY.unpack_from(body, 0)
    at = _BODY.size
    table = body[at : at + tlen].decode()
    at += tlen
    run_id = body[at : at + rlen].decode() or None
    at += rlen
    row_id = body[at : at + ilen].decode()
    return (0, table, int(merge), row_id, run_id, level, body[at + ilen :]), end


def frame_length(buf: bytes) -> int:
    """How many bytes the frame at the start of ``buf`` takes (0 when its head is not there)."""
    return _FRAME.size + _FRAME.unpack_from(buf)[0] if len(buf) >= _FRAME.size else 0
