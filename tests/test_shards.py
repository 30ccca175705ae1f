"""Sequential shards: ``maskagain prepare --shards`` writes WebDataset tars and an index, resumes
after SIGKILL with the same result; ``data.kind=shards`` gives the file loader's items in a
shard-aware order, and training from shards resumes exactly and holds DDP equivalence."""

from __future__ import annotations

import csv
import itertools
import json
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from _reliability import (
    ENV,
    ROOT,
    assert_same_training_state,
    final_checkpoint,
    logged_steps,
    run,
    start,
    teacher_path,
    wait_until,
)
from torch.utils.data import DataLoader

from maskagain.cli.main import main
from maskagain.data import DataConfig, MaskCollator, VideoListDataset, VideoRecord
from maskagain.data.shard_dataset import ShardDataset
from maskagain.data.shard_writer import parse_size
from maskagain.data.shards import ShardIndex, shard_order
from maskagain.data.storage import Storage
from maskagain.engine.feed import SeededItems
from maskagain.engine.sampler import ResumableSampler

VIDEOS = 16
PREPARE = ("--shards", "200KB", "--short-side", "96", "--keyint", "4")


def write_noise(path: Path, seed: int, frames: int = 12, size: tuple[int, int] = (96, 144)) -> Path:
    """A real H.264 clip of coarse moving noise (it compresses poorly: ~45 KB prepared)."""
    rng = np.random.default_rng(seed)
    h, w = size
    base = rng.integers(0, 256, (h // 2, w // 2 + frames, 3), dtype=np.uint8).repeat(2, 0)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "10"}
        for t in range(frames):
            img = np.ascontiguousarray(base[:, t : t + w // 2].repeat(2, 1))
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode(None))
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """``train.txt``: 16 labelled videos and one broken file among them."""
    root = tmp_path_factory.mktemp("src")
    lines = []
    for k in range(VIDEOS):
        write_noise(root / f"v{k:02d}.mp4", seed=k)
        lines.append(f"v{k:02d}.mp4 {k % 4}\n")
        if k == 5:
            (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
            lines.append("broken.mp4 1\n")
    (root / "train.txt").write_text("".join(lines))
    return root


def prepare_argv(source: Path, out: Path) -> list[str]:
    return ["--list", str(source / "train.txt"), "--root", str(source), "--out", str(out), *PREPARE]


@pytest.fixture(scope="module")
def shards(source, tmp_path_factory) -> Path:
    """The uninterrupted ``prepare --shards 200KB`` of ``source``: ``OUT/train/index.json``."""
    out = tmp_path_factory.mktemp("shards")
    assert main(["prepare", *prepare_argv(source, out), "--workers", "2"]) == 0
    return out / "train" / "index.json"


def tiny_data(**changes) -> DataConfig:
    values = dict(kind="shards", num_frames=4, sampling_rate=2, input_size=32, short_side=32,
                  num_workers=0, test_clips=2, test_crops=1)  # fmt: skip
    cfg = DataConfig(**{**values, **changes})
    cfg.validate()
    return cfg


def test_prepare_shards_writes_tars_and_an_index(source, shards):
    index = ShardIndex.load(str(shards))
    assert [s.key for s in index.samples] == [f"{k:08d}" for k in range(17) if k != 6]
    assert [s.label for s in index.samples] == [k % 4 for k in range(VIDEOS)]
    assert index.failed == [(str(source / "broken.mp4"), index.failed[0][1])]
    assert len(index.shards) >= 3
    sizes = [sum(s.size for s in index.samples if s.shard == n) for n in range(len(index.shards))]
    assert min(sizes[:-1]) >= parse_size("200KB") and sizes[-1] > 0
    for n, name in enumerate(index.shards):
        with tarfile.open(shards.parent / name) as tar:  # a WebDataset tar: key.mp4 + key.json
            members = tar.getmembers()
            samples = [s for s in index.samples if s.shard == n]
            assert [m.name for m in members] == [
                f"{s.key}.{ext}" for s in samples for ext in ("mp4", "json")
            ]
            for s in samples:
                meta = json.loads(tar.extractfile(f"{s.key}.json").read())
                assert meta == {"key": s.key, "label": s.label, "source": s.source}
                assert tar.extractfile(f"{s.key}.mp4").read() == index.read(s)


@pytest.mark.subprocess
def test_prepare_shards_resumes_after_sigkill(source, shards, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "maskagain", "prepare", *prepare_argv(source, out)]
    proc = start([*cmd, "--workers", "1"])
    wait_until(proc, lambda: (out / "train" / "shard-000001.json").exists())
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (out / "train" / "index.json").exists(), "finished before it was killed"
    proc = run([*cmd, "--workers", "1"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "already done" in proc.stdout and " 0 already done" not in proc.stdout
    resumed = json.loads((out / "train" / "index.json").read_text())
    assert resumed == json.loads(shards.read_text())
    for name in resumed["shards"]:  # byte for byte the uninterrupted run's shards
        assert (out / "train" / name).read_bytes() == (shards.parent / name).read_bytes()
    assert not list((out / "train").glob(".tmp-*"))


def test_bad_shard_size_fails_before_any_work(source, tmp_path, capsys):
    argv = ["prepare", "--list", str(source / "train.txt"), "--out", str(tmp_path / "o")]
    assert main([*argv, "--shards", "lots"]) == 2
    assert "--shards" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_shard_order_keeps_a_window_of_shards_together():
    shard_of = np.repeat(np.arange(6), 5)  # 6 shards of 5 samples
    order = shard_order(shard_of, seed=3, epoch=0, window=2)
    assert sorted(order) == list(range(30)) and order == shard_order(shard_of, 3, 0, 2)
    assert order != shard_order(shard_of, 3, 1, 2)
    for first in range(0, 30, 10):  # each block of 10 reads two whole shards
        assert len({int(shard_of[i]) for i in order[first : first + 10]}) == 2


def test_items_equal_the_prepared_files(shards, tmp_path):
    """A shard sample gives the item the same mp4 as a file gives: clips, repeated sampling and
    crops are the file loader's, seeded per item."""
    index = ShardIndex.load(str(shards))
    records = []
    for s in index.samples:
        (tmp_path / f"{s.key}.mp4").write_bytes(index.read(s))
        records.append(VideoRecord(str(tmp_path / f"{s.key}.mp4"), s.label))
    cfg = tiny_data(num_sample=2)
    from_shards = SeededItems(ShardDataset(index, cfg, "train", "pretrain"), seed=1)
    from_files = SeededItems(VideoListDataset(records, cfg, "train", "pretrain"), seed=1)
    for item in (0, 7, 15):
        a, b = from_shards[item], from_files[item]
        assert a["video"].shape == (2, 3, 4, 32, 32)
        assert torch.equal(a["video"], b["video"]) and a["label"] == b["label"]
    sampler = ResumableSampler(16, seed=1, order=from_shards.epoch_order)
    assert sorted(sampler.order()) == list(range(16))


def test_a_sample_cut_short_is_a_bad_file(shards, tmp_path):
    """A truncated shard: its samples are replaced and reported like unreadable files."""
    index = ShardIndex.load(str(shards))
    folder = tmp_path / "cut"
    folder.mkdir()
    for name in index.shards:
        data = (shards.parent / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2] if name == index.shards[0] else data)
    (folder / "index.json").write_text(shards.read_text())
    ds = ShardDataset(ShardIndex.load(str(folder)), tiny_data(), "train", "pretrain")
    last = max(i for i, s in enumerate(ds.index.samples) if s.shard == 0)
    item = ds[last]
    assert item["skipped"] and item["skipped"][0][0].endswith(f"shard-000000.tar#{last:08d}")


# ----------------------------------------------------------------------------- training
TRAIN = ("data.kind=shards", "data.sampling_rate=2", "engine.batch_size=2",
         "engine.ckpt_every_steps=2", "student.drop_path_rate=0")  # fmt: skip


def distill_cmd(run_dir: Path, teacher: Path, index: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "maskagain", "distill", "--config", "configs/tiny/distill.yaml",
        "--out", str(run_dir), f"teacher.source={teacher}", f"data.train_list={index}", *TRAIN,
        *extra,
    ]  # fmt: skip


@pytest.mark.subprocess
def test_distill_from_shards_resumes_bit_exactly_after_sigkill(shards, tmp_path, tmp_path_factory):
    """16 samples, 2 per step: 8 steps, one epoch; killed past step 4."""
    teacher = teacher_path(tmp_path_factory)
    reference = tmp_path / "reference"
    proc = run(distill_cmd(reference, teacher, shards, "schedule.epochs=1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    killed = tmp_path / "killed"
    proc = start(distill_cmd(killed, teacher, shards, "schedule.epochs=1"))
    wait_until(proc, lambda: max(logged_steps(killed), default=0) >= 5)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert 4 <= final_checkpoint(killed)["state"]["step"] < 8
    proc = run(distill_cmd(killed, teacher, shards, "schedule.epochs=1", "--resume", "auto"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_training_state(final_checkpoint(killed), final_checkpoint(reference))
    losses = [json.loads(x)["loss"] for x in (reference / "log.jsonl").read_text().splitlines()
              if '"loss"' in x]  # fmt: skip
    resumed = [json.loads(x)["loss"] for x in (killed / "log.jsonl").read_text().splitlines()
               if '"loss"' in x]  # fmt: skip
    assert len(losses) == 8 and resumed[-4:] == losses[-4:]


@pytest.mark.torchrun
def test_distill_from_shards_ddp_matches_single_process_big_batch(
    shards, tmp_path, tmp_path_factory
):
    from test_reliability_ddp import assert_close_runs, pair

    teacher = teacher_path(tmp_path_factory)
    args = [
        "distill", "--config", "configs/tiny/distill.yaml", f"teacher.source={teacher}",
        f"data.train_list={shards}", *TRAIN, "schedule.epochs=1", "teacher.precision=fp32",
        "objective.lam=0", "data.num_sample=2", "engine.max_steps_per_epoch=3",
    ]  # fmt: skip
    single, ddp = pair(tmp_path, [a for a in args if a != "engine.batch_size=2"], per_rank=2)
    assert_close_runs(single, ddp, ("loss", "global", "local", "hint"), steps=3)


# ----------------------------------------------------------------------------- evaluate, predict
@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Class-folder videos prepared twice, as files and as shards (the same encoded bytes), and
    a nano classifier's run directory."""
    from tests._classifier_run import DATA, make_run, write_videos

    videos = write_videos(tmp_path_factory.mktemp("videos"))
    (videos / "test.txt").unlink()  # a plain class-folder tree
    files, shards = tmp_path_factory.mktemp("files"), tmp_path_factory.mktemp("labelled_shards")
    opts = ["--short-side", "48", "--workers", "1"]
    assert main(["prepare", "--folder", str(videos), "--out", str(files), *opts]) == 0
    argv = ["prepare", "--folder", str(videos), "--out", str(shards), "--shards", "50KB", *opts]
    assert main(argv) == 0
    run_dir = make_run(tmp_path_factory.mktemp("ft"), DATA)
    return files, shards / "all" / "index.json", run_dir


def test_evaluate_reads_shards(labelled, tmp_path):
    files, index, run_dir = labelled
    runs = ("files", "shards")
    common = ["evaluate", "--checkpoint", str(run_dir), "precision=fp32", "device=cpu",
              "progress=false"]  # fmt: skip
    on_files = [f"data.root={files}", f"data.test_list={files / 'all.txt'}"]
    assert main([*common, "--out", str(tmp_path / "files"), *on_files]) == 0
    on_shards = ["data.kind=shards", f"data.test_list={index}"]
    assert main([*common, "--out", str(tmp_path / "shards"), *on_shards]) == 0
    a, b = (list(csv.DictReader((tmp_path / d / "predictions.csv").open())) for d in runs)
    assert len(a) == len(b) == 6
    for row_a, row_b in zip(a, b):
        assert "#" in row_b["path"]  # shard#key
        del row_a["path"], row_b["path"]
        assert row_a == row_b


def test_predict_reads_shards(labelled, tmp_path):
    files, index, run_dir = labelled
    rows = {}
    for name, inputs in (("files", [str(files / "all.txt")]), ("shards", [str(index)])):
        out = tmp_path / f"{name}.jsonl"
        argv = ["predict", "--checkpoint", str(run_dir), "--no-progress", "--out", str(out)]
        assert main([*argv, *inputs]) == 0
        rows[name] = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows["shards"]) == len(rows["files"]) == 6
    assert all("shard-" in r["path"] and "#" in r["path"] for r in rows["shards"])
    for a, b in zip(rows["files"], rows["shards"]):
        assert a["labels"] == b["labels"] and a["scores"] == pytest.approx(b["scores"], abs=1e-6)


# ----------------------------------------------------------------------------- object storage
@pytest.mark.subprocess
def test_prepare_shards_to_s3_resumes_after_sigkill(source, shards, s3_server):
    """Shards written straight to a bucket (moto's S3 server): killed after two shards, rerun,
    the same objects as the local uninterrupted run."""
    out = f"s3://{s3_server.bucket('shards')}/k400"
    cmd = [sys.executable, "-m", "maskagain", "prepare", *prepare_argv(source, out), "--workers", "1"]  # fmt: skip
    storage = Storage()
    env = {**ENV, **s3_server.env}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)  # fmt: skip
    wait_until(proc, lambda: storage.exists(f"{out}/train/shard-000001.json"), timeout=180)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not storage.exists(f"{out}/train/index.json"), "finished before it was killed"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert " 0 already done" not in proc.stdout
    index = json.loads(storage.read_bytes(f"{out}/train/index.json"))
    assert index == json.loads(shards.read_text())
    for name in index["shards"]:
        assert storage.read_bytes(f"{out}/train/{name}") == (shards.parent / name).read_bytes()


def test_s3_shards_give_the_batches_of_local_shards(shards, s3_server):
    """The same shard set, uploaded to a bucket: the same seeded order and the same batches
    (repeated sampling included), each sample one ranged GET; in DataLoader workers too."""
    url = s3_server.upload(shards.parent, s3_server.bucket("train"), "k400/train")
    cfg = tiny_data(num_sample=2)
    batches = {}
    runs = (("local", str(shards), 0), ("s3", f"{url}/index.json", 0),
            ("s3_workers", f"{url}/index.json", 2))  # fmt: skip
    for name, index, workers in runs:
        ds = ShardDataset(ShardIndex.load(index), cfg, "train", "pretrain")
        sampler = ResumableSampler(len(ds), seed=5, order=ds.epoch_order)
        sampler.set_epoch(1)
        loader = DataLoader(SeededItems(ds, 5), batch_size=4, sampler=sampler,
                            num_workers=workers, collate_fn=MaskCollator("tube", 0.5, (2, 4, 4), 5))  # fmt: skip
        batches[name] = list(itertools.islice(loader, 2))
        if name == "s3":
            assert ds.storage.stats.requests == 8 and ds.storage.stats.failures == 0
    for other in ("s3", "s3_workers"):
        for a, b in zip(batches["local"], batches[other]):
            assert a.keys() == b.keys()
            for key in a:
                if isinstance(a[key], torch.Tensor):
                    assert torch.equal(a[key], b[key]), (other, key)


def test_webdataset_reads_the_shards(shards):
    """The layout is WebDataset's: its reader sees every sample's key, mp4 and json members."""
    wds = pytest.importorskip("webdataset")
    index = ShardIndex.load(str(shards))
    urls = [str(shards.parent / name) for name in index.shards]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert [s["__key__"] for s in samples] == [s.key for s in index.samples]
    for got, want in zip(samples, index.samples):
        assert got["mp4"] == index.read(want)
        assert json.loads(got["json"])["label"] == want.label


def test_a_split_without_its_list_is_read_from_root(shards):
    from maskagain.data import build_dataset

    ds = build_dataset(tiny_data(root=str(shards.parent.parent)), "train", "pretrain")
    assert isinstance(ds, ShardDataset) and ds.num_videos == VIDEOS
    with pytest.raises(ValueError, match="shard index"):
        build_dataset(tiny_data(root=str(shards.parent.parent)), "val", "eval")  # no val/
