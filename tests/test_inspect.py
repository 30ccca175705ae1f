"""``maskagain inspect``: what a checkpoint is, for people and for scripts."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from safetensors.torch import save_file

from maskagain.cli import inspect_cmd
from maskagain.cli.main import SUBCOMMANDS
from maskagain.models import CheckpointError, create_model, save_encoder
from maskagain.models.export import export_hf, export_videomae
from maskagain.recipes.inspect import format_report, inspect_checkpoint

CLASSES = ["run", "jump", "swim"]
TRAIN_CONFIG = {"recipe": "finetune", "optim": {"lr": 0.001}, "data": {"num_frames": 4}}


def _cli(argv: list[str]) -> int:
    """Run ``maskagain inspect`` the way ``maskagain.cli.main`` does (parser from the module)."""
    assert SUBCOMMANDS["inspect"] == "inspect_cmd"
    parser = argparse.ArgumentParser(prog="maskagain inspect")
    inspect_cmd.add_arguments(parser)
    return inspect_cmd.run(parser.parse_args(argv))


@pytest.fixture
def classifier(tiny_kwargs):
    return create_model(
        "vit_nano", **tiny_kwargs, num_classes=3, fc_norm=True, final_norm=False, fc_norm_eps=1e-5
    )


def test_our_classifier_run_directory(classifier, tmp_path):
    run = tmp_path / "run"
    extra = {
        "class_names": CLASSES,
        "train_config": TRAIN_CONFIG,
        "metrics": {"val_top1": 0.75},
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "step": 120,
    }
    save_encoder(classifier, run / "student.safetensors", extra=extra)
    report = inspect_checkpoint(run)
    assert report["format"] == "maskagain"
    assert report["weights"].endswith("student.safetensors")
    arch = report["architecture"]
    assert (arch["name"], arch["embed_dim"], arch["depth"], arch["num_heads"]) == (
        "vit_nano",
        64,
        2,
        2,
    )
    assert arch["fc_norm"] and not arch["final_norm"] and arch["pooling"] == "mean"
    assert report["input"] == {"num_frames": 4, "img_size": 32, "tokens": 32, "recorded": True}
    assert report["parameters"] == sum(p.numel() for p in classifier.parameters())
    assert report["head"] == {
        "num_classes": 3,
        "class_names": CLASSES,
        "class_names_from": "checkpoint metadata (class_names)",
    }
    assert report["normalization"]["mean"] == [0.5, 0.5, 0.5]
    assert report["train_config"] == TRAIN_CONFIG
    assert report["metrics"] == {"val_top1": 0.75}
    assert report["metadata"] == {"step": 120}
    assert report["export"]["hf"].startswith("VideoMAEForVideoClassification")
    text = format_report(report)
    for needle in ("maskagain", "vit_nano", "3 classes: run, jump, swim", "val_top1", "lr"):
        assert needle in text


def test_official_pretrain_pth(tiny_kwargs, tmp_path):
    model = create_model("vit_nano", **tiny_kwargs)
    pth = export_videomae(model, tmp_path / "pretrain.pth")
    report = inspect_checkpoint(pth)
    assert report["format"] == "official-pretrain"
    assert report["head"] is None
    assert report["parameters"] == sum(p.numel() for p in model.parameters())
    assert report["input"]["recorded"] is False and report["input"]["img_size"] == 224
    assert "train_config" not in report
    assert "not stored in this format" in format_report(report)
    given = inspect_checkpoint(pth, img_size=32, num_frames=4)
    assert given["input"] == {"num_frames": 4, "img_size": 32, "tokens": 32, "recorded": True}


def test_hf_directory(classifier, tmp_path):
    out = export_hf(classifier, tmp_path / "hf", CLASSES, mean=(0.4, 0.4, 0.4), std=(0.2,) * 3)
    report = inspect_checkpoint(out)
    assert report["format"] == "hf"
    assert report["head"]["class_names"] == CLASSES
    assert report["normalization"] == {
        "mean": [0.4, 0.4, 0.4],
        "std": [0.2, 0.2, 0.2],
        "from": "source preprocessor_config.json",
    }
    assert report["architecture"]["heads_recorded"] is True


def test_layer_scale_model_says_hf_export_is_impossible(tiny_kwargs, tmp_path):
    model = create_model("vit_nano", **tiny_kwargs, init_values=0.1)
    report = inspect_checkpoint(save_encoder(model, tmp_path / "ls.safetensors"))
    assert report["architecture"]["layer_scale"] is True
    assert (
        report["export"]["hf"].startswith("not possible")
        and "layer scale" in report["export"]["hf"]
    )


def test_inconsistent_weights_are_reported(classifier, tmp_path):
    sd = {k: v.contiguous() for k, v in classifier.state_dict().items()}
    sd["blocks.1.mlp.fc1.weight"] = torch.zeros(10, 64)  # wrong shape for a 4x MLP
    path = tmp_path / "odd.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match="do not fit.*blocks.1.mlp.fc1.weight"):
        inspect_checkpoint(path)


def test_cli_json_and_text(classifier, tmp_path, capsys):
    path = save_encoder(classifier, tmp_path / "run" / "student.safetensors")
    assert _cli([str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "maskagain" and report["head"]["num_classes"] == 3
    assert report["head"]["class_names"] is None
    assert _cli([str(tmp_path / "run")]) == 0
    assert "3 classes (no class names found)" in capsys.readouterr().out


def test_cli_errors_are_one_line_exit_2(classifier, tmp_path, capsys):
    optim = tmp_path / "optimizer.pth"
    torch.save({"optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}, optim)
    missing = tmp_path / "nope.pth"
    odd = tmp_path / "odd.pth"
    sd = dict(classifier.state_dict(), **{"head.weight": torch.zeros(3, 10)})
    torch.save({"model": sd}, odd)
    cases = ((optim, "optimizer-only"), (missing, "does not exist"), (odd, "head.weight"))
    for source, needle in cases:
        assert _cli([str(source)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err and err.startswith("error:")


def test_run_directory_summary_gives_metrics(classifier, tmp_path):
    run = tmp_path / "run"
    save_encoder(classifier, run / "model.safetensors", extra={"recipe": "finetune"})
    summary = {"final": {"val_top1": 0.5}, "steps": 10}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text("optim:\n  lr: 0.01\n")
    report = inspect_checkpoint(run)
    assert report["metrics"] == {"val_top1": 0.5} and report["summary"] == summary
    assert report["train_config"] == {"optim": {"lr": 0.01}}
    assert report["metadata"] == {"recipe": "finetune"}


def test_shipped_teacher_reports_the_config_in_its_card():
    from maskagain.recipes.demo.settings import TEACHER_WEIGHTS

    report = inspect_checkpoint(TEACHER_WEIGHTS)
    assert report["train_config"]["data"]["kind"] == "synthetic"
    assert "custom (VideoMAE layout) (custom)" not in format_report(report)
