"""Export to Hugging Face transformers and to the official VideoMAE layout, and back."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest
import torch
import yaml

from maskagain.cli import export as export_cmd
from maskagain.cli.main import SUBCOMMANDS
from maskagain.constants import IMAGENET_MEAN, IMAGENET_STD
from maskagain.masking import tube_mask
from maskagain.models import CheckpointError, create_model, load_encoder, save_encoder
from maskagain.models.export import export_hf, export_videomae, hf_layout, official_to_hf
from maskagain.models.formats.videomae import hf_to_official
from maskagain.recipes.export import export_checkpoint, read_class_names

TOL = 1e-4
CLASSES = ["archery", "bowling", "cooking", "dancing", "eating"]
STUDENT_MEAN, STUDENT_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every parameter (LayerNorms, biases and the 0.001-scaled head included) so a
    swapped or dropped tensor shows in the outputs."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (1.0 if name.startswith("head.") else 0.1))
    return model.eval()


@pytest.fixture
def video() -> torch.Tensor:
    return torch.randn(2, 3, 4, 32, 32)  # (B, C, T, H, W)


@pytest.fixture
def student(tiny_kwargs, tmp_path):
    """A tiny distilled student in a run directory whose config.yaml holds the normalisation."""
    model = _randomise(create_model("vit_nano", **tiny_kwargs))
    run = tmp_path / "distill_run"
    save_encoder(model, run / "student.safetensors", extra={"recipe": "distill"})
    data = {"mean": list(STUDENT_MEAN), "std": list(STUDENT_STD)}
    (run / "config.yaml").write_text(yaml.safe_dump({"data": data}))
    return model, run


def _classifier(tiny_kwargs, fc_norm_eps: float | None = 1e-5):
    model = create_model(
        "vit_nano",
        **tiny_kwargs,
        num_classes=len(CLASSES),
        fc_norm=True,
        final_norm=False,
        fc_norm_eps=fc_norm_eps,
    )
    return _randomise(model)


@pytest.fixture
def classifier(tiny_kwargs, tmp_path):
    """A tiny fine-tuned classifier whose file carries class names and normalisation."""
    model = _classifier(tiny_kwargs)
    path = tmp_path / "finetune_run" / "student.safetensors"
    extra = {"class_names": CLASSES, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    save_encoder(model, path, extra=extra)
    return model, path


@pytest.fixture
def transformers_logs(caplog):
    """transformers' warnings routed to caplog (it does not propagate by default)."""
    transformers = pytest.importorskip("transformers")
    tlog = transformers.utils.logging
    tlog.enable_propagation()
    tlog.disable_default_handler()
    caplog.set_level(logging.WARNING)
    yield transformers, caplog
    tlog.enable_default_handler()
    tlog.disable_propagation()


