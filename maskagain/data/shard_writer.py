"""``maskagain prepare --shards SIZE``: prepared videos packed into tar shards of about SIZE.

Each split (a list file, or a split folder of a class-folder tree) becomes a shard set
``OUT/<split>/`` in the layout :mod:`maskagain.data.shards` describes. Videos are re-encoded as
``maskagain prepare`` does (:func:`maskagain.data.prepare.encode_video`) in worker processes, in
input order, and appended to the current shard; a shard is written (under a temporary name,
renamed when complete) once it holds ``size`` bytes, then its sidecar ``shard-NNNNNN.json``.

A rerun resumes: complete shards (those with a sidecar) are kept, their samples are not encoded
again, and the next shard starts after them, so an interrupted run ends with the same samples in
the same shards as an uninterrupted one. A sample's key is its position in the split's input
(``00000042``). Inputs that cannot be read are listed (``index.json`` "failed" and
``OUT/failed.txt``) and skipped.

    size = parse_size("256MB")
    report, indexes = prepare_shards_lists(["train.csv"], "/data/k400", "s3://bucket/k400", size)
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import av

from maskagain.data.lists import VideoRecord, read_list, scan_class_folders
from maskagain.data.prepare import EncodeOptions, PrepareReport, encode_video, folder_layout
from maskagain.data.shards import INDEX_NAME, ShardIndex, ShardSample, join
from maskagain.data.storage import Storage, is_remote

log = logging.getLogger(__name__)

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30}  # fmt: skip


def parse_size(text: str) -> int:
    """Bytes of a size such as ``200KB``, ``256MB``, ``1GiB`` or ``5e8``; ValueError otherwise."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*", text)
    unit = m.group(2).upper() if m else ""
    if not m or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size; write e.g. 200KB, 256MB or 1GB")
    try:
        size = int(float(m.group(1)) * _UNITS[unit])
    except ValueError:
        raise ValueError(f"{text!r} is not a size; write e.g. 200KB, 256MB or 1GB") from None
    if size < 1:
        raise ValueError(f"shard size {text!r} must be > 0")
    return size


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"


def sidecar_name(number: int) -> str:
    return f"shard-{number:06d}.json"


