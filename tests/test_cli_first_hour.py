"""A user's first hour with the CLI: quick discoverable help (no torch or PyAV for ``--help``),
``--version``, ``ls``, ``validate``; paths checked as paths first (a typo is "does not exist"
with a did-you-mean, never a hub lookup); per-run output directories that are never silently
reused; ``--resume auto`` over a torn log line; ``visualize`` errors, padding and title."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import typing
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import yaml

from maskagain.cli.main import SUBCOMMANDS, main
from maskagain.config import apply_overrides, from_dict, load_yaml
from maskagain.engine.metrics import MetricWriter
from maskagain.models.loading import is_hub_id, save_encoder
from maskagain.models.registry import create_model
from maskagain.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny"
GEOMETRY = dict(img_size=32, num_frames=4, patch_size=8)


def err_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def without_out_dir(config: Path, dest: Path) -> Path:
    """``config`` resolved (its ``defaults`` merged in) and saved as ``dest`` without out_dir."""
    tree = load_yaml(config)
    tree.pop("out_dir", None)
    dest.write_text(yaml.safe_dump(tree))
    return dest


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def teacher(tmp_path) -> Path:
    model = create_model("vit_micro", depth=2, **GEOMETRY)
    return save_encoder(model, tmp_path / "teacher" / "teacher.safetensors")


@pytest.fixture
def classifier(tmp_path) -> Path:
    model = create_model("vit_nano", num_classes=4, **GEOMETRY)
    return save_encoder(model, tmp_path / "ft" / "model.safetensors")


# ----------------------------------------------------------------------------- help, ls, validate
HELP_CHECK = """
import contextlib, io, sys
from maskagain.cli.main import main
for argv in {commands!r}:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as e:
            assert e.code == 0, (argv, e.code)
    assert "usage: maskagain" in out.getvalue(), argv
heavy = sorted(m for m in ("torch", "av", "numpy", "matplotlib") if m in sys.modules)
assert not heavy, heavy
print("ok")
"""


@pytest.mark.subprocess
def test_help_of_every_command_imports_neither_torch_nor_pyav():
    commands = [["--help"]] + [[c, "--help"] for c in (*RECIPES, *SUBCOMMANDS)]
    code = HELP_CHECK.format(commands=commands)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def _described_keys(help_text: str) -> dict[str, str]:
    """Key -> description of the 'config keys' lines of a command's ``--help``."""
    lines = help_text.split("config keys (", 1)[1].splitlines()[1:]
    out, key = {}, None
    for line in lines:
        if line.startswith("  ") and not line.startswith("   "):
            key, _, rest = line.strip().partition(" ")
            out[key] = rest.strip()
        elif key is not None and line.strip():
            out[key] = f"{out[key]} {line.strip()}".strip()
    return out


def test_help_describes_every_config_key(capsys):
    for name, recipe in RECIPES.items():
        with pytest.raises(SystemExit):
            main([name, "--help"])
        described = _described_keys(capsys.readouterr().out)
        keys = {".".join(path) for path in _leaf_paths(recipe.config)}
        assert set(described) == keys, (name, keys ^ set(described))
        bare = sorted(k for k, text in described.items() if len(text) < 8 or text == "-")
        assert not bare, (name, bare)


def _leaf_paths(cls: type, prefix: tuple = ()) -> list[tuple]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += _leaf_paths(hints[f.name], (*prefix, f.name))
        else:
            out.append((*prefix, f.name))
    return out


