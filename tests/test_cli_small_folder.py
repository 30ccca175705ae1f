"""What a user meets on a small folder of their own videos, without training: configs and the
shipped teacher by name, ``cp``, a light ``ls``, path checks before any data is read, the
objective kind's shipped defaults, one clip length, progress lines, test results against chance,
file modes and refusals to overwrite."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from maskagain.cli.main import main
from maskagain.config import ConfigError, load_config
from maskagain.data.config import available_workers
from maskagain.engine.evaluation import chance_warning, describe_test_result
from maskagain.engine.metrics import Progress
from maskagain.models.loading import SHIPPED_WEIGHTS, locate_source, save_encoder
from maskagain.models.registry import create_model
from maskagain.recipes.configs import DistillConfig, FinetuneConfig

ROOT = Path(__file__).resolve().parents[1]
GEOMETRY = dict(img_size=32, num_frames=4, patch_size=8, tubelet_size=2)


def err_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def umasked(mode: int = 0o666) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


# ----------------------------------------------------------------------------- configs by name
def test_a_shipped_config_by_name_and_a_typo_with_suggestions(tmp_path, capsys):
    assert main(["finetune", "--config", "folder/finetune", "data.root=.", "--dry-run"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["data"]["kind"] == "folder" and cfg["mixup"]["mixup_alpha"] == 0.0
    assert main(["finetune", "--config", "folder/finetun", "--dry-run"]) == 2
    (line,) = err_lines(capsys)
    assert "did you mean folder/finetune" in line and "maskagain ls configs" in line


def test_cp_copies_a_shipped_config_that_runs_anywhere(tmp_path, capsys):
    target = tmp_path / "mine.yaml"
    assert main(["cp", "folder/finetune", str(target)]) == 0
    assert "copied folder/finetune.yaml" in capsys.readouterr().out
    assert "defaults" not in yaml.safe_load(target.read_text())  # folded in: no relative bases
    args = ["finetune", "--config", str(target), f"data.root={tmp_path}", "--dry-run"]
    assert main(args) == 0
    assert yaml.safe_load(capsys.readouterr().out)["optim"]["lr"] == 1e-2
    assert main(["cp", "folder/finetune", str(target)]) == 2
    assert "--overwrite" in err_lines(capsys)[-1]


@pytest.mark.subprocess
def test_ls_is_light_and_its_catalog_matches_the_library():
    code = (
        "import sys; from maskagain.cli.main import main; main(['ls']); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "maskagain:demo-teacher" in out.stdout and "folder/finetune" in out.stdout
    from maskagain.cli import catalog
    from maskagain.models.families import FAMILIES, MASKAGAIN
    from maskagain.models.image_vit import MAE_HEADS
    from maskagain.models.registry import ARCHITECTURES

    assert catalog.ARCHITECTURES == {
        n: (a["embed_dim"], a["depth"], a["num_heads"]) for n, a in ARCHITECTURES.items()
    }
    assert catalog.FAMILIES == tuple(
        (f.name, f.family, f.embed_dim, f.depth, f.num_heads, f.patch_size, f.tubelet_size)
        for f in FAMILIES
        if f.family != MASKAGAIN
    )
    assert catalog.MAE_HEADS == dict(MAE_HEADS)
    for name, (file, _) in catalog.SHIPPED_WEIGHTS.items():
        assert SHIPPED_WEIGHTS[name] == ROOT / "maskagain" / file and locate_source(name).is_file()


# ----------------------------------------------------------------------------- checks up front
def test_every_path_is_checked_before_any_data_with_exit_2(tmp_path, capsys):
    data = tmp_path / "videos"
    data.mkdir()
    base = ["distill", "--config", "folder/distill", "--out", str(tmp_path / "run")]
    assert main([*base, f"data.root={data}", "teacher.source=maskagain:demo-teachr"]) == 2
    (line,) = err_lines(capsys)
    assert "'teacher.source'" in line and "does not exist" in line
    assert main([*base, f"data.root={tmp_path / 'video'}"]) == 2
    (line,) = err_lines(capsys)
    assert "'data.root'" in line and "did you mean" in line and "videos" in line
    ft = [
        "finetune",
        "--config",
        "folder/finetune",
        f"data.root={data}",
        "init.source=nowhere/x.safetensors",
    ]
    assert main(ft) == 2 and "'init.source'" in err_lines(capsys)[0]
    assert main(["distill", "--config", "folder/distill"]) == 2
    assert "data.root=my_videos" in err_lines(capsys)[0]
    assert not (tmp_path / "run").exists()


def test_objective_kind_takes_its_shipped_config_or_names_it(tmp_path, capsys):
    args = ["distill", "--config", "tiny/distill", "objective.kind=amd", "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr()
    cfg = yaml.safe_load(out.out)
    assert cfg["amd"]["teacher_ratio"] == 0.25 and cfg["student"]["init"] == "official"
    assert "using" in out.err and "distill_amd.yaml" in out.err
    mine = tmp_path / "mine.yaml"
    assert main(["cp", "tiny/distill", str(mine)]) == 0
    capsys.readouterr()
    assert main(["distill", "--config", str(mine), "objective.kind=amd", "--dry-run"]) == 2
    (line,) = err_lines(capsys)
    assert "'amd.teacher_ratio'" in line and "--config tiny/distill_amd" in line


def test_data_num_frames_drives_the_models_and_a_conflict_is_one_line():
    tiny = ROOT / "configs" / "tiny"
    cfg = load_config(FinetuneConfig, tiny / "finetune.yaml", ["data.num_frames=8"])
    assert cfg.model.num_frames == 8
    cfg = load_config(DistillConfig, tiny / "distill.yaml", ["data.num_frames=8"])
    assert cfg.student.num_frames == 8
    with pytest.raises(
        ConfigError, match="'data.num_frames'=8 does not match 'model.num_frames'=4"
    ):
        load_config(
            FinetuneConfig, tiny / "finetune.yaml", ["data.num_frames=8", "model.num_frames=4"]
        )


def test_num_workers_auto_is_the_cores_of_the_process():
    cfg = load_config(
        FinetuneConfig, ROOT / "configs" / "folder" / "finetune.yaml", ["data.root=."]
    )
    assert cfg.data.num_workers == available_workers() == len(os.sched_getaffinity(0))


# ----------------------------------------------------------------------------- results, progress
def test_a_score_within_noise_of_chance_is_said():
    at = describe_test_result({"top1": 66.67, "num_videos": 3}, "test", 3)
    assert at["at_chance"] and "within noise of chance" in chance_warning(at)
    assert at["headline"] == "top-1 66.7% on the test split (3 videos; chance 33.3%)"
    clear = describe_test_result({"top1": 75.0, "num_videos": 12}, "val", 3)
    assert not clear["at_chance"] and chance_warning(clear) is None  # chance + 2 se = 60.5


def test_progress_off_a_terminal_is_a_plain_line_with_the_loss_and_eta(caplog):
    progress = Progress(total=10, initial=0, active=True, desc="distill", terminal=False)
    with caplog.at_level(logging.INFO, logger="maskagain"):
        for _ in range(5):
            progress.update()
        progress.show({"loss": 0.5, "clips_per_s": 12.0})
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("distill step 5/10: loss 0.5 clips_per_s 12") and "ETA 0:0" in line


def test_progress_on_a_terminal_is_a_bar_with_the_loss_terms_and_eta(capsys):
    progress = Progress(total=10, initial=0, active=True, desc="distill", terminal=True)
    for _ in range(5):
        progress.update()
    progress.show({"loss": 0.5, "global": 0.25, "clips_per_s": 12.0})
    progress.update()
    progress.close()
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert bar.startswith("distill:") and "6/10" in bar and "<" in bar  # elapsed<left (ETA)
    assert "loss=0.5" in bar and "global=0.25" in bar and "clips_per_s=12" in bar


# ----------------------------------------------------------------------------- files
def test_weights_follow_the_umask(tmp_path):
    path = save_encoder(create_model("vit_nano", **GEOMETRY), tmp_path / "w.safetensors")
    assert stat.S_IMODE(path.stat().st_mode) == umasked()


def test_export_and_visualize_refuse_to_overwrite(tmp_path, capsys):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "config.json").write_text("{}")  # an earlier export (an empty folder is free to use)
    args = ["export", "--checkpoint", "maskagain:demo-teacher", "--format", "hf", "--out", str(out)]
    assert main(args) == 2 and "--overwrite" in err_lines(capsys)[-1]
    fig = tmp_path / "fig.png"
    fig.write_bytes(b"")
    assert main(["visualize", "--out", str(fig)]) == 2 and "--overwrite" in err_lines(capsys)[-1]
    from maskagain.cli.visualize import default_out

    run = tmp_path / "run"
    run.mkdir()
    assert default_out(str(run)) == run / "selections.png"
    assert default_out(str(run / "missing")) == Path("selections.png")


def test_a_classifier_given_as_teacher_is_named(tmp_path, caplog):
    from maskagain.recipes.distill import build_teacher

    model = create_model("vit_nano", num_classes=3, **GEOMETRY)
    source = save_encoder(model, tmp_path / "ft" / "model.safetensors")
    cfg = load_config(
        DistillConfig, ROOT / "configs" / "tiny" / "distill.yaml", [f"teacher.source={source}"]
    )
    import torch

    with caplog.at_level(logging.WARNING, logger="maskagain"):
        build_teacher(cfg, torch.device("cpu"))
    (line,) = [r.getMessage() for r in caplog.records if "classifier" in r.getMessage()]
    assert "3 classes" in line and "head goes unused" in line


def test_evaluate_counts_files_apart_from_views_and_prints_integers():
    from maskagain.data import BadFileTracker
    from maskagain.engine.evaluation import format_metrics

    tracker = BadFileTracker(max_fraction=1.0)
    for _ in range(3):  # one broken file, met by 3 views x 2 batches
        tracker.update({"label": [0, 1], "skipped": [("bad.mp4", "moov atom not found")] * 2})
    assert len(tracker.paths) == 1 and tracker.bad == 6
    line = format_metrics(
        {"top1": 100.0, "num_videos": 2, "bad_files": 1, "classes_without_videos": ["sea"]}
    )
    assert line == "top1 100.00, num_videos 2, bad_files 1, classes_without_videos sea"


# ----------------------------------------------------------------------------- resolution warning
def _probe_warnings(root: Path, out: Path, caplog) -> list[str]:
    """The resolution warnings of one ``maskagain probe`` run of the shipped teacher on ``root``."""
    caplog.clear()
    args = ["probe", "--config", "tiny/probe", "--encoder", "maskagain:demo-teacher"]
    args += ["data.kind=folder", f"data.root={root}", "data.num_frames=8", "data.sampling_rate=2"]
    args += ["data.short_side=36", "probe.epochs=1", "--out", str(out)]
    with caplog.at_level(logging.WARNING, logger="maskagain"):
        assert main(args) == 0
    return [r.getMessage() for r in caplog.records if "short side" in r.getMessage()]


@pytest.mark.slow
def test_a_prepared_copy_gets_no_resolution_warning(tmp_path, caplog):
    from _user_videos import CLASSES, write_clip

    raw = tmp_path / "raw"
    for c, name in enumerate(CLASSES):
        (raw / name).mkdir(parents=True)
        for j in range(3):
            write_clip(raw / name / f"v{j}.mp4", (1280, 720), name, 16, seed=10 * c + j)
    prepared = tmp_path / "prepared"
    assert main(["prepare", "--folder", str(raw), "--out", str(prepared), "--workers", "1"]) == 0
    assert len(list(prepared.rglob("*.mp4"))) == 9

    (line,) = _probe_warnings(raw, tmp_path / "probe-raw", caplog)  # once, for all three splits
    assert "1280x720" in line and "maskagain prepare --folder" in line
    assert _probe_warnings(prepared, tmp_path / "probe-prepared", caplog) == []