def _load_hf(cls, path: Path, caplog):
    caplog.clear()
    model, info = cls.from_pretrained(path, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set(), info
    assert info["mismatched_keys"] == set() and not info["error_msgs"], info
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not warnings, warnings
    return model.eval()


# ----------------------------------------------------------------------------- Hugging Face
@pytest.mark.slow
def test_student_exports_to_videomae_model(student, video, tmp_path, transformers_logs):
    transformers, caplog = transformers_logs
    model, run = student
    out = export_checkpoint(run, tmp_path / "hf", "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["VideoMAEModel"] and config["use_mean_pooling"] is False
    hf = _load_hf(transformers.VideoMAEModel, out, caplog)
    mask = tube_mask(2, model.cfg.grid, 0.75)
    with torch.no_grad():
        ours = model.forward_features(video, mask).tokens  # (B, N_vis, D)
        theirs = hf(video.transpose(1, 2), bool_masked_pos=mask, output_hidden_states=True)
    assert theirs.hidden_states[-1].shape == ours.shape == (2, 8, 64)
    torch.testing.assert_close(theirs.hidden_states[-1], ours, atol=TOL, rtol=0)
    # last_hidden_state is after HF's final layernorm = our norm
    torch.testing.assert_close(theirs.last_hidden_state, model.norm(ours), atol=TOL, rtol=0)


def test_classifier_exports_to_video_classification(classifier, video, tmp_path, transformers_logs):
    transformers, caplog = transformers_logs
    model, path = classifier
    out = export_checkpoint(path, tmp_path / "hf", "hf")
    hf = _load_hf(transformers.VideoMAEForVideoClassification, out, caplog)
    assert hf.config.id2label == dict(enumerate(CLASSES))
    assert hf.config.label2id == {n: i for i, n in enumerate(CLASSES)}
    with torch.no_grad():
        feats = model.forward_features(video)
        logits = model.forward_head(feats.tokens)
        theirs = hf(video.transpose(1, 2), output_hidden_states=True)
    assert logits.abs().max() > 1.0  # the randomised head gives logits far from zero
    torch.testing.assert_close(theirs.hidden_states[-1], feats.tokens, atol=TOL, rtol=0)
    torch.testing.assert_close(theirs.logits, logits, atol=TOL, rtol=0)


def test_processor_configs_carry_training_normalisation(student, tmp_path, transformers_logs):
    transformers, _ = transformers_logs
    _, run = student
    out = export_checkpoint(run, tmp_path / "hf", "hf")
    for cls in (transformers.VideoMAEImageProcessor, transformers.VideoMAEVideoProcessor):
        proc = cls.from_pretrained(out)
        assert type(proc).__name__ == cls.__name__
        assert list(proc.image_mean) == pytest.approx(STUDENT_MEAN)
        assert list(proc.image_std) == pytest.approx(STUDENT_STD)
    proc = transformers.AutoImageProcessor.from_pretrained(out)
    assert list(proc.image_mean) == pytest.approx(STUDENT_MEAN)
    # the processor's output is what our model expects: frames scaled to [0, 1], normalised
    frames = [torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8) for _ in range(4)]
    pixels = proc(frames, return_tensors="pt")["pixel_values"]  # (1, T, C, H, W)
    ref = (torch.stack(frames).float() / 255 - torch.tensor(STUDENT_MEAN)[:, None, None]) / (
        torch.tensor(STUDENT_STD)[:, None, None]
    )
    torch.testing.assert_close(pixels[0], ref, atol=1e-4, rtol=0)


def test_imagenet_normalisation_when_nothing_is_recorded(tiny_kwargs, tmp_path):
    path = save_encoder(
        _randomise(create_model("vit_nano", **tiny_kwargs)), tmp_path / "s.safetensors"
    )
    out = export_checkpoint(path, tmp_path / "hf", "hf")
    proc = json.loads((out / "preprocessor_config.json").read_text())
    assert proc["image_mean"] == list(IMAGENET_MEAN) and proc["image_std"] == list(IMAGENET_STD)
    assert proc["image_processor_type"] == "VideoMAEImageProcessor"
    assert proc["crop_size"] == {"height": 32, "width": 32}


def test_fc_norm_eps_mismatch_is_small_and_reported(tiny_kwargs, video, tmp_path, caplog):
    """A classifier trained with fc_norm eps 1e-6 (VideoMAE's) against transformers' 1e-5:
    the export says so, the tokens are exact and the logits drift by a bounded, small amount."""
    transformers = pytest.importorskip("transformers")
    model = _classifier(tiny_kwargs, fc_norm_eps=None)  # None -> norm_eps = 1e-6
    path = save_encoder(model, tmp_path / "run" / "student.safetensors")
    with caplog.at_level(logging.INFO, logger="maskagain"):
        out = export_checkpoint(path, tmp_path / "hf", "hf", class_names=CLASSES)
    assert any("fc_norm eps is 1e-06" in r.getMessage() for r in caplog.records)
    hf = transformers.VideoMAEForVideoClassification.from_pretrained(out).eval()
    with torch.no_grad():
        logits = model(video)
        drift = (hf(video.transpose(1, 2)).logits - logits).abs().max()
    assert drift < 1e-3 * logits.abs().max()


def test_hf_round_trip_gives_the_same_features(student, classifier, video, tmp_path):
    """maskagain -> HF -> maskagain: same tokens (masked too), same normed tokens, same logits.
    (A headless encoder comes back with the loader's pooling for ``use_mean_pooling=False``,
    so only the features, not ``pool``, are compared for the student.)"""
    for i, (model, source) in enumerate((student, classifier)):
        out = export_checkpoint(source, tmp_path / f"hf{i}", "hf")
        back = load_encoder(out).eval()
        assert back.cfg.grid == model.cfg.grid and back.cfg.num_classes == model.cfg.num_classes
        mask = tube_mask(2, model.cfg.grid, 0.5)
        with torch.no_grad():
            tokens = model.forward_features(video, mask).tokens
            torch.testing.assert_close(back.forward_features(video, mask).tokens, tokens)
            torch.testing.assert_close(back.norm(tokens), model.norm(tokens))
            if model.cfg.num_classes:
                torch.testing.assert_close(back(video), model(video))


def test_hf_keys_invert_the_loader_mapping(classifier):
    model, _ = classifier
    sd = model.state_dict()
    hf = official_to_hf(sd, prefix="videomae.")
    assert "videomae.encoder.layer.0.attention.attention.q_bias" in hf
    assert "classifier.weight" in hf and "fc_norm.weight" in hf
    back = hf_to_official(hf)
    assert sorted(back) == sorted(sd)
    for k, v in sd.items():
        assert torch.equal(back[k], v), k


def test_hf_refuses_what_transformers_cannot_express(tiny_kwargs, tmp_path):
    scaled = create_model("vit_nano", **tiny_kwargs, init_values=0.1)
    with pytest.raises(CheckpointError, match="layer scale"):
        hf_layout(scaled.cfg)
    path = save_encoder(scaled, tmp_path / "ls" / "student.safetensors")
    with pytest.raises(CheckpointError, match="layer scale"):
        export_checkpoint(path, tmp_path / "hf", "hf")
    assert not (tmp_path / "hf").exists()
    mean_no_fc = create_model("vit_nano", **tiny_kwargs, num_classes=3)  # final norm + mean pool
    with pytest.raises(CheckpointError, match="pooling='mean'"):
        hf_layout(mean_no_fc.cfg)
    both = create_model("vit_nano", **tiny_kwargs, num_classes=3, fc_norm=True)
    with pytest.raises(CheckpointError, match="both a final norm and fc_norm"):
        hf_layout(both.cfg)
    probe_ready = create_model("vit_nano", **tiny_kwargs, fc_norm=True, final_norm=False)
    with pytest.raises(CheckpointError, match="fc_norm but no head"):
        hf_layout(probe_ready.cfg)
    bare = create_model("vit_nano", **tiny_kwargs, final_norm=False)
    assert hf_layout(bare.cfg).use_mean_pooling is True  # VideoMAEModel without layernorm


def test_first_token_classifier_exports_exactly(tiny_kwargs, video, tmp_path, transformers_logs):
    """The other classifier transformers has: final norm, first token, no fc_norm."""
    transformers, caplog = transformers_logs
    model = _randomise(create_model("vit_nano", **tiny_kwargs, num_classes=3, pooling="first"))
    assert hf_layout(model.cfg).use_mean_pooling is False
    out = export_hf(model, tmp_path / "hf", ["a", "b", "c"])
    hf = _load_hf(transformers.AutoModelForVideoClassification, out, caplog)
    assert type(hf).__name__ == "VideoMAEForVideoClassification" and hf.fc_norm is None
    with torch.no_grad():
        torch.testing.assert_close(hf(video.transpose(1, 2)).logits, model(video), atol=TOL, rtol=0)
        back = load_encoder(out).eval()
        torch.testing.assert_close(back(video), model(video))


# ----------------------------------------------------------------------------- official layout
def test_official_round_trip_student(student, video, tmp_path):
    model, run = student
    pth = export_checkpoint(run, tmp_path / "student.pth", "videomae")
    ckpt = torch.load(pth, weights_only=True)
    assert list(ckpt) == ["model"]
    assert all(k.startswith("encoder.") for k in ckpt["model"])
    assert "encoder.blocks.1.attn.qkv.weight" in ckpt["model"]
    back = load_encoder(pth, img_size=32, num_frames=4).eval()
    mask = tube_mask(2, model.cfg.grid, 0.75)
    with torch.no_grad():
        torch.testing.assert_close(
            back.forward_features(video, mask).tokens, model.forward_features(video, mask).tokens
        )
        torch.testing.assert_close(back(video), model(video))


def test_official_round_trip_classifier(tiny_kwargs, video, tmp_path):
    model = _classifier(tiny_kwargs, fc_norm_eps=None)  # official fc_norm eps: 1e-6
    pth = export_videomae(model, tmp_path / "finetuned.pth")
    sd = torch.load(pth, weights_only=True)["model"]
    assert {"head.weight", "fc_norm.weight", "blocks.0.attn.q_bias"} <= set(sd)
    assert not any(k.startswith(("encoder.", "norm.")) for k in sd)
    back = load_encoder(pth, img_size=32, num_frames=4).eval()
    assert back.cfg.num_classes == len(CLASSES)
    with torch.no_grad():
        torch.testing.assert_close(back(video), model(video))


# ----------------------------------------------------------------------------- not a student
def test_corrupt_and_optimizer_only_files_fail_clearly(tiny_kwargs, tmp_path):
    full = tmp_path / "full.pth"
    torch.save({"model": create_model("vit_nano", **tiny_kwargs).state_dict()}, full)
    truncated_pth = tmp_path / "truncated.pth"
    truncated_pth.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    junk = tmp_path / "junk.pth"
    junk.write_text("this is a README, not weights\n" * 20)
    for corrupt in (truncated_pth, junk):
        with pytest.raises(CheckpointError, match="cannot read"):
            export_checkpoint(corrupt, tmp_path / "out", "hf")
    optim = tmp_path / "optimizer.pth"
    state = {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-3}]}
    torch.save({"optimizer": state, "epoch": 3}, optim)
    with pytest.raises(CheckpointError, match="optimizer-only"):
        export_checkpoint(optim, tmp_path / "out", "videomae")
    truncated = tmp_path / "student.safetensors"
    truncated.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(CheckpointError, match="safetensors"):
        export_checkpoint(truncated, tmp_path / "out", "hf")
    assert not (tmp_path / "out").exists()