def tar_shard(members: list[tuple[str, bytes, dict]]) -> tuple[bytes, list[tuple[int, int]]]:
    """A tar of ``(key, mp4 bytes, meta)`` as ``key.mp4`` + ``key.json`` members, and each mp4
    member's ``(offset, size)`` in it (read back from the tar headers)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, mp4, meta in members:
            for name, data in ((f"{key}.mp4", mp4), (f"{key}.json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        where = {m.name: (m.offset_data, m.size) for m in tar.getmembers()}
    return data, [where[f"{key}.mp4"] for key, _, _ in members]


class ShardSetWriter:
    """Appends encoded samples to the shards of one folder; resumes after its complete shards."""

    def __init__(self, folder: str, size: int, storage: Storage) -> None:
        self.folder, self.size, self.storage = folder, size, storage
        self.samples: list[ShardSample] = []  # of complete shards, in order
        self.number = 0
        while storage.exists(join(folder, sidecar_name(self.number))):
            raw = json.loads(storage.read_bytes(join(folder, sidecar_name(self.number))))
            self.samples += [ShardSample(**s) for s in raw]
            self.number += 1
        self.pending: list[tuple[str, bytes, dict]] = []
        self.pending_bytes = 0
        self._drop_temporaries()

    def _drop_temporaries(self) -> None:
        """Temporary files a killed run left in a local folder."""
        if not is_remote(self.folder) and os.path.isdir(self.folder):
            for stale in Path(self.folder).glob(".tmp-*"):
                stale.unlink(missing_ok=True)

    @property
    def done(self) -> set[str]:
        """Sources already in complete shards."""
        return {s.source for s in self.samples}

    def add(self, key: str, mp4: bytes, label: int, source: str) -> None:
        self.pending.append((key, mp4, {"key": key, "label": label, "source": source}))
        self.pending_bytes += len(mp4)
        if self.pending_bytes >= self.size:
            self.flush()

    def flush(self) -> None:
        """Write the pending samples as the next shard (nothing when none are pending)."""
        if not self.pending:
            return
        data, places = tar_shard(self.pending)
        shard = [
            ShardSample(key, meta["label"], meta["source"], self.number, offset, size)
            for (key, _, meta), (offset, size) in zip(self.pending, places)
        ]
        self.storage.write_bytes(join(self.folder, shard_name(self.number)), data)
        sidecar = json.dumps([asdict(s) for s in shard]).encode()
        self.storage.write_bytes(join(self.folder, sidecar_name(self.number)), sidecar)
        log.info("wrote %s (%d samples)", shard_name(self.number), len(shard))
        self.samples += shard
        self.number += 1
        self.pending, self.pending_bytes = [], 0

    def write_index(self, classes: list[str], failed: list[tuple[str, str]]) -> str:
        shards = [shard_name(n) for n in range(self.number)]
        index = ShardIndex(self.folder, classes, shards, self.samples, failed)
        path = join(self.folder, INDEX_NAME)
        self.storage.write_bytes(path, json.dumps(index.to_json()).encode())
        return path


def encode_to_bytes(args: tuple[int, str, EncodeOptions]) -> tuple[int, bytes | None, str]:
    """``(position, mp4 bytes, "")`` of one prepared video, or ``(position, None, reason)``."""
    position, src, opts = args
    if not os.path.isfile(src):
        return position, None, "file not found"
    fd, tmp = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        encode_video(src, tmp, opts)
        with open(tmp, "rb") as f:
            return position, f.read(), ""
    except (av.FFmpegError, ValueError, OSError, UnicodeDecodeError) as e:
        return position, None, " ".join(str(e).split()) or type(e).__name__
    finally:
        Path(tmp).unlink(missing_ok=True)


def _encoded(
    work: list[tuple[int, str, EncodeOptions]], workers: int
) -> Iterator[tuple[int, bytes | None, str]]:
    """Results of :func:`encode_to_bytes` in input order, from ``workers`` processes."""
    if workers <= 1:
        yield from map(encode_to_bytes, work)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(encode_to_bytes, work)


def shard_split(
    records: list[VideoRecord],
    folder: str,
    size: int,
    classes: list[str],
    opts: EncodeOptions,
    workers: int,
    report: PrepareReport,
) -> str:
    """Shard one split's ``records`` into ``folder`` (resuming); returns its index path."""
    writer = ShardSetWriter(folder, size, Storage())
    done = writer.done
    report.skipped += sum(r.path in done for r in records)
    work = [(i, r.path, opts) for i, r in enumerate(records) if r.path not in done]
    failed: list[tuple[str, str]] = []
    for position, mp4, reason in _encoded(work, min(workers, max(len(work), 1))):
        r = records[position]
        if mp4 is None:
            failed.append((r.path, reason))
            log.warning("cannot prepare %s: %s", r.path, reason)
            continue
        writer.add(f"{position:08d}", mp4, r.label, r.path)
        report.written += 1
        report.bytes_in += os.path.getsize(r.path)
    writer.flush()
    report.done.update(s.source for s in writer.samples)
    report.bytes_out += sum(s.size for s in writer.samples)
    report.failed += failed
    return writer.write_index(classes, failed)


def _finish(out: str, report: PrepareReport, start: float) -> None:
    lines = "".join(f"{src}\t{reason}\n" for src, reason in report.failed)
    Storage().write_bytes(join(out, "failed.txt"), lines.encode())
    report.seconds = time.perf_counter() - start


def prepare_shards_lists(
    list_files: list[str],
    root: str,
    out: str,
    size: int,
    opts: EncodeOptions | None = None,
    workers: int = 0,
    separator: str = "auto",
) -> tuple[PrepareReport, list[str]]:
    """A shard set ``out/<list name without extension>`` per list file. Returns (report,
    index paths)."""
    start, report = time.perf_counter(), PrepareReport()
    opts, workers = opts or EncodeOptions(), workers or os.cpu_count() or 1
    indexes = []
    for list_file in list_files:
        split = Path(list_file).stem
        records = read_list(list_file, root, separator)
        indexes.append(shard_split(records, join(out, split), size, [], opts, workers, report))
    _finish(out, report, start)
    return report, indexes


def prepare_shards_folder(
    root: str, out: str, size: int, opts: EncodeOptions | None = None, workers: int = 0
) -> tuple[PrepareReport, list[str]]:
    """A shard set per split folder of a ``root/[split/]<class>/<video>`` tree (``out/all`` for a
    tree without split folders), class names in every index. Returns (report, index paths)."""
    start, report = time.perf_counter(), PrepareReport()
    opts, workers = opts or EncodeOptions(), workers or os.cpu_count() or 1
    splits, names = folder_layout(root)
    indexes = []
    for split in splits or [""]:
        records = scan_class_folders(os.path.join(root, split), names=names)[0]
        folder = join(out, split or "all")
        indexes.append(shard_split(records, folder, size, names, opts, workers, report))
    _finish(out, report, start)
    return report, indexes
