"""List formats, datasets of every kind, repeated sampling, test views, bad-file replacement and
accounting, mask collation."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from _media import write_audio_only
from PIL import Image
from torch.utils.data import DataLoader

from maskagain.data import (
    BadFileTracker,
    DataConfig,
    ListFormatError,
    MaskCollator,
    TooManyBadFiles,
    VideoRecord,
    build_dataset,
    read_list,
    scan_class_folders,
)
from maskagain.data.synthetic import write_video


def frames_for(i: int, n: int = 12, size: int = 24) -> np.ndarray:
    """(n, size, size, 3) uint8 with a per-video brightness so videos are told apart."""
    out = np.zeros((n, size, size, 3), np.uint8)
    out[:] = (20 * i + np.arange(n)[:, None, None, None] * 3) % 256
    return out


def cfg(**kw) -> DataConfig:
    base = dict(input_size=16, short_side=16, num_frames=4, sampling_rate=2, num_workers=0)
    return DataConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def video_root(tmp_path_factory) -> Path:
    """root/train/<class>/v.mp4 for 2 classes x 3 videos, and root/val/<class>/v.mp4."""
    root = tmp_path_factory.mktemp("folder")
    k = 0
    for split, per_class in (("train", 3), ("val", 1)):
        for cls in ("jump", "run"):
            for j in range(per_class):
                (root / split / cls).mkdir(parents=True, exist_ok=True)
                write_video(root / split / cls / f"v{j}.mp4", frames_for(k))
                k += 1
    return root


# ----------------------------------------------------------------------------- list formats
def test_list_space_comma_root_and_comments(tmp_path):
    (tmp_path / "a.txt").write_text("# comment\nvid/a b.mp4 3\n\nvid/c.mp4 0\n/abs/d.mp4 1\n")
    (tmp_path / "b.csv").write_text("vid/a b.mp4,3\nvid/c.mp4, 0\n")
    a = read_list(tmp_path / "a.txt", root="/data")
    assert a == [
        VideoRecord("/data/vid/a b.mp4", 3),
        VideoRecord("/data/vid/c.mp4", 0),
        VideoRecord("/abs/d.mp4", 1),
    ]
    b = read_list(tmp_path / "b.csv", root="/data")
    assert b == a[:2]
    assert read_list(tmp_path / "b.csv", separator="comma")[1] == VideoRecord("vid/c.mp4", 0)


def test_frames_list_format(tmp_path):
    (tmp_path / "f.txt").write_text("frames/x 48 7\nframes/y 20 0\n")
    assert read_list(tmp_path / "f.txt", root="r", frames=True) == [
        VideoRecord("r/frames/x", 7, 48),
        VideoRecord("r/frames/y", 0, 20),
    ]


@pytest.mark.parametrize(
    "lines,frames,bad_line",
    [
        ("a.mp4 1\nb.mp4 cat\n", False, 2),
        ("a.mp4 1\nb.mp4\n", False, 2),
        ("a.mp4 1\n\nc.mp4 -1\n", False, 3),
        ("x 10 1\ny 2\n", True, 2),
        ("x 0 1\n", True, 1),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, lines, frames, bad_line):
    path = tmp_path / "list.txt"
    path.write_text(lines)
    with pytest.raises(ListFormatError, match=f"{path}:{bad_line}:"):
        read_list(path, frames=frames)


def test_empty_list_is_an_error(tmp_path):
    (tmp_path / "e.txt").write_text("# nothing\n")
    with pytest.raises(ListFormatError, match="no entries"):
        read_list(tmp_path / "e.txt")


def test_class_folders_generate_and_reuse_the_saved_index(video_root, tmp_path):
    index = tmp_path / "classes.txt"
    records, names = scan_class_folders(video_root / "train", index)
    assert names == ["jump", "run"] and index.read_text() == "jump\nrun\n"
    assert len(records) == 6 and {r.label for r in records} == {0, 1}
    index.write_text("run\njump\nswim\n")  # a saved index wins over folder order
    records, names = scan_class_folders(video_root / "train", index)
    assert names == ["run", "jump", "swim"]
    assert all((r.label == 0) == ("/run/" in r.path) for r in records)


# ----------------------------------------------------------------------------- datasets
def test_folder_dataset_splits_and_class_index(video_root):
    c = cfg(kind="folder", root=str(video_root))
    train = build_dataset(c, "train", "finetune")
    val = build_dataset(c, "val", "eval")
    assert (len(train), len(val)) == (6, 2)
    assert train.class_names == val.class_names == ["jump", "run"]
    assert not (video_root / "classes.txt").exists()  # nothing is written into the data
    item = val[1]
    assert item["video"].shape == (3, 4, 16, 16) and item["label"] == 1 and item["skipped"] == []


def test_list_dataset_repeated_sampling_and_views(video_root, tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("train/jump/v0.mp4 0\ntrain/run/v1.mp4 1\n")
    c = cfg(root=str(video_root), train_list=str(lst), test_list=str(lst), num_sample=3)
    train = build_dataset(c, "train", "pretrain")
    item = train[1]
    assert item["video"].shape == (3, 3, 4, 16, 16) and item["label"] == 1 and item["index"] == 1
    test = build_dataset(c, "test", "eval")
    assert len(test) == 2 * 5 * 3
    views = [test[i] for i in range(15, 30)]
    assert [v["view"] for v in views] == list(range(15))
    assert all(v["index"] == 1 and v["video"].shape == (3, 4, 16, 16) for v in views)
    temporal = [views[k * 3 + 1]["video"][:, 0].mean() for k in range(5)]  # centre crops
    assert temporal == sorted(temporal) and temporal[0] < temporal[-1]  # later clips, brighter


def test_frames_dataset_reads_jpeg_folders(tmp_path):
    for v, n in (("a", 10), ("b", 3)):
        (tmp_path / v).mkdir()
        for i in range(n):
            image = np.full((20, 28, 3), 10 * i + (100 if v == "b" else 0), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / v / f"img_{i + 1:05d}.jpg", quality=95)
    lst = tmp_path / "f.txt"
    lst.write_text("a 10 0\nb 3 1\n")
    c = cfg(
        kind="frames",
        root=str(tmp_path),
        train_list=str(lst),
        val_list=str(lst),
        sampling="segment",
    )
    val = build_dataset(c, "val", "eval")
    a, b = val[0], val[1]
    assert a["video"].shape == (3, 4, 16, 16) and b["label"] == 1
    means = a["video"][0].mean(dim=(1, 2))
    assert torch.all(means[1:] > means[:-1])  # one frame per segment, in order
    assert b["video"][:, 0].mean() > a["video"][:, -1].mean()


# ----------------------------------------------------------------------------- bad files
def make_bad_list(video_root: Path, tmp_path: Path) -> Path:
    good = sorted((video_root / "train").rglob("*.mp4"))
    bad = {
        "missing.mp4": None,
        "empty.mp4": b"",
        "random.mp4": np.random.default_rng(0).bytes(3000),
        "text.mp4": b"hello\n" * 50,
        "cut.mp4": good[0].read_bytes()[:400],
    }
    for name, data in bad.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    write_audio_only(tmp_path / "audio.mp4")
    bad["audio.mp4"] = None
    lines = [f"{p} {i % 2}" for i, p in enumerate(good)] + [f"{tmp_path / n} 0" for n in bad]
    lst = tmp_path / "mixed.txt"
    lst.write_text("\n".join(lines) + "\n")
    return lst


def test_bad_files_are_replaced_deterministically_and_reported(video_root, tmp_path):
    lst = make_bad_list(video_root, tmp_path)
    c = cfg(train_list=str(lst), val_list=str(lst), seed=3)
    ds = build_dataset(c, "val", "eval")
    items = [ds[i] for i in range(len(ds))]
    for item in items[6:]:  # every bad entry came back as a good video, with its reason
        assert item["skipped"] and item["index"] < 6
        path, reason = item["skipped"][0]
        assert path.startswith(str(tmp_path)) and reason
    assert all(not item["skipped"] for item in items[:6])
    again = [ds[i] for i in range(6, 12)]
    assert [a["index"] for a in again] == [b["index"] for b in items[6:]]
    assert {Path(i["skipped"][0][0]).name for i in items[6:]} == {
        "missing.mp4",
        "empty.mp4",
        "random.mp4",
        "text.mp4",
        "cut.mp4",
        "audio.mp4",
    }


def test_tracker_counts_and_stops_past_the_fraction(video_root, tmp_path):
    lst = make_bad_list(video_root, tmp_path)
    c = cfg(train_list=str(lst), max_bad_fraction=0.1)
    loader = DataLoader(
        build_dataset(c, "train", "finetune"), batch_size=4, collate_fn=MaskCollator()
    )
    tracker = BadFileTracker(max_fraction=0.1, min_samples=8)
    with pytest.raises(TooManyBadFiles) as err:
        for _ in range(3):
            for batch in loader:
                tracker.update(batch)
    message = str(err.value)
    assert "max_bad_fraction" in message and ".mp4" in message
    summary = tracker.summary()
    assert summary["bad_files"] >= 1 and summary["bad_fraction"] > 0.1
    assert summary["first_bad"] and summary["first_bad"][0]["reason"]


def test_grayscale_and_odd_sized_videos_load(tmp_path):
    odd = tmp_path / "odd.mkv"
    with av.open(str(odd), "w") as c:  # 33x47 grayscale (FFV1), neither needs replacing
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 47, 33, "gray"
        for i in range(10):
            image = np.full((33, 47), 20 * i, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(image, format="gray")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    lst = tmp_path / "l.txt"
    lst.write_text(f"{odd} 0\n")
    item = build_dataset(cfg(val_list=str(lst)), "val", "eval")[0]
    assert item["skipped"] == [] and item["video"].shape == (3, 4, 16, 16)


def test_tracker_tolerates_a_few_bad_files():
    tracker = BadFileTracker(max_fraction=0.1, min_samples=10)
    for k in range(20):
        tracker.update({"label": torch.zeros(4), "skipped": [("x.mp4", "empty")] if k == 3 else []})
    assert tracker.summary()["bad_files"] == 1 and tracker.fraction == pytest.approx(1 / 81)


def test_all_bad_raises_a_clear_error(tmp_path):
    lst = tmp_path / "bad.txt"
    lst.write_text("nope1.mp4 0\nnope2.mp4 1\n")
    ds = build_dataset(
        cfg(root=str(tmp_path), train_list=str(lst), max_replacements=3), "train", "finetune"
    )
    with pytest.raises(TooManyBadFiles, match="bad videos in a row"):
        ds[0]


def test_missing_list_names_the_field():
    with pytest.raises(ValueError, match="val_list"):
        build_dataset(cfg(train_list="x.txt"), "val", "eval")


# ----------------------------------------------------------------------------- collation
def test_mask_collator_flattens_repeats_and_seeds_masks_by_clip():
    items = [
        {"video": torch.zeros(2, 3, 4, 16, 16), "label": 5, "index": 0, "skipped": []},
        {"video": torch.ones(2, 3, 4, 16, 16), "label": 7, "index": 1, "skipped": [("p", "r")]},
    ]
    collate = MaskCollator("tube", 0.75, (2, 4, 4), seed=1)
    first = collate(items)
    assert first["video"].shape == (4, 3, 4, 16, 16)
    assert first["label"].tolist() == [5, 5, 7, 7] and first["index"].tolist() == [0, 0, 1, 1]
    assert first["mask"].shape == (4, 32) and first["mask"].dtype == torch.bool
    assert first["mask"].sum(1).tolist() == [24] * 4  # tube: 12 of 16 spatial x 2 frames
    assert first["skipped"] == [("p", "r")]
    # a clip's mask depends on (seed, epoch, index, repeat) only: not on the call count, the
    # collator instance or the other clips of its batch
    assert torch.equal(collate(items)["mask"], first["mask"])
    alone = MaskCollator("tube", 0.75, (2, 4, 4), seed=1)(items[1:])
    assert torch.equal(alone["mask"], first["mask"][2:])
    assert not torch.equal(first["mask"][0], first["mask"][1])  # repeats differ
    collate.set_epoch(1)
    assert not torch.equal(collate(items)["mask"], first["mask"])  # a new epoch, new masks
    other_seed = MaskCollator("tube", 0.75, (2, 4, 4), seed=2)(items)
    assert not torch.equal(other_seed["mask"], first["mask"])
    assert "mask" not in MaskCollator()(items)


def test_mask_collator_same_masks_in_workers_and_in_process():
    ds = [
        {"video": torch.zeros(3, 4, 8, 8), "label": 0, "index": i, "skipped": []} for i in range(8)
    ]
    collate = MaskCollator("random", 0.5, (2, 4, 4), seed=0)
    in_process = [b["mask"] for b in DataLoader(ds, batch_size=4, collate_fn=collate)]
    workers = [b["mask"] for b in DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)]
    assert len(workers) == 2 and not torch.equal(workers[0], workers[1])
    assert all(torch.equal(x, y) for x, y in zip(in_process, workers))


def test_dataloader_workers_with_masks(video_root):
    c = cfg(kind="folder", root=str(video_root), num_sample=2)
    loader = DataLoader(
        build_dataset(c, "train", "pretrain"),
        batch_size=3,
        num_workers=2,
        collate_fn=MaskCollator("tube", 0.5, (2, 2, 2), seed=0),
    )
    batches = list(loader)
    assert [b["video"].shape for b in batches] == [(6, 3, 4, 16, 16)] * 2
    assert all(b["mask"].shape == (6, 8) and b["label"].shape == (6,) for b in batches)


def test_unwritable_root_still_gives_one_class_index(video_root, tmp_path, monkeypatch):
    import maskagain.data.lists as lists

    def refuse(names, path):
        raise PermissionError(f"read-only: {path}")

    monkeypatch.setattr(lists, "write_class_index", refuse)
    c = cfg(kind="folder", root=str(video_root), class_index=str(tmp_path / "none" / "c.txt"))
    train, val = build_dataset(c, "train", "finetune"), build_dataset(c, "val", "eval")
    assert train.class_names == val.class_names == ["jump", "run"]
