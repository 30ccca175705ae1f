"""Clip decoding with PyAV: seek to the key frame before the first wanted frame, decode up to the
last one, convert (and resize) only the wanted frames.

Frame ``i`` is the ``i``-th presentation timestamp of the video stream, so missing durations,
missing frame counts (webm/mkv) and variable frame rates do not matter. An MP4/MOV's frames are
indexed from its sample table (which libavformat reads whole at opening: timestamps, key frames,
byte positions) and ``ctts`` box, without reading any packet data; the index is used when it is
complete and agrees with the first packets demuxed. Other containers (and MP4s where it does
not agree) are indexed by demuxing every packet (no decoding). So are H.264 streams allowed a
single reference frame: libavformat's parser flags their non-IDR I-frames as key frames too,
which the table's sync samples leave out (``maskagain prepare``'s B-frames need two).

A remote file is read through a :class:`~maskagain.data.storage.RangeFile`: before seeking, a
clip's reader prefetches the byte span of the packets it will demux (from the key frame before
its first frame to its last frame, in one request), so a clip reads about its share of the file
plus one key-frame interval.

H.264 frames that are neither wanted nor referenced by other frames (``nal_ref_idc == 0``, most
B-frames) are not decoded at all; wanted frames separated by a key frame are read with one seek
each (several windows of one video, short GOPs of ``maskagain prepare``d files); only the wanted
frames are converted to RGB, resized by swscale straight to the working size. FFmpeg's own
threading is used (``threads=0``: its choice).
"""

from __future__ import annotations

import bisect
import io
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from maskagain.data.mp4_table import composition_offsets, h264_max_ref_frames, read_moov
from maskagain.data.storage import Storage, StorageError, is_remote

log = logging.getLogger(__name__)

_REORDER_WINDOW = 16  # packets after a frame's that may hold frames displayed before it
_DECODER_DELAY = 4  # packets a decoder reads before it returns the frame it was fed
_AVIO_BUFFER = 32 * 2**10  # libavformat reads files in chunks of this size


class VideoDecodeError(RuntimeError):
    """A video file that cannot be read; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def short_side_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(height, width) after resizing so that the shorter side is ``short_side`` (None: keep)."""
    if not short_side:
        return height, width
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


def _h264_nal_length(stream: av.video.stream.VideoStream) -> int | None:
    """Byte size of NAL lengths of an H.264 stream in AVCC form (mp4/mkv/flv): 0 for Annex B
    start codes, None for other codecs."""
    if stream.codec_context.name != "h264":
        return None
    extra = stream.codec_context.extradata or b""
    return (extra[4] & 3) + 1 if len(extra) > 6 and extra[0] == 1 else 0


def _h264_unreferenced(data: memoryview, nal_length: int) -> bool:
    """True if the first slice NAL of an H.264 access unit has ``nal_ref_idc == 0`` (all slices
    of a picture agree), i.e. no other frame is decoded from this one."""
    pos, n = 0, len(data)
    while pos < n:
        if nal_length:
            size = int.from_bytes(data[pos : pos + nal_length], "big")
            head, pos = pos + nal_length, pos + nal_length + size
        else:
            start = bytes(data[pos : pos + 4])
            skip = 4 if start == b"\x00\x00\x00\x01" else 3 if start[:3] == b"\x00\x00\x01" else 0
            if not skip:
                return False
            head = pos + skip
            nxt = bytes(data[head:]).find(b"\x00\x00\x01")
            pos = n if nxt < 0 else head + nxt - (1 if data[head + nxt - 1] == 0 else 0)
        if head >= n:
            return False
        nal_type, ref_idc = data[head] & 0x1F, (data[head] >> 5) & 3
        if nal_type in (1, 5):
            return ref_idc == 0
    return False


@dataclass(frozen=True)
class _FrameIndex:
    """Presentation timestamps of all frames, in display order, and those of the key frames."""

    pts: list[int] | None  # None: timestamps unusable, read sequentially by counting
    keys: list[int]
    count: int