def _cli(argv: list[str]) -> int:
    """Run ``maskagain export`` the way ``maskagain.cli.main`` does (parser from the module)."""
    assert SUBCOMMANDS["export"] == "export"
    parser = argparse.ArgumentParser(prog="maskagain export")
    export_cmd.add_arguments(parser)
    return export_cmd.run(parser.parse_args(argv))


def test_cli_export_errors_are_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "optimizer.pth"
    torch.save({"optimizer": {"state": {}, "param_groups": []}}, bad)
    code = _cli(["--checkpoint", str(bad), "--format", "hf", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "optimizer-only" in err and err.startswith("error:")


def test_cli_export_hf_and_videomae(classifier, tmp_path, capsys):
    _, path = classifier
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(n.upper() for n in CLASSES) + "\n")
    argv = ["--checkpoint", str(path), "--format", "hf", "--out", str(tmp_path / "hf")]
    assert _cli([*argv, "--class-names", str(names)]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["id2label"]["4"] == "EATING"
    argv = ["--checkpoint", str(path), "--format", "videomae"]
    assert _cli([*argv, "--out", str(tmp_path / "ft.pth")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "ft.pth").is_file()


# ----------------------------------------------------------------------------- class names
def test_class_names_found_next_to_the_weights(tiny_kwargs, tmp_path):
    model = _classifier(tiny_kwargs)
    run = tmp_path / "run"
    save_encoder(model, run / "student.safetensors")
    (run / "class_index.json").write_text(json.dumps({n: i for i, n in enumerate(CLASSES)}))
    out = export_checkpoint(run, tmp_path / "hf", "hf")
    assert json.loads((out / "config.json").read_text())["id2label"]["1"] == "bowling"


def test_class_names_from_the_training_config(tiny_kwargs, tmp_path):
    model = _classifier(tiny_kwargs)
    run = tmp_path / "run"
    save_encoder(model, run / "student.safetensors")
    (tmp_path / "labels.txt").write_text("\n".join(CLASSES))
    index = str(tmp_path / "labels.txt")
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"class_index": index}}))
    out = export_checkpoint(run, tmp_path / "hf", "hf")
    assert json.loads((out / "config.json").read_text())["id2label"]["2"] == "cooking"


