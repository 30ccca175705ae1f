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


class _Bits:
    """A big-endian bit reader (H.264 RBSP); reading past the end raises IndexError."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            bit = (self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1
            value, self.pos = (value << 1) | bit, self.pos + 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def h264_max_ref_frames(extradata: bytes) -> int | None:
    """``max_num_ref_frames`` of the first sequence parameter set of an H.264 ``avcC`` record
    (an MP4's codec extradata); None when there is none, it cannot be read or it carries
    scaling lists."""
    if len(extradata) < 8 or extradata[0] != 1 or not extradata[5] & 0x1F:
        return None
    size = int.from_bytes(extradata[6:8], "big")
    nal = extradata[8 : 8 + size]
    if size < 4 or len(nal) < size:
        return None
    bits = _Bits(nal[1:].replace(b"\x00\x00\x03", b"\x00\x00"))  # drop emulation prevention
    try:
        profile = bits.u(8)
        bits.u(16)  # constraint flags, level
        bits.ue()  # seq_parameter_set_id
        if profile in _HIGH_PROFILES:
            chroma = bits.ue()
            if chroma == 3:
                bits.u(1)
            bits.ue(), bits.ue(), bits.u(1)  # bit depths, qpprime_y_zero_transform_bypass
            if bits.u(1):  # scaling lists in the SPS (rare; x264 writes them in the PPS)
                return None
        bits.ue()  # log2_max_frame_num_minus4
        poc_type = bits.ue()
        if poc_type == 0:
            bits.ue()
        elif poc_type == 1:
            bits.u(1), bits.se(), bits.se()
            for _ in range(bits.ue()):
                bits.se()
        return bits.ue()
    except (IndexError, ValueError):
        return None
