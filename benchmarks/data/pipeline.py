"""The training loader in clips/s per core (``--pipeline``).

One process, one decoder thread: decode + sampling + augmentation + batching with masks on
K400-like H.264 sources (10 s, 30 fps, 340x256, 568x320 and 1280x720, x264 defaults) and an
SSv2-like VP9 webm (240p, 12 fps, 4 s): VideoMAE's and VideoMAE V2's loader logic (decord) next
to ``maskagain.data`` on the originals (r = 1 and 4 clips per decode) and on ``maskagain
prepare``d copies, rows round-robin; ratios, an estimate of CPU cores per GPU for B->B and B->S,
and a profile of where a video's time goes. ``--quick``: the same on two short sources, one
round (a smoke test). The rows of data kept elsewhere (object storage, shards) are built by
:mod:`benchmarks.data.remote`.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

import av
import numpy as np
import torch

from benchmarks.data.decode import write_test_video
from maskagain.data import DataConfig, build_transform
from maskagain.data.sampling import sample_indices

# ------------------------------------------------------------------ training loader (--pipeline)
# name -> (height, width, fps, seconds, codec, sampling); K400-like H.264 with x264 defaults,
# SSv2-like VP9 webm
PIPE_SOURCES = {
    "k400_320p": (320, 568, 30, 10.0, "libx264", "dense"),
    "k400_256p": (256, 340, 30, 10.0, "libx264", "dense"),
    "k400_720p": (720, 1280, 30, 10.0, "libx264", "dense"),
    "ssv2_240p": (240, 426, 12, 4.0, "libvpx-vp9", "segment"),
}
QUICK_SOURCES = {
    "k400_320p": (320, 568, 30, 3.0, "libx264", "dense"),
    "ssv2_240p": (240, 426, 12, 3.0, "libvpx-vp9", "segment"),
}
# prepared files in object storage, shards on disk and in object storage (benchmarks.data.remote),
# decoding only (the crop on the device) like the local row they are compared with
LOCAL_ROW = "ours_prepared_devcrop_r4"
REMOTE_ROWS = (
    "ours_prepared_s3_devcrop_r4",
    "ours_shards_devcrop_r4",
    "ours_shards_s3_devcrop_r4",
)
PIPE_ROWS = (
    "videomae",
    "videomae_v2",
    "ours_r1",
    "ours_r4",
    "ours_prepared_r4",
    "ours_prepared_cabac_r4",
    "ours_prepared_uint8_r4",
    "ours_prepared_devcrop_r4",
    *REMOTE_ROWS,
)
# GPU step rate estimate: 40% of 790 TFLOP/s (bf16 dense) over the training FLOPs of one clip
GPU_FLOPS = 0.4 * 790e12


def source_path(work: Path, name: str, spec: tuple) -> Path:
    """The benchmark's copy of source ``name`` (written once)."""
    h, w, fps, seconds, codec, _ = spec
    ext = "webm" if codec == "libvpx-vp9" else "mp4"
    path = work / f"pipe_{name}_{int(seconds)}s.{ext}"
    if not path.exists():
        print(f"writing {path} ...", flush=True)
        tmp = path.with_name(f".tmp_{path.name}")
        write_test_video(tmp, h, w, fps, seconds, codec)
        tmp.rename(path)
    return path


def clip_flops() -> dict[str, float]:
    """Training FLOPs per 16x224x224 clip (tube mask 0.9) of B->B and B->S (benchmarks.flops)."""
    from benchmarks import flops as fl
    from maskagain.masking import visible_count

    grid = (8, 14, 14)
    clip = fl.ClipShape(8 * 14 * 14, visible_count("tube", grid, 0.9), 8, 3 * 2 * 16 * 16)
    base, small = fl.EncoderSpec(768, 12), fl.EncoderSpec(384, 12)
    return {
        "B->B": fl.maskagain_flops(base, base, clip, 16, 1).total,
        "B->S": fl.maskagain_flops(base, small, clip, 16, 1).total,
    }


