"""``maskagain predict`` on real H.264 files through the CLI entry point: folders, list files,
a broken file, CSV / JSONL / table output, windows on a longer video, and equality with
``evaluate`` on a labelled list; a nano classifier with random weights (the numbers compared
are the model's, not its accuracy)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from maskagain.cli.main import main
from tests._classifier_run import CLASSES, labelled_run, write_videos
from tests._user_videos import write_clip


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return write_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, videos: Path) -> Path:
    return labelled_run(tmp_path_factory, videos)


def _predict(run: Path, *args: str) -> int:
    return main(["predict", "--checkpoint", str(run), "--no-progress", *args])


def test_folder_with_a_broken_file_lists_it_and_goes_on(tmp_path, videos, run_dir, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted(videos.rglob("*.mp4"))[:3]:
        (folder / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    (folder / "sub").mkdir()
    (folder / "sub" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    out = tmp_path / "pred.csv"
    assert _predict(run_dir, "--top-k", "2", "--workers", "2", "--out", str(out), str(folder)) == 0
    rows = list(csv.DictReader(out.open()))
    good = [r for r in rows if not r["error"]]
    assert len(good) == 3 and all(r["label_1"] in CLASSES for r in good)
    assert all(float(r["score_1"]) >= float(r["score_2"]) for r in good)
    assert all(r["views"] == "4" and r["window"] == "" for r in good)
    (bad,) = [r for r in rows if r["error"]]
    assert bad["path"].endswith("broken.mp4") and "cannot open" in bad["error"]
    err = capsys.readouterr().err
    assert "3 of 4 videos predicted, 1 skipped" in err and "skipped " in err


def test_list_file_to_jsonl_and_table(tmp_path, videos, run_dir, capsys):
    out = tmp_path / "pred.jsonl"
    assert _predict(run_dir, "--workers", "0", "--out", str(out), str(videos / "test.txt")) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and all(len(r["labels"]) == 3 and r["error"] is None for r in rows)
    assert sorted(r["labels"][0] for r in rows)[0] in CLASSES
    capsys.readouterr()
    one = str(videos / "still" / "v0.mp4")
    assert _predict(run_dir, "--top-k", "1", "--clips", "1", "--crops", "1", one) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["video", "window", "top-k", "(score)"]
    assert table[1].startswith(one) and "all" in table[1]


@pytest.mark.slow
def test_predict_equals_evaluate_on_a_labelled_list(tmp_path, videos, run_dir):
    ev = tmp_path / "evaluate"
    assert main(["evaluate", "--checkpoint", str(run_dir), "--out", str(ev),
                 "precision=fp32", "device=cpu", "progress=false"]) == 0  # fmt: skip
    evaluated = {r["path"]: r for r in csv.DictReader((ev / "predictions.csv").open())}
    out = tmp_path / "pred.jsonl"
    assert _predict(run_dir, "--top-k", "3", "--out", str(out), str(videos / "test.txt")) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(evaluated) == 6
    for r in rows:
        e = evaluated[r["path"]]
        assert r["labels"][0] == e["prediction_name"] and r["views"] == int(e["views"]) == 4
        for name, score in zip(r["labels"], r["scores"]):
            assert score == pytest.approx(float(e[f"score_{name}"]), abs=2e-6)


def test_windows_of_a_longer_video(tmp_path, run_dir):
    long = write_clip(tmp_path / "long.mp4", (64, 48), "across", frames=100, seed=3)  # 4 s
    out = tmp_path / "w.jsonl"
    args = ["--windows", "--stride", "0.5", "--crops", "1", "--out", str(out), str(long)]
    assert _predict(run_dir, *args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    windows, (video,) = rows[:-1], rows[-1:]
    # span (4 - 1) * 2 + 1 = 7 frames = 0.28 s at 25 fps, every 12 frames + one at the end
    assert len(windows) == 9 and [w["window"] for w in windows] == list(range(9))
    assert [w["start_s"] for w in windows[:3]] == pytest.approx([0.0, 0.48, 0.96])
    assert windows[0]["end_s"] == pytest.approx(0.28) and windows[-1]["end_s"] == 4.0
    assert video["window"] is None and video["start_s"] == 0.0 and video["end_s"] == 4.0
    assert video["views"] == 9


def test_bad_arguments_fail_before_any_work(tmp_path, run_dir, videos, capsys):
    assert _predict(run_dir, "--stride", "2", str(videos)) == 2
    assert "--stride" in capsys.readouterr().err
    assert _predict(run_dir, "--out", str(tmp_path / "x.txt"), str(videos)) == 2
    assert _predict(run_dir, str(tmp_path / "missing")) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_hugging_face_export_predicts_with_its_processor(tmp_path, videos, run_dir, caplog):
    """An HF directory records normalisation, size and class names but no frame step: the
    default is used and named in a warning."""
    hf = tmp_path / "hf"
    assert main(["export", "--format", "hf", "--checkpoint", str(run_dir), "--out", str(hf)]) == 0
    out = tmp_path / "pred.jsonl"
    assert _predict(hf, "--out", str(out), str(videos / "still")) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(r["labels"][0] in CLASSES for r in rows)
    assert rows[0]["views"] == 15  # DataConfig's 5 clips x 3 crops
    assert "records no sampling_rate" in caplog.text


def test_window_starts_cover_the_video():
    from maskagain.data.stream import window_starts

    assert window_starts(100, 7, 12) == [0, 12, 24, 36, 48, 60, 72, 84, 93]
    assert window_starts(100, 10, 10) == list(range(0, 91, 10))  # the last ends at frame 100
    assert window_starts(5, 7, 7) == [0]  # shorter than a span: one padded window


def test_inputs_from_lists_folders_and_files(tmp_path, videos):
    from maskagain.config import ConfigError
    from maskagain.data.inputs import collect_videos

    lst = tmp_path / "mine.txt"
    lst.write_text(f"# my clips\n{videos}/still/v0.mp4 1\n\n{videos}/across/v1.mp4\n")
    found = collect_videos([str(lst), str(videos / "still"), str(videos / "across" / "v1.mp4")])
    names = [Path(p).relative_to(videos).as_posix() for p in found]
    assert names == ["still/v0.mp4", "across/v1.mp4", "still/v1.mp4"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no video files"):
        collect_videos([str(tmp_path / "empty")])
