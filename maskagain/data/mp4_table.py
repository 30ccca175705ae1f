"""The composition time offsets (``ctts``) of one track of an MP4/MOV file, read from its
``moov`` box without touching the media data.

libavformat reads an MP4's whole sample table when it opens the file and exposes it as the
stream's index entries (byte position, size, decode timestamp, key-frame flag), but not the
offsets that turn a decode timestamp into a presentation timestamp when frames are reordered
(H.264 B-frames). This module reads them: the top-level boxes are walked by their headers
(``mdat`` is skipped, not read), then ``moov/trak/mdia/minf/stbl/ctts`` of the track.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

_MAX_MOOV = 256 * 2**20  # a larger moov is not a file we read this way


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """``(type, payload start, payload end)`` of the boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    out, pos = [], start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        head = 8
        if size == 1 and pos + 16 <= end:
            size, head = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            break
        out.append((kind, pos + head, pos + size))
        pos += size
    return out


def read_moov(f: BinaryIO) -> bytes | None:
    """The payload of the top-level ``moov`` box of ``f`` (None when there is none). Reads only
    box headers and the ``moov`` itself; restores the file position."""
    saved = f.tell()
    try:
        size = f.seek(0, 2)
        pos = 0
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                return None
            box, kind = struct.unpack_from(">I4s", head)
            skip = 8
            if box == 1 and len(head) == 16:
                box, skip = struct.unpack_from(">Q", head, 8)[0], 16
            elif box == 0:
                box = size - pos
            if box < skip:
                return None
            if kind == b"moov":
                if box > _MAX_MOOV:
                    return None
                f.seek(pos + skip)
                data = f.read(box - skip)
                return data if len(data) == box - skip else None
            pos += box
        return None
    finally:
        f.seek(saved)


def _track_id(moov: bytes, start: int, end: int) -> int | None:
    for kind, s, _ in _boxes(moov, start, end):
        if kind == b"tkhd":
            version = moov[s]
            return struct.unpack_from(">I", moov, s + (20 if version == 1 else 12))[0]
    return None


def _find(moov: bytes, start: int, end: int, path: tuple[bytes, ...]) -> tuple[int, int] | None:
    """Payload bounds of the box at ``path`` below ``moov[start:end]`` (first match)."""
    if not path:
        return start, end
    for kind, s, e in _boxes(moov, start, end):
        if kind == path[0]:
            return _find(moov, s, e, path[1:])
    return None


def composition_offsets(moov: bytes, track_id: int) -> list[int] | None:
    """Per sample of track ``track_id``, in decode order: its composition time offset (signed,
    as libavformat reads it); ``[]`` when the track has no ``ctts`` (presentation = decode
    order); None when the track is not found or its table cannot be read."""
    for kind, s, e in _boxes(moov):
        if kind != b"trak" or _track_id(moov, s, e) != track_id:
            continue
        found = _find(moov, s, e, (b"mdia", b"minf", b"stbl"))
        if found is None:
            return None
        ctts = _find(moov, *found, (b"ctts",))
        if ctts is None:
            return []
        s, e = ctts
        if e - s < 8:
            return None
        (count,) = struct.unpack_from(">I", moov, s + 4)
        if 8 + 8 * count > e - s:
            return None
        pairs = struct.unpack_from(f">{2 * count}i", moov, s + 8)
        offsets: list[int] = []
        for n, offset in zip(pairs[::2], pairs[1::2]):
            if n < 0 or len(offsets) + n > 2**24:
                return None
            offsets.extend([offset] * n)
        return offsets
    return None