_OFFSETS = ((0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (4, 2), (0, 2))
_SCALES = (1.0, 0.875, 0.75, 0.66)


class VideoMAELoader:
    """VideoMAE's training loader logic, for comparison: decord ``VideoReader`` (1 thread, full
    size) per video, ``get_batch``, PIL images, ``GroupMultiScaleCrop`` (PIL crop + bilinear
    resize to 224) once per sample, stack + ToTensor + normalise, a numpy tube mask per sample.
    ``num_sample=4`` is VideoMAE V2's repeated sampling (one decode, 4 transforms)."""

    def __init__(self, paths: list[str], sampling: str, num_sample: int, seed: int = 0) -> None:
        self.paths, self.sampling, self.num_sample = paths, sampling, num_sample
        self.rng = np.random.default_rng(seed)
        self.mean = np.array(DataConfig().mean, np.float32)[:, None, None, None]
        self.std = np.array(DataConfig().std, np.float32)[:, None, None, None]

    def _transform(self, images: list) -> tuple[torch.Tensor, np.ndarray]:
        from PIL import Image

        w, h = images[0].size
        base = min(w, h)
        ci, cj = self.rng.integers(len(_SCALES), size=2)
        cj = min(max(cj, ci - 1), ci + 1)
        cw, ch = int(base * _SCALES[ci]), int(base * _SCALES[cj])
        qr, qc = _OFFSETS[self.rng.integers(len(_OFFSETS))]
        top, left = (h - ch) * qr // 4, (w - cw) * qc // 4
        crops = [
            im.crop((left, top, left + cw, top + ch)).resize((224, 224), Image.BILINEAR)
            for im in images
        ]
        x = np.stack([np.asarray(c) for c in crops]).astype(np.float32) / 255  # (T, H, W, C)
        x = (x.transpose(3, 0, 1, 2) - self.mean) / self.std  # (C, T, H, W)
        n = 8 * 14 * 14 // 8
        mask = np.hstack([np.zeros(n - int(0.9 * n)), np.ones(int(0.9 * n))])
        self.rng.shuffle(mask)
        return torch.from_numpy(x), np.tile(mask, (8, 1)).flatten()

    def batch(self, videos: list[int]) -> dict:
        import decord
        from PIL import Image

        clips, masks = [], []
        for v in videos:
            vr = decord.VideoReader(self.paths[v], num_threads=1, ctx=decord.cpu(0))
            idx = sample_indices(len(vr), self.sampling, 16, 4, train=True)
            frames = vr.get_batch(idx).asnumpy()
            images = [Image.fromarray(f).convert("RGB") for f in frames]
            for _ in range(self.num_sample):
                clip, mask = self._transform(images)
                clips.append(clip)
                masks.append(torch.from_numpy(mask))
        return {"video": torch.stack(clips), "mask": torch.stack(masks).bool()}


class OurLoader:
    """``maskagain.data``'s training loader in-process: ``build_dataset``-style dataset with
    1 decoder thread, pre-training transform, ``MaskCollator`` (tube masks). With ``uint8``
    the clips leave as uint8 and are normalised on the training device (``data.normalize``),
    which is not counted here: on a GPU it is a few elementwise kernels per batch. With
    ``crop_on_device`` (``data.crop=device``) the workers only decode: each window's uint8
    frames and one crop box per clip leave, and the crop, resize and normalisation (one
    interpolation per clip on the device) are not counted either."""

    def __init__(
        self,
        paths: list[str],
        sampling: str,
        num_sample: int,
        repeat: str,
        uint8: bool = False,
        crop_on_device: bool = False,
    ) -> None:
        from maskagain.data import MaskCollator, VideoListDataset, VideoRecord

        cfg = DataConfig(
            sampling=sampling,
            num_sample=num_sample,
            repeat=repeat,
            decode_threads=1,
            num_workers=0,
        )
        records = [VideoRecord(p, 0) for p in paths]
        on_device = "crop" if crop_on_device else "normalize" if uint8 else None
        self.ds = VideoListDataset(records, cfg, "train", "pretrain", ["x"], on_device)
        self.collate = MaskCollator("tube", 0.9, (8, 14, 14))

    def batch(self, videos: list[int]) -> dict:
        return self.collate([self.ds[v] for v in videos])


def build_rows(original: Path, prepared: dict[str, Path], sampling: str, copies: int) -> dict:
    orig = [str(original)] * copies
    prep = {k: [str(p)] * copies for k, p in prepared.items()}
    return {
        "videomae": VideoMAELoader(orig, sampling, 1),
        "videomae_v2": VideoMAELoader(orig, sampling, 4),
        "ours_r1": OurLoader(orig, sampling, 1, "same_window"),
        "ours_r4": OurLoader(orig, sampling, 4, "same_window"),
        "ours_prepared_r4": OurLoader(prep["fast"], sampling, 4, "same_window"),
        "ours_prepared_cabac_r4": OurLoader(prep["cabac"], sampling, 4, "same_window"),
        "ours_prepared_uint8_r4": OurLoader(prep["fast"], sampling, 4, "same_window", True),
        "ours_prepared_devcrop_r4": OurLoader(
            prep["fast"], sampling, 4, "same_window", crop_on_device=True
        ),
    }


def prepared_psnr(original: Path, prepared: Path, step: int = 5) -> float:
    """PSNR (dB, RGB, every ``step``-th frame) of a prepared video against its source resized to
    the same size by swscale in 4:2:0 (area), i.e. what the codec lost."""

    def frames(path: Path, size: tuple[int, int] | None) -> np.ndarray:
        out = []
        with av.open(str(path)) as c:
            for k, f in enumerate(c.decode(video=0)):
                if k % step == 0:
                    if size and (f.height, f.width) != size:
                        f = f.reformat(size[1], size[0], "yuv420p", interpolation="AREA")
                    out.append(f.to_ndarray(format="rgb24").astype(np.float64))
        return np.stack(out)

    got = frames(prepared, None)
    mse = float(((got - frames(original, got.shape[1:3])) ** 2).mean())
    return 10 * float(np.log10(255**2 / max(mse, 1e-10)))


def bench_pipeline(rows: dict, clips_per_batch: int, rounds: int) -> dict:
    """Seconds per clip of each row, round-robin over rows (order rotated every round), one
    batch of ``clips_per_batch`` clips per row per round; median over rounds after a warm-up."""
    times: dict[str, list[float]] = {name: [] for name in rows}
    cpu: dict[str, list[float]] = {name: [] for name in rows}
    names = list(rows)
    for k in range(rounds + 1):
        order = names[k % len(names) :] + names[: k % len(names)]
        for name in order:
            r = 4 if name.endswith("r4") or name == "videomae_v2" else 1
            videos = list(range(clips_per_batch // r))
            start, start_cpu = time.perf_counter(), time.process_time()
            batch = rows[name].batch(videos)
            elapsed, used = time.perf_counter() - start, time.process_time() - start_cpu
            clips = len(batch["boxes"]) if "boxes" in batch else len(batch["video"])
            assert clips == clips_per_batch and batch["mask"].shape[0] == clips
            if k > 0:  # the first round warms up caches and libraries
                times[name].append(elapsed / clips_per_batch)
                cpu[name].append(used / clips_per_batch)
    return {
        name: {
            "clips_per_s_per_core": 1.0 / statistics.median(t),
            "clips_per_cpu_s": 1.0 / statistics.median(cpu[name]),
            "seconds_per_clip_median": statistics.median(t),
            "seconds_per_clip_min": min(t),
            "seconds_per_clip_max": max(t),
        }
        for name, t in times.items()
    }


def profile_clip(
    path: str,
    short_side: int,
    num_sample: int,
    sampling: str,
    clips: int,
    crop_on_device: bool = False,
) -> dict:
    """Where one training clip's time goes in ``maskagain.data``, summed over ``clips`` clips:
    open + index (demux), decoding up to the first wanted frame, decoding between wanted frames,
    RGB conversion + resize, augmentation (``num_sample`` crops; with ``crop_on_device`` only
    their boxes), collate + masks. Also counts decoded and skipped frames. Uses the decoder's
    own steps (private methods) with timers."""
    from maskagain.data import MaskCollator
    from maskagain.data.decode import VideoFile

    cfg = DataConfig(sampling=sampling, num_sample=num_sample)
    transform = build_transform(cfg, "train", "pretrain")
    collate = MaskCollator("tube", 0.9, (8, 14, 14))
    parts = dict.fromkeys(("open_index", "to_first", "between", "convert_resize", "augment"), 0.0)
    parts["collate_masks"] = 0.0
    counts = {"decoded_to_first": 0, "decoded_between": 0, "wanted": 0, "frames": 0}
    for k in range(clips):
        t0 = time.perf_counter()
        video = VideoFile(path, threads=1)
        t1 = time.perf_counter()
        idx = sample_indices(video.num_frames, sampling, 16, 4, train=True)
        wanted = sorted(set(idx))
        pts = video._index.pts
        by_pts = {pts[i]: i for i in wanted}
        key = max(t for t in video._index.keys if t <= pts[wanted[0]])
        video._container.seek(key, stream=video._stream, backward=True)
        frames, first_at = {}, None
        for frame in video._decode_skipping(by_pts):
            counts["decoded_between" if first_at else "decoded_to_first"] += 1
            if frame.pts in by_pts:
                frames[by_pts[frame.pts]] = frame
                if first_at is None:
                    first_at = time.perf_counter()
                    counts["decoded_to_first"] -= 1
                    counts["decoded_between"] += 1
            if frame.pts >= pts[wanted[-1]]:
                break
        t2 = time.perf_counter()
        arrays = video._to_arrays(frames, wanted, short_side)
        clip = torch.from_numpy(np.stack([arrays[i] for i in idx]))
        video.close()
        t3 = time.perf_counter()
        if crop_on_device:
            boxes = [transform.draw_box(clip) for _ in range(num_sample)]
            item = {"video": clip[None], "boxes": boxes, "window": [0] * num_sample}
        else:
            item = {"video": torch.stack([transform(clip) for _ in range(num_sample)])}
        t4 = time.perf_counter()
        collate([{**item, "label": 0, "index": k}])
        t5 = time.perf_counter()
        parts["open_index"] += t1 - t0
        parts["to_first"] += (first_at or t2) - t1
        parts["between"] += t2 - (first_at or t2)
        parts["convert_resize"] += t3 - t2
        parts["augment"] += t4 - t3
        parts["collate_masks"] += t5 - t4
        counts["wanted"] += len(wanted)
        counts["frames"] = video.num_frames
    total = sum(parts.values())
    return {
        "ms_per_video": {k: 1000 * v / clips for k, v in parts.items()},
        "share": {k: v / total for k, v in parts.items()},
        "frames_decoded_per_video": {
            k: v / clips for k, v in counts.items() if k.startswith("decoded")
        },
        "wanted_frames_per_video": counts["wanted"] / clips,
        "video_frames": counts["frames"],
        "clips_per_video": num_sample,
    }


def pipeline_report(
    work: Path,
    quick: bool,
    rounds: int,
    clips_per_batch: int,
    profile_clips: int,
    sources: tuple[str, ...] = (),
    rows: tuple[str, ...] = (),
) -> dict:
    """Write the sources, prepare them with ``maskagain prepare``'s library, bench every row
    (the storage rows against a local S3 server; ``rows``/``sources``: only these) and profile
    ours; returns the ``pipeline`` part of the report."""
    from benchmarks.data.remote import local_s3

    every = QUICK_SOURCES if quick else PIPE_SOURCES
    chosen = {k: v for k, v in every.items() if not sources or k in sources}
    flops = clip_flops()
    out: dict = {"rounds": rounds, "clips_per_batch": clips_per_batch, "sources": {}}
    out["gflop_per_clip"] = {k: v / 1e9 for k, v in flops.items()}
    out["gpu_clips_per_s_estimate"] = {k: GPU_FLOPS / v for k, v in flops.items()}
    for variant in VARIANTS:  # always prepared with today's options
        shutil.rmtree(work / f"prepared_{variant}", ignore_errors=True)
    shutil.rmtree(work / "shards", ignore_errors=True)
    with local_s3() as bucket:
        for name, spec in chosen.items():
            entry = bench_source(work, name, spec, bucket, rounds, clips_per_batch, out, rows)
            for label, path, on_device in _profiles(work, name, spec) if profile_clips else ():
                entry["profile"][label] = profile_clip(
                    str(path), 256, 4, spec[5], profile_clips, on_device
                )
            out["sources"][name] = entry
            rates = ", ".join(
                f"{k} {v['clips_per_s_per_core']:.1f}" for k, v in entry["rows"].items()
            )
            print(f"{name}: {rates} clips/s/core", flush=True)
    return out


VARIANTS = {"fast": {}, "cabac": {"fast_decode": False}}  # EncodeOptions changes


def prepare_variants(work: Path, original: Path) -> tuple[dict[str, Path], float]:
    """The source prepared with each of :data:`VARIANTS`; seconds of the first."""
    from maskagain.data.prepare import EncodeOptions, Job, run_jobs

    prepared, seconds = {}, 0.0
    for variant, changes in VARIANTS.items():
        prepared[variant] = work / f"prepared_{variant}" / f"{original.stem}.mp4"
        job = Job(str(original), str(prepared[variant]))
        report = run_jobs([job], EncodeOptions(**changes), 1, False)
        if report.failed:
            raise RuntimeError(f"prepare failed: {report.failed}")
        seconds = seconds or report.seconds
    return prepared, seconds


def bench_source(
    work: Path,
    name: str,
    spec: tuple,
    bucket: str,
    rounds: int,
    clips_per_batch: int,
    out: dict,
    only: tuple[str, ...] = (),
) -> dict:
    """Every row (or those in ``only``) on one source: rates, ratios, cores per GPU, the storage
    rows' I/O costs."""
    from benchmarks.data.remote import io_costs, remote_rows
    from maskagain.data.decode import VideoFile

    original = source_path(work, name, spec)
    prepared, prepare_seconds = prepare_variants(work, original)
    rows = build_rows(original, prepared, spec[5], copies=clips_per_batch)
    rows.update(remote_rows(prepared["fast"], bucket, work, spec[5], clips_per_batch))
    rows = {k: v for k, v in rows.items() if not only or k in only}
    result = bench_pipeline(rows, clips_per_batch, rounds)
    add_ratios(result, out["gpu_clips_per_s_estimate"])
    with VideoFile(prepared["fast"]) as v:
        frames = v.num_frames
    span = 61 if spec[5] == "dense" else frames  # 16 frames every 4th; segment: the whole video
    size = prepared["fast"].stat().st_size
    clips = (rounds + 1) * clips_per_batch
    return {
        "size": f"{spec[1]}x{spec[0]}",
        "fps": spec[2],
        "seconds": spec[3],
        "codec": spec[4],
        "bytes_original": original.stat().st_size,
        "bytes_prepared": size,
        "bytes_prepared_cabac": prepared["cabac"].stat().st_size,
        "psnr_db": prepared_psnr(original, prepared["fast"]),
        "psnr_db_cabac": prepared_psnr(original, prepared["cabac"]),
        "prepare_seconds": prepare_seconds,
        "rows": result,
        "io": io_costs(rows, clips, size * min(1.0, span / frames)),
        "profile": {},
    }


def add_ratios(result: dict, gpu_rates: dict[str, float]) -> None:
    """Each row's rate over VideoMAE's, VideoMAE V2's and the local prepared file's (None for
    a row not run), and cores per GPU."""
    for row in result.values():
        rate, cpu_rate = row["clips_per_s_per_core"], row["clips_per_cpu_s"]
        for key, base in (("x_videomae", "videomae"), ("x_videomae_v2", "videomae_v2"),
                          ("x_local_prepared", LOCAL_ROW)):  # fmt: skip
            row[key] = rate / result[base]["clips_per_s_per_core"] if base in result else None
        local = result.get(LOCAL_ROW)
        row["x_local_prepared_cpu"] = cpu_rate / local["clips_per_cpu_s"] if local else None
        row["cores_per_gpu"] = {k: g / rate for k, g in gpu_rates.items()}


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _profiles(work: Path, name: str, spec: tuple) -> tuple:
    original = source_path(work, name, spec)
    prepared = work / "prepared_fast" / f"{original.stem}.mp4"
    return (
        ("original", original, False),
        ("prepared", prepared, False),
        ("prepared, crop on device", prepared, True),
    )


def pipeline_markdown(report: dict) -> str:
    p = report["pipeline"]
    gpu = p["gpu_clips_per_s_estimate"]
    lines = [
        "",
        "## Training data loader (`--pipeline`)",
        "",
        f"`{report['command']}` on {report['machine']}, {report['date']}; 1-minute load average "
        f"{report['load_average_start']:.1f} at the start, {report['load_average_end']:.1f} at "
        "the end. One process, one decoder thread, `torch` 1 thread: decode + sampling + "
        f"augmentation (multi-scale crop to 224, normalise) + batching with tube masks, "
        f"{p['clips_per_batch']} clips per batch; rows round-robin (order rotated each round), "
        f"median over {p['rounds']} rounds. Rows: `videomae` = VideoMAE's loader logic (decord, "
        "PIL multi-scale crop, num_sample 1); `videomae_v2` = the same with VideoMAE V2's "
        "num_sample 4 (one decode, 4 crops); `ours_r1`/`ours_r4` = `maskagain.data` "
        "(repeat=same_window) on the originals; `ours_prepared_r4` = on `maskagain prepare`d "
        "files (short side 320, key frame every 16, non-reference B-frames, CRF 18, x264 "
        "tune=fastdecode); `ours_prepared_cabac_r4` = prepared without tune=fastdecode; "
        "`ours_prepared_uint8_r4` = prepared, uint8 batches normalised on the training device "
        "(`data.normalize=device`, the default on CUDA; that normalisation is not counted); "
        "`ours_prepared_devcrop_r4` = prepared, the workers only decode and draw crop boxes, "
        "the multi-scale crop, resize and normalisation run on the training device "
        "(`data.crop=device`, the default on CUDA; not counted).",
        "",
        "Cores per GPU (**estimate**) = GPU step rate / clips per second per core, GPU step rate "
        f"= 40% of 790 TFLOP/s over the training FLOPs per clip (B->B "
        f"{p['gflop_per_clip']['B->B']:.0f} GFLOP, B->S {p['gflop_per_clip']['B->S']:.0f} GFLOP:"
        f" {gpu['B->B']:.0f} and {gpu['B->S']:.0f} clips/s).",
        "",
        "| source | row | clips/s/core | x VideoMAE | x VideoMAE V2 | cores/GPU B->B "
        "| cores/GPU B->S |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in p["sources"].items():
        for row, r in s["rows"].items():
            lines.append(
                f"| {name} ({s['size']}, {s['codec']}) | {row} | {r['clips_per_s_per_core']:.2f} "
                f"| {_ratio(r['x_videomae'])} | {_ratio(r['x_videomae_v2'])} "
                f"| {r['cores_per_gpu']['B->B']:.0f} | {r['cores_per_gpu']['B->S']:.0f} |"
            )
    lines += storage_markdown(p)
    lines += [
        "",
        "Prepared files: size, PSNR against the source resized to the same size (4:2:0, area; "
        "every 5th frame), time to prepare (one process). `cabac` = the same without "
        "`tune=fastdecode` (`maskagain prepare --no-fast-decode`).",
        "",
        "| source | original MB | prepared MB | PSNR dB | cabac MB | cabac PSNR dB | prepare s |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, s in p["sources"].items():
        lines.append(
            f"| {n} | {s['bytes_original'] / 1e6:.2f} | {s['bytes_prepared'] / 1e6:.2f} "
            f"| {s['psnr_db']:.1f} | {s['bytes_prepared_cabac'] / 1e6:.2f} "
            f"| {s['psnr_db_cabac']:.1f} | {s['prepare_seconds']:.1f} |"
        )
    profiled = [(n, s) for n, s in p["sources"].items() if s["profile"]]
    if profiled:
        lines += [
            "",
            "Profile of `maskagain.data` per video (4 clips, same window; ms, share of the "
            "total; frames decoded before the first wanted frame / from it to the last one):",
            "",
            "| source | files | open + index | to first | between | RGB + resize | augment "
            "| collate + masks | decoded to first / between |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in profiled:
            for label, pr in s["profile"].items():
                ms, sh, fr = pr["ms_per_video"], pr["share"], pr["frames_decoded_per_video"]
                cells = " | ".join(
                    f"{ms[k]:.1f} ({100 * sh[k]:.0f}%)"
                    for k in (
                        "open_index",
                        "to_first",
                        "between",
                        "convert_resize",
                        "augment",
                        "collate_masks",
                    )
                )
                lines.append(
                    f"| {name} | {label} | {cells} "
                    f"| {fr['decoded_to_first']:.0f} / {fr['decoded_between']:.0f} |"
                )
    return "\n".join(lines) + "\n"


def storage_markdown(p: dict) -> list[str]:
    """The table of the rows that read shards or object storage (:mod:`benchmarks.data.remote`)
    against the local prepared-file row."""
    lines = [
        "",
        "Data kept elsewhere, against `ours_prepared_devcrop_r4` (the same prepared file on local "
        "disk, the workers only decode: the row where reading costs the largest share) in the "
        "same run: `ours_prepared_s3_devcrop_r4` = that file in a local S3 server (moto, its own "
        "process, loopback), read through ranged GETs of `data.read_ahead_mb` (4 MiB); "
        "`ours_shards_devcrop_r4` = its bytes as members of tar shards of 4 samples on local "
        "disk (`data.kind=shards`, one seek + read per sample); `ours_shards_s3_devcrop_r4` = "
        "those shards in the local S3 server (one ranged GET per sample). Requests and bytes "
        "are counted by the storage layer per decoded video (4 clips of one window); the "
        "window's share is the prepared file's bytes times the frames the window spans over "
        "the video's frames.",
        "",
        "| source | row | clips/s/core | x local files | clips per CPU-s | x local files (CPU) "
        "| requests/video | KB read/video | window's share KB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in p["sources"].items():
        for row in (LOCAL_ROW, *REMOTE_ROWS):
            if row not in s["rows"]:
                continue
            r, io = s["rows"][row], s["io"].get(row)
            reqs = f"{io['requests_per_video']:.2f}" if io and io["requests_per_video"] else "local"
            read = (
                f"{io['bytes_read_per_video'] / 1e3:.0f}"
                if io and io["bytes_read_per_video"]
                else "-"
            )
            share = f"{io['window_share_bytes'] / 1e3:.0f}" if io else "-"
            lines.append(
                f"| {name} | {row} | {r['clips_per_s_per_core']:.2f} "
                f"| {_ratio(r['x_local_prepared'])} | {r['clips_per_cpu_s']:.2f} "
                f"| {_ratio(r['x_local_prepared_cpu'])} | {reqs} | {read} | {share} |"
            )
    return lines
