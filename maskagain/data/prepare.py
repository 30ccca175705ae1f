"""Re-encode a video dataset for fast training: seekable H.264 that decodes cheaply.

Each video becomes an ``.mp4`` (H.264, yuv420p) whose short side is at most ``short_side``
(never upscaled), with a key frame every ``keyint`` frames (short seeks), B-frames that no other
frame references (``b-pyramid=none``: the loader skips the unwanted ones without decoding them),
x264's ``tune=fastdecode`` (CAVLC, no deblocking), the index at the front
(``movflags=+faststart``), no audio, and the source's frames one for one (same count, same
timestamps, so the same frame rate).

    report, lists = prepare_lists(["train.csv"], "/data/k400", "/data/k400_fast", workers=8)
    report, lists = prepare_folder("/data/ucf101", "/data/ucf101_fast")

Finished outputs are skipped, so an interrupted run resumes where it stopped: every output is
written to a temporary name next to it and renamed when complete, so a half-written file is never
taken for a finished one. A video that cannot be read is reported (``report.failed``) and skipped.
"""

from __future__ import annotations

import glob
import logging
import multiprocessing
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from maskagain.data.decode import short_side_size
from maskagain.data.lists import (
    VideoRecord,
    read_class_index,
    read_list,
    scan_class_folders,
    write_class_index,
    write_list,
)

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class EncodeOptions:
    """How prepared videos are encoded. ``crf`` 18 keeps PSNR >= 35 dB against the source
    resized to the same size on the textured, moving test videos of the benchmark.
    ``fast_decode``: x264's ``tune=fastdecode`` (CAVLC, no deblocking, no weighted prediction):
    a faster training loader for somewhat larger files at the same PSNR (see
    ``python -m benchmarks.data --pipeline``)."""

    short_side: int = 320
    keyint: int = 16
    crf: int = 18
    bframes: int = 3
    preset: str = "veryfast"
    fast_decode: bool = True

    def x264_params(self) -> str:
        return (
            f"keyint={self.keyint}:min-keyint={self.keyint}:scenecut=0:"
            f"bframes={self.bframes}:b-pyramid=none:threads=1"
        )


@dataclass(frozen=True)
class Job:
    """One video to prepare: ``src`` -> ``dst`` (absolute paths)."""

    src: str
    dst: str


@dataclass
class PrepareReport:
    """What a run did: videos written, skipped (already finished) and failed (path, reason);
    bytes of the sources and of the outputs over all finished videos."""

    written: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    done: set[str] = field(default_factory=set)  # sources whose output exists now


def output_name(src: str, root: str) -> str:
    """Path of the prepared video relative to the output folder: the source's path relative to
    ``root`` (or its absolute path without the leading ``/`` outside ``root``), as ``.mp4``."""
    rel = os.path.relpath(src, root) if root else src
    if rel.startswith(os.pardir) or os.path.isabs(rel):
        rel = os.path.abspath(src).lstrip(os.sep)
    return str(Path(rel).with_suffix(".mp4"))


def _jobs(
    records: Iterable[VideoRecord], root: str, out: str
) -> tuple[list[Job], list[tuple[str, str]]]:
    """One job per output, and (source, reason) for sources whose output name another source
    already takes (``a.webm`` and ``a.mp4`` in one folder)."""
    seen: dict[str, Job] = {}
    clashes: list[tuple[str, str]] = []
    for r in records:
        dst = os.path.join(out, output_name(r.path, root))
        if dst not in seen:
            seen[dst] = Job(r.path, dst)
        elif seen[dst].src != r.path:
            clashes.append((r.path, f"same output {dst} as {seen[dst].src}"))
    return list(seen.values()), clashes


def _retarget(records: list[VideoRecord], root: str, out: str, done: set[str]) -> list[VideoRecord]:
    """Records pointing at the prepared videos, without those that failed."""
    return [
        VideoRecord(os.path.join(out, output_name(r.path, root)), r.label)
        for r in records
        if r.path in done
    ]


def _stale_temps(dst: str) -> list[Path]:
    """Temporary files an interrupted run left for ``dst``."""
    d = Path(dst)
    if not d.parent.is_dir():
        return []
    return list(d.parent.glob(f".{glob.escape(d.name)}.*{TMP_SUFFIX}"))