def test_version_comes_from_package_metadata(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"maskagain {version('maskagain')}"


def test_recipe_help_shows_an_override_that_exists(capsys):
    for name, recipe in RECIPES.items():
        example = recipe.example
        from_dict(recipe.config, apply_overrides({}, [example]))  # a key of this recipe
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert f"e.g. {example}" in text, name
        assert "--overwrite" in text and "default: out_dir of the config, else" in text
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    demo = " ".join(capsys.readouterr().out.split())
    assert "about 10 s" in demo and "2 minutes" not in demo


def test_ls_lists_models_families_configs_and_recipes(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for name in ("vit_base", "vit_nano", "videomae2_giant", "vjepa2_large", "V-JEPA 2"):
        assert name in out
    assert "image teachers (MVD co-teaching" in out and "MAE  768 x 12, 12 heads, patch 16" in out
    assert "tiny/distill " in out and "distill/k400_vit_b " in out and "folder/finetune " in out
    assert "maskagain:demo-teacher" in out
    assert "base.yaml" not in out  # partial configs, not runnable
    for name in (*RECIPES, "validate", "visualize"):
        assert f"  {name} " in out
    assert main(["ls", "recipes"]) == 0
    assert "vit_base" not in capsys.readouterr().out
    assert main(["ls", "modles"]) == 2
    assert "choose from models, configs, recipes" in err_lines(capsys)[0]


def test_validate_prints_resolved_config(capsys):
    assert main(["validate", str(TINY / "distill.yaml"), "engine.batch_size=2"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["engine"]["batch_size"] == 2 and cfg["student"]["name"] == "vit_nano"


def test_validate_warns_of_every_missing_teacher(tmp_path, capsys):
    """The MVD configs name a video and an image teacher: both are looked for, and a missing
    one is a warning (an earlier step may still write it), not an error; a missing data root
    is an error (exit 2)."""
    config = ROOT / "configs" / "distill" / "k400_vit_s_mvd.yaml"
    assert main(["validate", str(config), "data.root=nowhere"]) == 2
    assert "config key 'data.root'" in err_lines(capsys)[-1]
    assert main(["validate", str(config), f"data.root={tmp_path}", "data.train_list="]) == 0
    warnings = [line for line in err_lines(capsys) if ": warning: " in line]
    assert any("'teacher.source'" in w and "does not exist" in w for w in warnings), warnings
    assert any("'image_teacher.source'" in w and "does not exist" in w for w in warnings)


def test_validate_lists_every_error_one_per_line(capsys):
    args = ["engine.batch_sise=3", "mask.ratio=2", "optim.base_lr=abc"]
    assert main(["validate", str(TINY / "distill.yaml"), *args]) == 2
    errors = [line for line in err_lines(capsys) if ": error: " in line]
    assert len(errors) == 3, errors
    assert any(
        "'engine.batch_sise'" in e and "did you mean 'engine.batch_size'" in e for e in errors
    )
    assert any("'mask.ratio'" in e for e in errors) and any("'optim.base_lr'" in e for e in errors)


def test_validate_finds_the_recipe_or_asks_for_it(tmp_path, capsys):
    config = without_out_dir(TINY / "probe.yaml", tmp_path / "mine.yaml")
    assert main(["validate", str(config)]) == 2
    assert "pass --recipe with one of pretrain, distill" in err_lines(capsys)[-1]
    assert main(["validate", str(config), "--recipe", "probe"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["out_dir"] == "runs/probe-distill"  # the rule the probe command applies


# ----------------------------------------------------------------------------- paths
def test_hub_ids_are_told_from_paths(in_tmp):
    (in_tmp / "runs").mkdir()
    assert is_hub_id("MCG-NJU/videomae-base") and is_hub_id("org/model-v1.5")
    for path in ("runs/distil", "./org/name", "/org/name", "~/name", "org/x.pth", "a/b/c"):
        assert not is_hub_id(path), path


@pytest.mark.parametrize("command", ["inspect", "export"])
def test_typo_of_a_run_dir_is_not_found_with_suggestion(in_tmp, capsys, command):
    (in_tmp / "runs" / "distill").mkdir(parents=True)
    if command == "inspect":
        argv = ["inspect", "runs/distil"]
    else:
        argv = ["export", "--checkpoint", "runs/distil", "--format", "hf", "--out", "hf"]
    assert main(argv) == 2
    (line,) = err_lines(capsys)
    assert "runs/distil does not exist" in line and "did you mean 'runs/distill'?" in line
    assert "hub" not in line
    assert not (in_tmp / "hf").exists()


def test_evaluate_names_a_missing_checkpoint_and_writes_nothing(in_tmp, capsys):
    (in_tmp / "runs" / "finetune").mkdir(parents=True)
    assert main(["evaluate", "--checkpoint", "runs/fine"]) == 2
    (line,) = err_lines(capsys)
    assert "config key 'checkpoint': runs/fine does not exist" in line
    assert "did you mean 'runs/finetune'?" in line and "data." not in line
    assert sorted(p.name for p in (in_tmp / "runs").iterdir()) == ["finetune"]


def test_probe_checks_the_encoder_before_the_data(in_tmp, capsys):
    args = ["probe", "--encoder", "nowhere/enc.safetensors", "data.kind=list"]
    assert main(args) == 2
    (line,) = err_lines(capsys)
    assert "config key 'encoder': nowhere/enc.safetensors does not exist" in line
    assert not (in_tmp / "runs").exists()


def test_a_failed_evaluate_leaves_the_run_in_its_directory_untouched(in_tmp, classifier, capsys):
    out = in_tmp / "runs" / "evaluate"
    out.mkdir(parents=True)
    (out / "config.yaml").write_text("old run\n")
    (out / "summary.json").write_text('{"top1": 50}\n')
    base = ["evaluate", "--config", str(TINY / "evaluate.yaml"), "--out", str(out)]
    # the data fails (list kind, no list): checked before the run directory is touched
    bad_data = [*base, "--checkpoint", str(classifier), "data.kind=list", "--overwrite"]
    assert main(bad_data) == 2
    assert "'data.test_list'" in err_lines(capsys)[-1]
    assert (out / "config.yaml").read_text() == "old run\n"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "summary.json"]
    # without --overwrite the directory is refused before anything else
    assert main([*base, "--checkpoint", str(classifier)]) == 2
    (line,) = err_lines(capsys)
    assert f"{out} already holds a run (config.yaml, summary.json)" in line
    assert "--overwrite" in line and "--resume" not in line
    assert (out / "config.yaml").read_text() == "old run\n"


@pytest.mark.slow
def test_an_untrained_classifier_is_said_to_be_at_chance(in_tmp, classifier, capsys):
    args = ["evaluate", "--config", str(TINY / "evaluate.yaml"), "--checkpoint", str(classifier)]
    assert main([*args, "--out", "eval"]) == 0
    out = capsys.readouterr()
    printed = json.loads(out.out.strip().splitlines()[-1])
    result = json.loads((in_tmp / "eval" / "summary.json").read_text())["test_result"]
    assert printed["result"] == result["headline"]
    assert "on the test split (8 videos; chance 25.0%)" in result["headline"]
    assert result["at_chance"], result  # untrained: chance + 2 standard errors is 55.6 here
    (line,) = [x for x in out.err.splitlines() if "chance" in x]
    assert line.startswith("maskagain evaluate: warning:") and "within noise of chance" in line


# ----------------------------------------------------------------------------- run directories
def test_default_run_directories_follow_config_and_checkpoint(in_tmp, capsys):
    exp = without_out_dir(TINY / "distill.yaml", in_tmp / "exp1.yaml")
    assert main(["distill", "--config", str(exp), "--dry-run"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["out_dir"] == "runs/exp1"
    assert main(["distill", "--config", str(exp), "--out", "elsewhere", "--dry-run"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["out_dir"] == "elsewhere"

    run = in_tmp / "runs" / "ft"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"kind": "synthetic"}}))
    cases = {
        ("runs/ft",): "runs/ft/evaluate",
        ("runs/ft/checkpoints/ckpt_step00000008.pt", "use_ema=true"): "runs/ft/evaluate-ema",
        ("runs/ft/model.safetensors", "split=val"): "runs/ft/evaluate-val",
        ("downloads/videomae_k400.pth",): "runs/evaluate-videomae_k400",
    }
    for (checkpoint, *extra), expected in cases.items():
        assert main(["evaluate", "--checkpoint", checkpoint, *extra, "--dry-run"]) == 0
        assert yaml.safe_load(capsys.readouterr().out)["out_dir"] == expected, checkpoint

    probe = without_out_dir(TINY / "probe.yaml", in_tmp / "probe.yaml")
    for encoder, expected in (
        ("runs/tiny/distill", "runs/probe-distill"),
        ("runs/x/student.safetensors", "runs/probe-x"),
        ("MCG-NJU/videomae-base", "runs/probe-videomae-base"),
    ):
        assert main(["probe", "--config", str(probe), "--encoder", encoder, "--dry-run"]) == 0
        assert yaml.safe_load(capsys.readouterr().out)["out_dir"] == expected, encoder


def _distill(run_dir: Path, teacher: Path, *extra: str) -> int:
    args = ["distill", "--config", str(TINY / "distill.yaml"), "--out", str(run_dir)]
    return main([*args, f"teacher.source={teacher}", *extra])


def test_rerunning_into_a_run_directory_needs_resume_or_overwrite(tmp_path, teacher, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("old: run\n")
    (run_dir / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    assert _distill(run_dir, teacher) == 2
    (line,) = err_lines(capsys)
    assert line.startswith(f"maskagain distill: error: {run_dir} already holds a run")
    assert "--resume auto to continue it, --overwrite to replace it" in line
    assert (run_dir / "log.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n'
    assert (run_dir / "config.yaml").read_text() == "old: run\n"


def test_overwrite_that_fails_before_running_keeps_the_old_run(tmp_path, capsys):
    """A teacher with another tubelet fails after the recipe started its run directory: the
    run it was to replace comes back whole."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("old: run\n")
    (run_dir / "checkpoints" / "ckpt_step00000002.pt").write_bytes(b"old")
    (run_dir / "evaluate").mkdir()
    model = create_model("vit_nano", tubelet_size=4, **GEOMETRY)
    bad_teacher = save_encoder(model, tmp_path / "t4.safetensors")
    assert _distill(run_dir, bad_teacher, "--overwrite") == 2
    assert "tubelet" in err_lines(capsys)[-1]
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["checkpoints", "config.yaml", "evaluate"]
    assert (run_dir / "config.yaml").read_text() == "old: run\n"
    assert (run_dir / "checkpoints" / "ckpt_step00000002.pt").read_bytes() == b"old"


def test_a_failed_first_attempt_leaves_no_run_behind(tmp_path, capsys):
    model = create_model("vit_nano", tubelet_size=4, **GEOMETRY)
    bad_teacher = save_encoder(model, tmp_path / "t4.safetensors")
    assert _distill(tmp_path / "run", bad_teacher) == 2
    assert not (tmp_path / "run").exists()  # so the corrected command runs without a flag


@pytest.mark.slow
def test_overwrite_replaces_and_resume_auto_survives_a_torn_log_line(tmp_path, teacher, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "keep").mkdir(parents=True)
    (run_dir / "stale.txt").write_text("old")
    (run_dir / "config.yaml").write_text("old: run\n")
    assert _distill(run_dir, teacher, "engine.stop_after_steps=3", "--overwrite") == 0
    assert not (run_dir / "stale.txt").exists() and (run_dir / "keep").is_dir()
    assert not (run_dir / ".replaced-run").exists()
    with open(run_dir / "log.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 0.5, "glo')  # killed in the middle of a write
    assert _distill(run_dir, teacher, "--resume", "auto") == 0
    steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_metric_writer_drops_a_torn_last_line(tmp_path, caplog):
    log_file = tmp_path / "log.jsonl"
    good = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2, 3)]
    log_file.write_text("\n".join(good) + '\n{"step": 4, "lo')
    with caplog.at_level(logging.WARNING, logger="maskagain.engine.metrics"):
        writer = MetricWriter(tmp_path, True, tensorboard=False, resume_step=2)
    writer.write({"step": 3, "loss": 0.5}, 3)
    writer.close()
    assert "dropping 1 unreadable line" in caplog.text
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and records[-1]["loss"] == 0.5
    # a fresh writer (no resume step) also starts its first line on a line of its own
    with open(log_file, "a") as f:
        f.write('{"step": 9')
    MetricWriter(tmp_path, True, tensorboard=False).write({"step": 4}, 4)
    assert [json.loads(line)["step"] for line in log_file.read_text().splitlines()][-1] == 4


# ----------------------------------------------------------------------------- visualize
def test_visualize_wrong_video_path_is_one_line(tmp_path, capsys):
    (tmp_path / "clip.mp4").write_bytes(b"")
    assert main(["visualize", "--video", str(tmp_path / "clp.mp4")]) == 2
    (line,) = err_lines(capsys)
    assert "clp.mp4 does not exist" in line and "did you mean" in line and "clip.mp4" in line


def test_visualize_short_video_is_padded_with_a_warning_and_labels(tmp_path, monkeypatch, caplog):
    from maskagain.data.synthetic import write_video

    encoder = create_model("vit_nano", img_size=32, num_frames=8, patch_size=8)
    weights = save_encoder(encoder, tmp_path / "enc.safetensors")
    frames = (np.random.default_rng(0).random((3, 32, 32, 3)) * 255).astype(np.uint8)
    video = tmp_path / "three.mp4"
    write_video(video, frames)
    drawn = {}

    def fake_draw(sel, path, title="", frame_labels=None):
        drawn.update(title=title, labels=frame_labels, frames=sel.frames.shape[0])
        return Path(path)

    monkeypatch.setattr("maskagain.visualize.draw_selections", fake_draw)
    args = ["visualize", "--encoder", str(weights), "--video", str(video)]
    with caplog.at_level(logging.WARNING, logger="maskagain.visualize"):
        assert main([*args, "--out", str(tmp_path / "fig.png"), "--k-hint", "4"]) == 0
    assert "has 3 frames, fewer than the 8" in caplog.text and "padded" in caplog.text
    assert drawn["frames"] == 8
    assert drawn["labels"][:3] == ["frame 0", "frame 1", "frame 2"]
    assert drawn["labels"][3:] == ["frame 2 (repeat)"] * 5
    assert f"encoder: {weights}" in drawn["title"]
    assert "64 x 2, 2 heads, patch 8, tubelet 2, 8 x 32 px" in drawn["title"]
