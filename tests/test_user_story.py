"""A user's own videos, end to end through the console script: class folders of real H.264 mp4s
at three frame sizes, distilled from the shipped teacher, fine-tuned (architecture from the
distilled run), evaluated, exported to Hugging Face and compared in ``transformers``, inspected
and visualised; every command runs from a working directory other than the data's, and the run
directories keep working when moved with the data."""

from __future__ import annotations

import csv
import ctypes.util
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from _user_videos import CLASSES, write_class_folders

from maskagain.cli.main import main
from maskagain.data import DataConfig, build_dataset
from maskagain.models.loading import load_encoder
from maskagain.recipes.demo.settings import TEACHER_WEIGHTS
from maskagain.recipes.sources import warn_resolution

pytestmark = pytest.mark.e2e

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny"
# the shipped teacher's clip: 8 frames of 32 px; 24-frame videos give 8 frames at rate 2
CLIP = ["data.kind=folder", "data.num_frames=8", "data.sampling_rate=2"]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def story(tmp_path_factory) -> dict:
    """Distil and fine-tune on ``base/my videos`` from ``base/work``; returns the paths."""
    base = tmp_path_factory.mktemp("story")
    data = write_class_folders(base / "my videos", per_class=4, frames=24)
    files = _files(data)
    work = base / "work"
    work.mkdir()
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    torch.set_num_threads(1)
    try:
        root = "data.root=../my videos"  # relative to the working directory
        assert (
            main(
                ["distill", "--config", str(TINY / "distill.yaml"), "--out", "runs/distill"]
                + [f"teacher.source={TEACHER_WEIGHTS}", root, "student.num_frames=8"]
                + ["student.name=vit_micro", "schedule.epochs=1", *CLIP]
            )
            == 0
        )
        assert (
            main(
                ["finetune", "--config", str(TINY / "finetune.yaml"), "--out", "runs/ft"]
                + ["init.source=runs/distill", root, "model.num_frames=8", *CLIP]
            )
            == 0
        )
    finally:
        mp.undo()
        torch.set_num_threads(2)
    return {"base": base, "data": data, "files": files, "runs": work / "runs"}


def test_nothing_is_written_into_the_data_folder(story):
    assert _files(story["data"]) == story["files"]


def test_finetune_run_is_self_contained_with_disjoint_splits(story):
    ft = story["runs"] / "ft"
    summary = json.loads((ft / "summary.json").read_text())
    splits = summary["splits"]
    assert (splits["train"]["videos"], splits["val"]["videos"], splits["test"]["videos"]) == (
        6,
        3,
        3,
    )
    assert splits["disjoint"] is True and "same_as" not in splits["test"]
    listing = json.loads((ft / "splits.json").read_text())
    assert listing["root"] == str(story["data"])
    every = listing["train"] + listing["val"] + listing["test"]
    assert sorted(every) == sorted(str(p) for p in story["data"].rglob("*.mp4"))
    assert (ft / "classes.txt").read_text().split() == list(CLASSES)
    assert summary["class_names"] == list(CLASSES)
    # the architecture is the distilled student's (vit_micro), not the config's vit_nano
    assert summary["model"] == {
        "name": "vit_micro",
        "embed_dim": 128,
        "depth": 4,
        "num_heads": 4,
        "patch_size": 8,
        "tubelet_size": 2,
        "num_frames": 8,
        "img_size": 32,
    }
    config = (ft / "config.yaml").read_text()
    assert f"root: {story['data']}" in config and "name: vit_micro" in config
    assert summary["test"]["top5"] is None  # 3 classes: top-5 would always be 100
    rows = list(csv.DictReader(open(ft / "test" / "predictions.csv")))
    assert sorted(r["path"] for r in rows) == sorted(listing["test"])
    assert {r["label_name"] for r in rows} == set(CLASSES)
    assert all(abs(sum(float(r[f"score_{c}"]) for c in CLASSES) - 1) < 1e-4 for r in rows)
    meta = load_encoder(ft / "model.safetensors")  # class names travel with the weights
    assert meta.num_classes == 3