def _timestamps(frame: av.VideoFrame, last: int | None) -> int:
    """The frame's timestamp, or one tick after the last one where it is missing or not
    increasing (encoders need strictly increasing timestamps)."""
    t = frame.pts
    if t is None or (last is not None and t <= last):
        return 0 if last is None else last + 1
    return t


def encode_video(src: str, dst: str, opts: EncodeOptions) -> int:
    """Re-encode ``src`` into the mp4 file ``dst`` (written in place: callers rename). Returns the
    number of frames. Raises ``av.FFmpegError``/``ValueError`` for an unreadable source."""
    with av.open(src, metadata_errors="ignore") as inp:
        if not inp.streams.video:
            raise ValueError("no video stream")
        ins = inp.streams.video[0]
        ins.thread_type, ins.codec_context.thread_count = "AUTO", 1
        h, w = ins.codec_context.height, ins.codec_context.width
        if not h or not w:
            raise ValueError("video stream has no frame size")
        th, tw = short_side_size(h, w, min(opts.short_side, min(h, w)))
        th, tw = th - th % 2, tw - tw % 2  # yuv420p needs even sides
        rate = ins.average_rate or ins.guessed_rate or Fraction(25)
        frames = 0
        with av.open(dst, "w", format="mp4", options={"movflags": "+faststart"}) as out:
            outs = out.add_stream("libx264")
            outs.width, outs.height, outs.pix_fmt = tw, th, "yuv420p"
            tb = ins.time_base or 1 / rate  # the source's timestamps (the muxer may change
            outs.codec_context.time_base = outs.time_base = tb  # outs.time_base later)
            outs.codec_context.framerate = rate
            outs.options = {
                "crf": str(opts.crf),
                "preset": opts.preset,
                "x264-params": opts.x264_params(),
                **({"tune": "fastdecode"} if opts.fast_decode else {}),
            }
            last: int | None = None
            for frame in inp.decode(ins):
                pts = _timestamps(frame, last)
                small = frame.reformat(width=tw, height=th, format="yuv420p", interpolation="AREA")
                small.pts, small.time_base, last = pts, tb, pts
                out.mux(outs.encode(small))
                frames += 1
            if frames == 0:
                raise ValueError("video stream has no frames")
            out.mux(outs.encode(None))
    return frames


def prepare_one(job: Job, opts: EncodeOptions) -> tuple[Job, str, int, int]:
    """Prepare one video. Returns (job, status, source bytes, output bytes); status is
    ``"written"``, ``"skipped"`` (output already finished) or the reason it failed."""
    size_in = os.path.getsize(job.src) if os.path.isfile(job.src) else 0
    if os.path.isfile(job.dst):
        return job, "skipped", size_in, os.path.getsize(job.dst)
    for stale in _stale_temps(job.dst):
        stale.unlink(missing_ok=True)
    if not os.path.isfile(job.src):
        return job, "file not found", 0, 0
    os.makedirs(os.path.dirname(job.dst) or ".", exist_ok=True)
    d = Path(job.dst)
    tmp = str(d.parent / f".{d.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        encode_video(job.src, tmp, opts)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, job.dst)  # atomic: the output appears only when complete
    except (av.FFmpegError, ValueError, OSError, UnicodeDecodeError) as e:
        Path(tmp).unlink(missing_ok=True)
        return job, " ".join(str(e).split()) or type(e).__name__, size_in, 0
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return job, "written", size_in, os.path.getsize(job.dst)


def _prepare_star(args: tuple[Job, EncodeOptions]) -> tuple[Job, str, int, int]:
    return prepare_one(*args)


def run_jobs(
    jobs: list[Job], opts: EncodeOptions, workers: int = 0, progress: bool = True
) -> PrepareReport:
    """Prepare ``jobs`` in ``workers`` processes (0: one per CPU core), with a progress bar."""
    from tqdm import tqdm

    workers = min(workers or os.cpu_count() or 1, max(len(jobs), 1))
    report = PrepareReport()
    start = time.perf_counter()
    bar = tqdm(total=len(jobs), unit="file", disable=not progress, dynamic_ncols=True)
    work = [(job, opts) for job in jobs]

    def account(result: tuple[Job, str, int, int]) -> None:
        job, status, size_in, size_out = result
        if status in ("written", "skipped"):
            report.done.add(job.src)
            report.bytes_in += size_in
            report.bytes_out += size_out
            report.written += status == "written"
            report.skipped += status == "skipped"
        else:
            report.failed.append((job.src, status))
            log.warning("cannot prepare %s: %s", job.src, status)
        mb_s = report.bytes_in / 1e6 / max(time.perf_counter() - start, 1e-9)
        bar.set_postfix_str(f"{mb_s:.1f} MB/s, {len(report.failed)} failed", refresh=False)
        bar.update(1)

    try:
        if workers == 1:
            for item in work:
                account(_prepare_star(item))
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers) as pool:
                for result in pool.imap_unordered(_prepare_star, work):
                    account(result)
    finally:
        bar.close()
    report.seconds = time.perf_counter() - start
    return report