class _Packet(NamedTuple):
    """A frame's packet in decode order: presentation timestamp, byte position and size."""

    pts: int
    pos: int
    size: int


class VideoFile:
    """An open video file. ``num_frames`` is counted from the sample table (MP4/MOV) or the
    packets; ``read`` returns frames.

    Use as a context manager, or call ``close``. ``threads=0`` lets FFmpeg pick the thread count.
    A URL (``s3://...``) is read through ``storage`` in ranges of at most ``block_size`` bytes
    (see :meth:`maskagain.data.storage.Storage.open_binary`), one clip's packets in one request;
    a storage failure past its retries is a :class:`VideoDecodeError` like a corrupt file.
    ``data``: the file's bytes, already read (a member of a shard); ``path`` then only names it.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        threads: int = 0,
        storage: Storage | None = None,
        block_size: int | None = None,
        *,
        data: bytes | None = None,
    ) -> None:
        self.path = str(path)
        self._threads = threads
        self._reformatter = VideoReformatter()  # caches the swscale context across frames
        self._file = None
        self._packets: list[_Packet] | None = None  # decode order, from the index builder
        self._decode_order: dict[int, int] | None = None  # pts -> position in _packets
        try:
            self._container = self._open(storage, block_size, data)
        except StorageError as e:
            raise VideoDecodeError(self.path, e.reason) from None
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as e:
            self.close()
            raise VideoDecodeError(self.path, f"cannot open: {e}") from e
        try:
            if not self._container.streams.video:
                raise VideoDecodeError(self.path, "no video stream")
            self._set_stream()
            self._index = self._build_index()
        except StorageError as e:
            self.close()
            raise VideoDecodeError(self.path, e.reason) from None
        except BaseException:
            self.close()
            raise
        if self._index.count == 0:
            self.close()
            raise VideoDecodeError(self.path, "video stream has no frames")

    def _open(
        self, storage: Storage | None, block_size: int | None, data: bytes | None
    ) -> av.container.InputContainer:
        """The container of ``data``, a local file, or a remote one read through ``storage``."""
        if data is not None:
            if not data:
                raise VideoDecodeError(self.path, "empty file (0 bytes)")
            self._file = io.BytesIO(data)
            return av.open(self._file, metadata_errors="ignore")
        if not is_remote(self.path):
            if not os.path.isfile(self.path):
                raise VideoDecodeError(self.path, "file not found")
            if os.path.getsize(self.path) == 0:
                raise VideoDecodeError(self.path, "empty file (0 bytes)")
            return av.open(self.path, metadata_errors="ignore")
        self._file = (storage or Storage()).open_binary(self.path, block_size=block_size)
        if self._file.seek(0, os.SEEK_END) == 0:
            self.close()
            raise VideoDecodeError(self.path, "empty file (0 bytes)")
        self._file.seek(0)
        return av.open(self._file, metadata_errors="ignore")

    def _set_stream(self) -> None:
        self._stream = self._container.streams.video[0]
        self._stream.codec_context.thread_type = "AUTO"
        self._stream.codec_context.thread_count = self._threads
        self._nal_length = _h264_nal_length(self._stream)

    def _reopen(self) -> None:
        """Open the container again: demuxing restarts at the first packet."""
        self._container.close()
        if self._file is not None:
            self._file.seek(0)
        source = self._file if self._file is not None else self.path
        self._container = av.open(source, metadata_errors="ignore")
        self._set_stream()

    # -- index ---------------------------------------------------------------------------------
    def _build_index(self) -> _FrameIndex:
        """The frame index from the container's sample table where it has a complete one
        (MP4/MOV: no packet data is read), else by demuxing every packet."""
        table = self._table_index()
        self.index_from_table = table is not None
        return table if table is not None else self._demux_index()

    def _demux_index(self) -> _FrameIndex:
        pts: list[int] = []
        keys: list[int] = []
        packets: list[_Packet] = []
        usable = True
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                t = packet.pts if packet.pts is not None else packet.dts
                if t is None:
                    usable = False
                    pts.append(len(pts))
                    continue
                pts.append(t)
                packets.append(
                    _Packet(t, packet.pos if packet.pos is not None else -1, packet.size)
                )
                if packet.is_keyframe:
                    keys.append(t)
        except av.FFmpegError as e:
            if not pts:
                raise VideoDecodeError(self.path, f"cannot demux: {e}") from e
            log.debug("%s: demuxing stopped after %d packets: %s", self.path, len(pts), e)
        usable = usable and bool(keys) and len(set(pts)) == len(pts)
        self._packets = packets if usable and all(p.pos >= 0 for p in packets) else None
        return _FrameIndex(sorted(pts) if usable else None, sorted(keys), len(pts))

    def _table_index(self) -> _FrameIndex | None:
        """The index from libavformat's index entries of an MP4/MOV (its sample table, read
        whole at opening) and the ``ctts`` offsets; None unless complete and consistent: one
        entry per frame, all inside the file, increasing decode timestamps, unique
        presentation timestamps, a key frame, and the first packets demuxed agree."""
        if "mov" not in self._container.format.name.split(","):
            return None
        if self._nal_length is not None:  # H.264: libavformat's parser flags more key frames
            refs = h264_max_ref_frames(self._stream.codec_context.extradata or b"")
            if refs is None or refs <= 1:  # (non-IDR I-frames) where one reference is allowed
                return None
        entries = self._stream.index_entries
        if not self._stream.frames or len(entries) != self._stream.frames:
            return None
        offsets = self._composition_offsets()
        if offsets is None or (offsets and len(offsets) != len(entries)):
            return None
        size = self._file_size()
        packets: list[_Packet] = []
        keys: list[int] = []
        last_dts = None
        for i, e in enumerate(entries):
            if last_dts is not None and e.timestamp <= last_dts:
                return None
            last_dts = e.timestamp
            if e.size == 0 or e.is_discard:
                continue
            if e.pos < 0 or e.pos + e.size > size:
                return None
            t = e.timestamp + (offsets[i] if offsets else 0)
            packets.append(_Packet(t, e.pos, e.size))
            if e.is_keyframe:
                keys.append(t)
        pts = [p.pts for p in packets]
        if not keys or len(set(pts)) != len(pts):
            return None
        if not self._first_packets_agree(packets, keys):
            self._reopen()
            return None
        self._packets = packets
        return _FrameIndex(sorted(pts), sorted(keys), len(pts))

    def _composition_offsets(self) -> list[int] | None:
        """The ``ctts`` offsets of the stream's track (``[]``: none), from the ``moov`` box."""
        if self._file is not None:
            moov = read_moov(self._file)
        else:
            with open(self.path, "rb") as f:
                moov = read_moov(f)
        return None if moov is None else composition_offsets(moov, self._stream.id)

    def _file_size(self) -> int:
        if self._file is None:
            return os.path.getsize(self.path)
        if isinstance(self._file, io.BytesIO):  # a shard member, read already
            return self._file.getbuffer().nbytes
        return self._file.size

    def _first_packets_agree(self, packets: list[_Packet], keys: list[int], n: int = 8) -> bool:
        """Demux the first ``n`` packets (libavformat holds them from opening) and compare
        their timestamps, key flags and positions with the table's."""
        key_set = set(keys)
        want = [(p.pts, p.pts in key_set, p.pos) for p in packets[:n]]
        got = []
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                got.append((packet.pts, packet.is_keyframe, packet.pos))
                if len(got) == len(want):
                    break
        except av.FFmpegError:
            return False
        return got == want

    @property
    def num_frames(self) -> int:
        """Number of frames, from the sample table or counted from the stream's packets."""
        return self._index.count

    @property
    def fps(self) -> float:
        """Average frame rate from the container (0.0 when unknown)."""
        rate = self._stream.average_rate or self._stream.guessed_rate
        return float(rate) if rate else 0.0

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the coded frames."""
        return self._stream.codec_context.height, self._stream.codec_context.width

    # -- reading -------------------------------------------------------------------------------
    def read(self, indices: Sequence[int], short_side: int | None = None) -> torch.Tensor:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 ``(T, H, W, C)`` RGB."""
        idx = [int(i) for i in indices]
        if not idx:
            raise ValueError("indices must not be empty")
        bad = [i for i in idx if not 0 <= i < self.num_frames]
        if bad:
            raise IndexError(f"{self.path}: frame indices {bad[:5]} outside [0, {self.num_frames})")
        wanted = sorted(set(idx))
        try:
            frames = self._read_runs(wanted) if self._index.pts is not None else None
            if frames is None:
                frames = self._read_sequential(wanted)
        except av.FFmpegError as e:
            raise VideoDecodeError(self.path, f"decoding failed: {e}") from e
        except StorageError as e:
            raise VideoDecodeError(self.path, e.reason) from None
        if not frames:
            raise VideoDecodeError(self.path, "no frame could be decoded")
        arrays = self._to_arrays(frames, wanted, short_side)
        return torch.from_numpy(np.stack([arrays[i] for i in idx]))

    def _runs(self, wanted: list[int]) -> list[list[int]]:
        """Split sorted frame numbers where a key frame lies between two of them: seeking to
        that key frame is cheaper than decoding the gap (far-apart windows, short GOPs)."""
        pts, keys = self._index.pts, self._index.keys
        assert pts is not None
        runs = [[wanted[0]]]
        for prev, i in zip(wanted, wanted[1:]):
            k = bisect.bisect_right(keys, pts[i]) - 1  # last key frame at or before frame i
            if k >= 0 and keys[k] > pts[prev]:
                runs.append([i])
            else:
                runs[-1].append(i)
        return runs

    def _read_runs(self, wanted: list[int]) -> dict[int, av.VideoFrame] | None:
        """``_read_seek`` for each run of ``_runs``; None if any seek failed."""
        frames: dict[int, av.VideoFrame] = {}
        runs = self._runs(wanted)
        for run, span in zip(runs, self._prefetch_spans(runs)):
            if span is not None:
                self._file.prefetch(*span)  # one request for the runs ahead (cached: none)
            got = self._read_seek(run)
            if got is None:
                return None
            frames.update(got)
        return frames

    def _read_seek(self, wanted: list[int]) -> dict[int, av.VideoFrame] | None:
        """Decode from the key frame before ``wanted[0]`` to ``wanted[-1]``; None if seeking failed."""
        pts = self._index.pts
        assert pts is not None
        by_pts = {pts[i]: i for i in wanted}
        first, last = pts[wanted[0]], pts[wanted[-1]]
        candidates = [k for k in self._index.keys if k <= first][::-1][:3]
        for key in candidates:
            self._container.seek(key, stream=self._stream, backward=True)
            frames: dict[int, av.VideoFrame] = {}
            started = False
            for frame in self._decode_skipping(by_pts):
                t = frame.pts if frame.pts is not None else frame.dts
                if t is None:
                    break
                if not started:
                    started = True
                    if t > first:  # landed after the first wanted frame: try an earlier key
                        break
                if t in by_pts:
                    frames[by_pts[t]] = frame
                if t >= last:
                    break
            if len(frames) == len(wanted):
                return frames
        log.debug("%s: seeking did not deliver all frames; decoding sequentially", self.path)
        return None

    def _byte_span(self, run: list[int]) -> tuple[int, int] | None:
        """Bytes ``[start, end)`` holding the packets a seeking read of ``run`` demuxes: from
        the key frame before its first frame to its last frame, the frames displayed before
        that one, a few more (decoder delay) and libavformat's read chunk."""
        pts, keys = self._index.pts, self._index.keys
        assert pts is not None and self._packets is not None
        if self._decode_order is None:
            self._decode_order = {p.pts: i for i, p in enumerate(self._packets)}
        k = bisect.bisect_right(keys, pts[run[0]]) - 1
        first = self._decode_order.get(keys[max(k, 0)])
        end = self._decode_order.get(pts[run[-1]])
        if first is None or end is None:
            return None
        ahead = self._packets[end + 1 : end + 1 + _REORDER_WINDOW]
        end += max((k + 1 for k, p in enumerate(ahead) if p.pts <= pts[run[-1]]), default=0)
        span = self._packets[first : end + 1 + _DECODER_DELAY]
        return min(p.pos for p in span), max(p.pos + p.size for p in span) + _AVIO_BUFFER

    def _prefetch_spans(self, runs: list[list[int]]) -> list[tuple[int, int] | None]:
        """Per run, the byte span to prefetch before reading it (remote files only): the spans
        of neighbouring runs merged while they overlap and fit one read-ahead block."""
        if self._file is None or self._packets is None or not hasattr(self._file, "prefetch"):
            return [None] * len(runs)
        block = self._file.block_size
        groups: list[list[int]] = []  # [start, end) of runs read with one request
        ids: list[int | None] = []
        for span in map(self._byte_span, runs):
            group = groups[-1] if groups else None
            if span is None:
                ids.append(None)
                continue
            if group and span[0] <= group[1] and max(span[1], group[1]) - group[0] <= block:
                group[1] = max(group[1], span[1])
            else:
                groups.append(list(span))
            ids.append(len(groups) - 1)
        return [None if i is None else (groups[i][0], groups[i][1]) for i in ids]

    def _decode_skipping(self, wanted_pts: dict[int, int]) -> Iterator[av.VideoFrame]:
        """Decode from the current position, leaving out unwanted H.264 frames that no other
        frame references (``nal_ref_idc == 0``): skipping them cannot change any other frame."""
        for packet in self._container.demux(self._stream):
            if (
                self._nal_length is not None
                and packet.size
                and packet.pts is not None
                and packet.pts not in wanted_pts
                and _h264_unreferenced(memoryview(packet), self._nal_length)
            ):
                continue
            yield from packet.decode()

    def _read_sequential(self, wanted: list[int]) -> dict[int, av.VideoFrame]:
        """Decode from the start, counting frames, up to ``wanted[-1]``; pads if the stream ends."""
        self._container.seek(0, stream=self._stream, backward=True, any_frame=False)
        want = set(wanted)
        frames: dict[int, av.VideoFrame] = {}
        last = None
        for n, frame in enumerate(self._container.decode(self._stream)):
            last = frame
            if n in want:
                frames[n] = frame
            if n >= wanted[-1]:
                break
        missing = [i for i in wanted if i not in frames]
        if missing and last is not None:
            log.warning(
                "%s: stream ended before frame %d; repeating its last frame", self.path, missing[0]
            )
            for i in missing:
                frames[i] = last
        return frames

    def _to_arrays(
        self, frames: dict[int, av.VideoFrame], wanted: list[int], short_side: int | None
    ) -> dict[int, np.ndarray]:
        """RGB (and resized) arrays of the wanted frames, one shared swscale context."""
        out: dict[int, np.ndarray] = {}
        converted: dict[int, np.ndarray] = {}
        for i in wanted:
            frame = frames[i]
            key = id(frame)
            if key not in converted:
                h, w = short_side_size(frame.height, frame.width, short_side)
                down = h * w < frame.height * frame.width
                converted[key] = self._reformatter.reformat(
                    frame,
                    width=w,
                    height=h,
                    format="rgb24",
                    interpolation="AREA" if down else "BILINEAR",
                    threads=self._threads,
                ).to_ndarray()
            out[i] = converted[key]
        return out

    def close(self) -> None:
        if getattr(self, "_container", None) is not None:
            self._container.close()
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_clip(
    path: str | os.PathLike,
    indices: Sequence[int],
    short_side: int | None = None,
    threads: int = 0,
) -> torch.Tensor:
    """Read frames ``indices`` of a video as uint8 ``(T, H, W, C)`` RGB, optionally resized so
    the short side is ``short_side``. Raises ``VideoDecodeError`` for an unreadable file."""
    with VideoFile(path, threads=threads) as video:
        return video.read(indices, short_side)


def count_frames(path: str | os.PathLike) -> int:
    """Number of frames of a video, from its sample table or its packets (no decoding)."""
    with VideoFile(path) as video:
        return video.num_frames