def test_evaluate_export_inspect_from_elsewhere_and_after_a_move(
    story, tmp_path, monkeypatch, capsys
):
    ft = story["runs"] / "ft"
    ft_test = json.loads((ft / "summary.json").read_text())["test"]
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    try:
        assert main(["evaluate", "--checkpoint", str(ft), "--out", "eval"]) == 0
        ev = json.loads((tmp_path / "eval" / "summary.json").read_text())
        assert ev["top1"] == pytest.approx(ft_test["top1"])
        assert ev["videos"]["videos"] == 3 and ev["videos"]["training_run"] == {
            "in_train": 0,
            "in_val": 0,
        }
        # the run and the data on another machine: only data.root changes
        moved = tmp_path / "machine2"
        shutil.copytree(story["data"], moved / "videos")
        shutil.copytree(ft, moved / "ft")
        args = ["evaluate", "--checkpoint", str(moved / "ft"), "--out", "eval2"]
        assert main([*args, f"data.root={moved / 'videos'}"]) == 0
        ev2 = json.loads((tmp_path / "eval2" / "summary.json").read_text())
        assert ev2["top1"] == pytest.approx(ev["top1"])
        assert ev2["videos"]["training_run"]["in_train"] == 0
    finally:
        torch.set_num_threads(2)
    assert main(["export", "--checkpoint", str(ft), "--format", "hf", "--out", "hf"]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(3)] == list(CLASSES)
    capsys.readouterr()
    assert main(["inspect", "--json", str(ft)]) == 0
    head = json.loads(capsys.readouterr().out)["head"]
    assert head["class_names"] == list(CLASSES) and "metadata" in head["class_names_from"]


def test_transformers_gives_our_logits(story, tmp_path):
    transformers = pytest.importorskip("transformers")
    ft = story["runs"] / "ft"
    assert main(["export", "--checkpoint", str(ft), "--format", "hf", "--out", str(tmp_path)]) == 0
    hf = transformers.VideoMAEForVideoClassification.from_pretrained(tmp_path).eval()
    ours = load_encoder(ft / "model.safetensors").eval()
    clip = torch.randn(2, 3, 8, 32, 32)  # (B, C, T, H, W)
    with torch.no_grad():
        theirs = hf(pixel_values=clip.transpose(1, 2)).logits  # HF: (B, T, C, H, W)
        assert torch.allclose(theirs, ours(clip), atol=1e-4)


@pytest.mark.skipif(
    ctypes.util.find_library("avcodec") is None,
    reason="the system FFmpeg libraries torchcodec needs are missing (apt-get install ffmpeg)",
)
def test_transformers_video_pipeline_on_an_mp4(story, tmp_path):
    transformers = pytest.importorskip("transformers")
    ft = story["runs"] / "ft"
    assert main(["export", "--checkpoint", str(ft), "--format", "hf", "--out", str(tmp_path)]) == 0
    video = str(next((story["data"] / CLASSES[0]).glob("*.mp4")))
    pipe = transformers.pipeline("video-classification", model=str(tmp_path), device="cpu")
    got = pipe(video, top_k=3)
    inputs = pipe.video_processor(video, num_frames=8, do_sample_frames=True, return_tensors="pt")
    pixels = inputs["pixel_values"]  # (1, T, C, H, W), decoded by torchcodec
    assert tuple(pixels.shape) == (1, 8, 3, 32, 32)
    with torch.no_grad():
        probs = load_encoder(ft / "model.safetensors").eval()(pixels.transpose(1, 2)).softmax(-1)
    expected = {CLASSES[i]: float(p) for i, p in enumerate(probs[0])}
    assert {g["label"] for g in got} == set(CLASSES)
    for g in got:
        assert g["score"] == pytest.approx(expected[g["label"]], abs=1e-4)


