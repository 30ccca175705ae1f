"""The synthetic motion dataset: determinism, fresh epochs, the files + lists it writes, and that
its label lives in the motion: a single-frame probe stays near chance, a motion probe does not."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.data import linear_probe, motion_features
from maskagain.cli.main import main
from maskagain.data import (
    DataConfig,
    SyntheticSpec,
    SyntheticVideoDataset,
    build_dataset,
    make_clip,
    read_clip,
    read_list,
)
from maskagain.data.synthetic import MOTIONS


def test_clips_are_deterministic_and_vary_with_seed_index_epoch():
    spec = SyntheticSpec(size=32, frames=8)
    a, la = make_clip(spec, 0, "train", 5)
    b, lb = make_clip(spec, 0, "train", 5)
    assert a.shape == (8, 32, 32, 3) and a.dtype == np.uint8 and la == lb == 5
    np.testing.assert_array_equal(a, b)
    for other in (make_clip(spec, 1, "train", 5), make_clip(spec, 0, "train", 5, epoch=1)):
        assert not np.array_equal(a, other[0])
    assert not np.array_equal(a, make_clip(spec, 0, "val", 5)[0])


def test_rendering_only_some_frames_matches_the_full_clip():
    from maskagain.data.synthetic import clip_rng, render_clip

    spec = SyntheticSpec(size=32, frames=12, distractor=0.0)
    full = render_clip(spec, 4, clip_rng(0, "train", 3))
    part = render_clip(spec, 4, clip_rng(0, "train", 3), np.array([2, 7, 11]))
    np.testing.assert_array_equal(part, full[[2, 7, 11]])


def test_on_the_fly_dataset_items_and_fresh_epochs():
    c = DataConfig(
        kind="synthetic",
        num_frames=4,
        sampling_rate=2,
        input_size=32,
        short_side=32,
        synthetic_size=32,
        synthetic_train_clips=16,
        synthetic_val_clips=8,
        synthetic_classes=10,
    )
    train = build_dataset(c, "train", "pretrain")
    assert isinstance(train, SyntheticVideoDataset) and len(train) == 16
    assert train.class_names == list(MOTIONS) and train.num_classes == 10
    item = train[3]
    assert item["video"].shape == (3, 4, 32, 32) and item["label"] == 3 and item["skipped"] == []
    val = build_dataset(c, "val", "eval")
    v0 = val[0]["video"]
    val.set_epoch(5)  # validation never changes
    np.testing.assert_array_equal(val[0]["video"].numpy(), v0.numpy())
    e0 = build_dataset(c, "train", "eval")[0]["video"]
    moved = build_dataset(c, "train", "eval")
    moved.set_epoch(1)
    assert not np.array_equal(moved[0]["video"].numpy(), e0.numpy())  # fresh clips each epoch


def test_distractor_strength_changes_the_clips():
    calm = make_clip(SyntheticSpec(size=32, frames=4, distractor=0.0), 0, "train", 1)[0]
    busy = make_clip(SyntheticSpec(size=32, frames=4, distractor=1.0), 0, "train", 1)[0]
    rough = [np.abs(np.diff(c.astype(float), axis=2)).mean() for c in (calm, busy)]
    assert rough[1] > 2 * rough[0]


def test_make_synthetic_cli_writes_h264_and_lists(tmp_path, capsys):
    out = tmp_path / "syn"
    argv = ["make-synthetic", "--out", str(out), "--train", "10", "--val", "4"]
    assert main(argv + ["--size", "32", "--frames", "8", "--workers", "1"]) == 0
    assert "train" in capsys.readouterr().out
    records = read_list(out / "train.txt", root=str(out))
    assert len(records) == 10 and [r.label for r in records[:8]] == list(range(8))
    assert (out / "classes.txt").read_text().split() == list(MOTIONS[:8])
    clip = read_clip(records[2].path, list(range(8)))
    assert clip.shape == (8, 32, 32, 3)
    expected, _ = make_clip(SyntheticSpec(size=32, frames=8), 0, "train", 2)
    assert np.abs(clip.numpy().astype(int) - expected).mean() < 6  # H.264 of the same clip
    c = DataConfig(
        root=str(out),
        train_list=str(out / "train.txt"),
        num_frames=4,
        sampling_rate=2,
        input_size=32,
        short_side=32,
    )
    assert build_dataset(c, "train", "pretrain")[0]["video"].shape == (3, 4, 32, 32)


# ----------------------------------------------------------------------------- label evidence
@pytest.fixture(scope="module")
def probe_data():
    spec = SyntheticSpec(size=32, frames=8)  # default distractor strength

    def split(name: str, n: int):
        clips, labels = zip(*(make_clip(spec, 0, name, i) for i in range(n)))
        return np.stack(clips).astype(np.float32) / 255, np.array(labels)

    return split("train", 400), split("val", 240)


@pytest.mark.slow
def test_a_single_frame_stays_near_chance(probe_data):
    (xtr, ytr), (xte, yte) = probe_data
    rng = np.random.default_rng(0)

    def one_frame(x):
        return x[np.arange(len(x)), rng.integers(0, x.shape[1], len(x))].reshape(len(x), -1)

    acc = linear_probe(one_frame(xtr), ytr, one_frame(xte), yte, 8)
    assert acc < 0.25, acc  # chance is 0.125


@pytest.mark.slow
def test_the_motion_tells_the_class(probe_data):
    (xtr, ytr), (xte, yte) = probe_data
    acc = linear_probe(motion_features(xtr), ytr, motion_features(xte), yte, 8)
    assert acc > 0.6, acc
