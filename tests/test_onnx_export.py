"""``maskagain export --format onnx``: onnxruntime against PyTorch (standard and fused graphs),
the metadata a consumer needs, the encoder alone, int8, and ``predict`` through the ONNX file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from maskagain.cli.main import main
from maskagain.models import create_model
from maskagain.models.loading import load_encoder
from maskagain.models.onnx import export_onnx, op_counts, read_onnx_metadata
from tests._classifier_run import CLASSES, labelled_run, write_videos


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return write_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, videos: Path) -> Path:
    return labelled_run(tmp_path_factory, videos, seed=1)


@pytest.fixture(scope="module")
def exported(run_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    args = ["export", "--format", "onnx", "--checkpoint", str(run_dir), "--out", str(out)]
    assert main([*args, "--quantize", "int8"]) == 0
    return out


@pytest.fixture(scope="module")
def fused(run_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "fused.onnx"
    args = ["export", "--format", "onnx", "--optimize", "--checkpoint", str(run_dir)]
    assert main([*args, "--out", str(out)]) == 0
    return out


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("graph", ["exported", "fused"])
def test_onnx_equals_pytorch_at_two_batch_sizes(graph: str, run_dir: Path, request) -> None:
    model = load_encoder(run_dir / "model.safetensors").eval()
    session = _session(request.getfixturevalue(graph))
    for batch in (1, 5):
        video = torch.randn(batch, 3, 4, 32, 32)
        (logits,) = session.run(None, {"video": video.numpy()})
        with torch.no_grad():
            expected = model(video).numpy()
        assert logits.shape == (batch, 3)
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_fused_graph_equals_pytorch_with_attention_biases(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("vit_nano", num_classes=5, img_size=32, num_frames=4, patch_size=8)
    with torch.no_grad():  # q and v biases (the k bias is zero) and a head far from zero
        for block in model.blocks:
            block.attn.q_bias.normal_(0, 0.5)
            block.attn.v_bias.normal_(0, 0.5)
        model.head.weight.normal_(0, 0.5)
    prep = dict(mean=[0.5] * 3, std=[0.25] * 3, num_frames=4, sampling_rate=2, sampling="dense")
    prep.update(input_size=32, short_side=36, test_clips=1, test_crops=1)
    session = _session(export_onnx(model.eval(), tmp_path / "m.onnx", prep, None, fused=True))
    for batch in (1, 5):
        video = torch.randn(batch, 3, 4, 32, 32)
        (logits,) = session.run(None, {"video": video.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(logits, model(video).numpy(), atol=1e-4, rtol=0)


def test_fused_graph_has_one_attention_node_per_block(fused, exported, run_dir) -> None:
    depth = load_encoder(run_dir / "model.safetensors").depth
    counts = op_counts(fused)
    assert counts["Attention"] == depth and counts["Softmax"] == 0, counts
    assert counts["BiasGelu"] == depth and counts["SkipLayerNormalization"] == 2 * depth
    int8 = op_counts(exported.with_name("model.int8.onnx"))
    assert int8["QAttention"] == depth and int8["Attention"] == 0, int8
    assert int8["MatMulInteger"] == 3 * depth + 1 and int8["ConvInteger"] == 0, int8
    assert op_counts(exported)["Softmax"] == depth  # the standard graph: plain operators
    assert read_onnx_metadata(fused)["graph"] == "onnxruntime-fused"
    assert read_onnx_metadata(exported)["graph"] == "standard"


def test_metadata_holds_preprocessing_and_class_names(exported: Path) -> None:
    meta = read_onnx_metadata(exported)
    assert meta["class_names"] == CLASSES
    assert meta["num_frames"] == 4 and meta["sampling_rate"] == 2 and meta["input_size"] == 32
    assert meta["short_side"] == 36 and (meta["test_clips"], meta["test_crops"]) == (2, 2)
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["sampling"] == "dense"
    assert "(batch, 3, frames, height, width)" in meta["input_layout"]
    assert meta["outputs"] == ["logits"]


def test_encoder_only_outputs_tokens_and_features(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "encoder.onnx"
    args = ["export", "--format", "onnx", "--encoder-only", "--checkpoint", str(run_dir)]
    assert main([*args, "--out", str(out)]) == 0
    model = load_encoder(run_dir / "model.safetensors").eval()
    video = torch.randn(2, 3, 4, 32, 32)
    tokens, features = _session(out).run(None, {"video": video.numpy()})
    with torch.no_grad():
        expected = model.forward_features(video).tokens
        pooled = model.pool(expected)
    np.testing.assert_allclose(tokens, expected.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(features, pooled.numpy(), atol=1e-4, rtol=0)
    assert tokens.shape == (2, 32, 64) and "class_names" not in read_onnx_metadata(out)


def _predict(source: Path, videos: Path, out: Path) -> list[dict]:
    args = ["predict", "--checkpoint", str(source), "--no-progress", "--top-k", "3"]
    assert main([*args, "--out", str(out), str(videos / "test.txt")]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("graph", ["exported", "fused"])
def test_predict_through_onnx_gives_the_same_labels(graph, run_dir, videos, tmp_path, request):
    torch_rows = _predict(run_dir, videos, tmp_path / "torch.jsonl")
    onnx_rows = _predict(request.getfixturevalue(graph), videos, tmp_path / "onnx.jsonl")
    assert [r["labels"] for r in onnx_rows] == [r["labels"] for r in torch_rows]
    for a, b in zip(onnx_rows, torch_rows):
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)


@pytest.mark.slow
def test_int8_keeps_the_top1_on_a_tiny_set(exported, run_dir, videos, tmp_path):
    int8 = exported.with_name("model.int8.onnx")
    assert read_onnx_metadata(int8)["class_names"] == CLASSES
    fp32_rows = _predict(exported, videos, tmp_path / "fp32.jsonl")
    int8_rows = _predict(int8, videos, tmp_path / "int8.jsonl")
    agree = sum(a["labels"][0] == b["labels"][0] for a, b in zip(int8_rows, fp32_rows))
    assert agree >= len(fp32_rows) - 1, f"int8 changed {len(fp32_rows) - agree} top-1 labels"
    for a, b in zip(int8_rows, fp32_rows):
        np.testing.assert_allclose(sorted(a["scores"]), sorted(b["scores"]), atol=0.05)


def test_int8_products_quantises_the_attention_products(run_dir, videos, tmp_path, exported):
    out = tmp_path / "model.onnx"
    args = ["export", "--format", "onnx", "--optimize", "--quantize", "int8-products"]
    assert main([*args, "--checkpoint", str(run_dir), "--out", str(out)]) == 0
    depth = load_encoder(run_dir / "model.safetensors").depth
    counts = op_counts(out.with_name("model.int8.onnx"))  # 4 linears + 2 products a block, head
    assert counts["MatMulInteger"] == 6 * depth + 1 and counts["MatMul"] == 0, counts
    fp32_rows = _predict(exported, videos, tmp_path / "fp32.jsonl")
    int8_rows = _predict(out.with_name("model.int8.onnx"), videos, tmp_path / "int8.jsonl")
    agree = sum(a["labels"][0] == b["labels"][0] for a, b in zip(int8_rows, fp32_rows))
    assert agree >= len(fp32_rows) - 1, f"int8 changed {len(fp32_rows) - agree} top-1 labels"


def test_export_onnx_refuses_encoder_options_for_other_formats(run_dir, tmp_path, capsys):
    args = ["export", "--format", "hf", "--checkpoint", str(run_dir), "--out", str(tmp_path / "x")]
    assert main([*args, "--encoder-only"]) == 2
    assert "--format onnx" in capsys.readouterr().err


def test_predict_refuses_an_encoder_only_export_in_one_line(run_dir, videos, tmp_path, capsys):
    out = tmp_path / "encoder.onnx"
    args = ["export", "--format", "onnx", "--encoder-only", "--checkpoint", str(run_dir)]
    assert main([*args, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(out), str(videos / "still")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a classifier's logits" in err[0]