def test_selections_of_the_student_on_a_720p_video(story, tmp_path):
    video = next(p for p in story["data"].rglob("*.mp4") if "v0" in p.name)
    out = tmp_path / "sel.png"
    args = ["visualize", "--encoder", str(story["runs"] / "distill"), "--video", str(video)]
    assert main([*args, "--out", str(out), "--sampling-rate", "2", "--k-global", "4"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_probe_of_the_distilled_student_from_elsewhere(story, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["probe", "--config", str(TINY / "probe.yaml"), "--out", "probe"]
    args += ["--encoder", str(story["runs"] / "distill"), f"data.root={story['data']}", *CLIP]
    assert main([*args, "probe.epochs=5"]) == 0
    summary = json.loads((tmp_path / "probe" / "summary.json").read_text())
    assert (summary["num_train"], summary["num_val"]) == (6, 3)


def test_far_resolution_is_one_warning_naming_prepare(story, caplog):
    data = DataConfig(kind="folder", root=str(story["data"]), input_size=32, short_side=36)
    data.validate()
    dataset = build_dataset(data, "train", "finetune")
    with caplog.at_level(logging.WARNING, logger="maskagain"):
        warn_resolution(dataset, data)
    lines = [r.getMessage() for r in caplog.records if "short side" in r.getMessage()]
    assert len(lines) == 1
    assert "1280x720" in lines[0] and "36 px" in lines[0] and "32-px model" in lines[0]
    assert "maskagain prepare --folder" in lines[0]
    caplog.clear()
    fits = DataConfig(kind="folder", root=str(story["data"]), input_size=224, short_side=256)
    fits.validate()
    warn_resolution(build_dataset(fits, "train", "finetune"), fits)
    assert "short side" not in caplog.text


def test_a_test_split_that_is_the_val_split_is_said_in_the_summary(story, tmp_path):
    """List data without a test list tests on the val list: the summary says so."""
    videos = sorted(story["data"].rglob("*.mp4"))
    label = {c: i for i, c in enumerate(CLASSES)}
    lines = [f"{v.relative_to(story['data'])} {label[v.parent.name]}\n" for v in videos]
    (tmp_path / "train.txt").write_text("".join(lines[::2]))
    (tmp_path / "val.txt").write_text("".join(lines[1::2]))
    args = ["finetune", "--config", str(TINY / "finetune.yaml"), "--out", str(tmp_path / "ft")]
    args += ["data.kind=list", f"data.root={story['data']}"]
    args += [f"data.train_list={tmp_path / 'train.txt'}"]
    args += [f"data.val_list={tmp_path / 'val.txt'}", "val.every_epochs=0", "schedule.epochs=1"]
    args += ["model.num_frames=8", "data.test_clips=1", "data.test_crops=1", "engine.ema_decay=0"]
    assert main([*args, "data.num_frames=8", "data.sampling_rate=2"]) == 0
    splits = json.loads((tmp_path / "ft" / "summary.json").read_text())["splits"]
    assert splits["test"] == {"videos": 6, "same_as": "val"} and splits["disjoint"] is True


def test_evaluate_with_one_corrupt_test_video_counts_it_as_one_file(story, tmp_path, capsys):
    ft = story["runs"] / "ft"
    listing = json.loads((ft / "splits.json").read_text())
    copy = tmp_path / "videos"
    shutil.copytree(story["data"], copy)
    broken = copy / Path(listing["test"][0]).relative_to(story["data"])
    broken.write_bytes(b"not a video: the upload was cut short")
    capsys.readouterr()
    torch.set_num_threads(1)
    try:
        args = ["evaluate", "--checkpoint", str(ft), "--out", str(tmp_path / "eval")]
        assert main([*args, f"data.root={copy}"]) == 0
    finally:
        torch.set_num_threads(2)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ev = json.loads((tmp_path / "eval" / "summary.json").read_text())
    views = ev["views_per_video"]
    assert views == 6  # 2 clips x 3 crops
    for counts in (printed, ev):
        assert (counts["num_videos"], counts["videos_in_split"]) == (2, 3)
        assert (counts["bad_files"], counts["bad_views"]) == (1, views)
        assert all(type(counts[k]) is int for k in ("num_videos", "bad_files", "bad_views"))
    result = ev["test_result"]
    assert result["fewer_videos"] is True and result["num_videos"] == 2
    assert "2 of the 3 videos, 1 unreadable" in result["headline"]
    assert printed["result"] == result["headline"]