def write_failed(out: str, failed: list[tuple[str, str]]) -> str:
    """Write ``out/failed.txt`` (``path<TAB>reason`` per line; empty when none failed)."""
    path = os.path.join(out, "failed.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{src}\t{reason}\n" for src, reason in failed)
    return path


def prepare_lists(
    list_files: list[str],
    root: str,
    out: str,
    opts: EncodeOptions = EncodeOptions(),
    workers: int = 0,
    separator: str = "auto",
    progress: bool = True,
) -> tuple[PrepareReport, list[str]]:
    """Prepare every video of the VideoMAE list files and write ``out/<list name>`` for each,
    same labels, paths relative to ``out``, failed videos left out. Returns (report, lists)."""
    per_list = {f: read_list(f, root, separator) for f in list_files}
    records = [r for recs in per_list.values() for r in recs]
    os.makedirs(out, exist_ok=True)
    jobs, clashes = _jobs(records, root, out)
    report = run_jobs(jobs, opts, workers, progress)
    report.failed += clashes
    written = []
    for list_file, recs in per_list.items():
        dst = os.path.join(out, os.path.basename(list_file))
        write_list(_retarget(recs, root, out, report.done), dst, root=out)
        written.append(dst)
    write_failed(out, report.failed)
    return report, written


def folder_layout(root: str) -> tuple[list[str], list[str]]:
    """The split folders (``train``/``val``/``test``, none for a flat tree) and the class names
    (``root/classes.txt``, else the class folders, sorted) of a class-folder tree."""
    splits = [s for s in ("train", "val", "test") if os.path.isdir(os.path.join(root, s))]
    index = os.path.join(root, "classes.txt")
    if os.path.isfile(index):
        return splits, read_class_index(index)
    dirs = [os.path.join(root, s) for s in splits] or [root]
    names = sorted({e.name for d in dirs for e in os.scandir(d) if e.is_dir()})
    if not names:
        raise ValueError(f"{root}: no class folders")
    return splits, names


def prepare_folder(
    root: str,
    out: str,
    opts: EncodeOptions = EncodeOptions(),
    workers: int = 0,
    progress: bool = True,
) -> tuple[PrepareReport, list[str]]:
    """Prepare a ``root/<class>/<video>`` tree (or ``root/<split>/<class>/<video>``) into the same
    tree under ``out`` with the same ``classes.txt``; also writes ``out/<split>.txt`` lists.
    Returns (report, lists)."""
    splits, names = folder_layout(root)
    per_split = {
        s or "all": scan_class_folders(os.path.join(root, s), names=names)[0]
        for s in (splits or [""])
    }
    records = [r for recs in per_split.values() for r in recs]
    os.makedirs(out, exist_ok=True)
    write_class_index(names, os.path.join(out, "classes.txt"))
    jobs, clashes = _jobs(records, root, out)
    report = run_jobs(jobs, opts, workers, progress)
    report.failed += clashes
    written = []
    for split, recs in per_split.items():
        dst = os.path.join(out, f"{split}.txt")
        write_list(_retarget(recs, root, out, report.done), dst, root=out)
        written.append(dst)
    write_failed(out, report.failed)
    return report, written