def test_wrong_number_of_class_names_is_refused(classifier, tmp_path):
    _, path = classifier
    with pytest.raises(CheckpointError, match="3 class names .* 5 classes"):
        export_checkpoint(path, tmp_path / "hf", "hf", class_names=["a", "b", "c"])


def test_read_class_names_formats(tmp_path):
    as_list = tmp_path / "a.json"
    as_list.write_text(json.dumps(CLASSES))
    by_index = tmp_path / "b.json"
    by_index.write_text(json.dumps({str(i): n for i, n in reversed(list(enumerate(CLASSES)))}))
    lines = tmp_path / "c.txt"
    lines.write_text("\n".join(CLASSES) + "\n\n")
    for path in (as_list, by_index, lines):
        assert read_class_names(path) == CLASSES
    gap = tmp_path / "d.json"
    gap.write_text(json.dumps({"0": "a", "2": "c"}))
    with pytest.raises(CheckpointError, match="not 0..1"):
        read_class_names(gap)


def test_finetune_run_directory_layout(tiny_kwargs, tmp_path, monkeypatch):
    """What the fine-tuning recipe leaves: model.safetensors (recipe/step metadata only) and a
    config.yaml naming the class file (relative to where training ran) and the normalisation."""
    model = _classifier(tiny_kwargs)
    run = tmp_path / "runs" / "ft"
    save_encoder(model, run / "model.safetensors", extra={"recipe": "finetune", "step": 10})
    (tmp_path / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    config = {"class_names": "labels.txt", "data": {"mean": [0.4] * 3, "std": [0.3] * 3}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    out = export_checkpoint(run, tmp_path / "hf", "hf")
    assert json.loads((out / "config.json").read_text())["id2label"]["3"] == "dancing"
    proc = json.loads((out / "preprocessor_config.json").read_text())
    assert proc["image_mean"] == [0.4] * 3 and proc["image_std"] == [0.3] * 3


def test_out_paths_that_would_clobber_are_refused(classifier, tmp_path):
    model, path = classifier
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="not a previous Hugging Face export"):
        export_checkpoint(path, path.parent, "hf")  # into the run directory itself
    assert path.read_bytes() == before
    out = export_checkpoint(path, tmp_path / "hf", "hf")
    assert export_checkpoint(path, out, "hf") == out  # re-exporting over an export is fine
    with pytest.raises(CheckpointError, match="is a directory"):
        export_videomae(model, tmp_path)
    with pytest.raises(CheckpointError, match="is a file"):
        export_checkpoint(path, path, "hf")


def test_training_checkpoint_gets_a_hint(tiny_kwargs, tmp_path):
    student = create_model("vit_nano", **tiny_kwargs).state_dict()
    wrapped = {f"student.{k}": v for k, v in student.items()}
    ckpt = tmp_path / "checkpoints" / "ckpt_step00000100.pt"
    ckpt.parent.mkdir()
    torch.save({"model": wrapped, "optimizer": {}, "step": 100}, ckpt)
    with pytest.raises(CheckpointError, match="training checkpoint.*export the run directory"):
        export_checkpoint(ckpt, tmp_path / "hf", "hf")


def test_official_pth_to_hf_needs_and_uses_the_input_size(
    student, video, tmp_path, transformers_logs
):
    transformers, caplog = transformers_logs
    model, _ = student
    pth = export_videomae(model, tmp_path / "pretrain.pth")
    with caplog.at_level(logging.WARNING, logger="maskagain"):
        export_checkpoint(pth, tmp_path / "guessed", "hf")
    assert any("does not record its input size" in r.getMessage() for r in caplog.records)
    argv = ["--checkpoint", str(pth), "--format", "hf", "--out", str(tmp_path / "hf")]
    assert _cli([*argv, "--img-size", "32", "--num-frames", "4"]) == 0
    hf = _load_hf(transformers.VideoMAEModel, tmp_path / "hf", caplog)
    with torch.no_grad():
        theirs = hf(video.transpose(1, 2), output_hidden_states=True).hidden_states[-1]
        torch.testing.assert_close(theirs, model.forward_features(video).tokens, atol=TOL, rtol=0)
