"""ONNX export of a video ViT, with everything a consumer needs in the file's metadata.

Input layout (both exports): one input ``video``, float32 ``(batch, 3, frames, height, width)``,
RGB, values scaled to [0, 1] and then normalised per channel with the ``mean`` / ``std`` the
metadata holds; the batch axis is dynamic. Outputs:

- a classifier: ``logits`` ``(batch, num_classes)`` (softmax them for scores);
- ``encoder_only``: ``tokens`` ``(batch, N, D)`` (the last block's output) and ``features``
  ``(batch, D)`` (pooled and normalised as the classifier's head sees them).

Metadata (``metadata_props``, strings; JSON where a value is a list): ``input_layout``,
``mean``, ``std``, ``num_frames``, ``sampling_rate``, ``sampling``, ``input_size``,
``short_side``, ``test_clips``, ``test_crops``, ``class_names`` (classifiers), ``model_config``
and ``outputs``. :func:`read_onnx_metadata` reads it back.

``quantize_int8`` applies onnxruntime's dynamic int8 quantisation (weights of the MatMuls stored
as int8, activations quantised on the fly).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from maskagain.checkpoints import CheckpointError
from maskagain.models.vit import VideoViT

log = logging.getLogger(__name__)

OPSET = 18
INPUT_LAYOUT = (
    "video: float32 (batch, 3, frames, height, width), RGB scaled to [0, 1], then "
    "(x - mean) / std per channel; batch is dynamic"
)
# the preprocessing keys (names of ``DataConfig`` fields) a consumer needs to build the input
PREPROCESSING_KEYS = (
    "mean",
    "std",
    "num_frames",
    "sampling_rate",
    "sampling",
    "input_size",
    "short_side",
    "test_clips",
    "test_crops",
)


class EncoderOutputs(nn.Module):
    """``video (B, C, T, H, W)`` -> ``(tokens (B, N, D), features (B, D))`` of an encoder."""

    def __init__(self, model: VideoViT) -> None:
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.model.forward_features(video).tokens
        return tokens, self.model.pool(tokens)


def export_onnx(
    model: VideoViT,
    out: str | Path,
    preprocessing: dict,
    class_names: Sequence[str] | None = None,
    encoder_only: bool = False,
) -> Path:
    """Write ``model`` (eval mode, float32, on the CPU) as ONNX to ``out`` with a dynamic batch
    axis and the metadata of the module docstring. ``preprocessing`` maps every key of
    :data:`PREPROCESSING_KEYS` to its value."""
    import onnx

    missing = [k for k in PREPROCESSING_KEYS if k not in preprocessing]
    if missing:
        raise ValueError(f"preprocessing lacks {missing}")
    if not encoder_only and not model.num_classes:
        raise ValueError("the model has no classification head; export it with encoder_only")
    cfg = model.cfg
    module = EncoderOutputs(model) if encoder_only else model
    outputs = ["tokens", "features"] if encoder_only else ["logits"]
    module = module.float().eval().cpu()
    example = torch.zeros(2, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks, the exporter's deprecation
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            input_names=["video"],
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in ["video", *outputs]},
            opset_version=OPSET,
            # TorchScript tracing: 0.7 s for a nano ViT where the torch.export-based exporter
            # takes 7 s (15 s the first time in a process); the graphs agree with PyTorch alike
            dynamo=False,
        )
    proto = onnx.load(str(tmp))
    meta = onnx_metadata(model, preprocessing, None if encoder_only else class_names, outputs)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = INPUT_LAYOUT
    onnx.save(proto, str(tmp))
    os.replace(tmp, out)
    log.info("wrote ONNX %s (%s) to %s", "encoder" if encoder_only else "classifier", outputs, out)
    return out


def onnx_metadata(
    model: VideoViT, preprocessing: dict, class_names: Sequence[str] | None, outputs: list[str]
) -> dict[str, str]:
    """The ``metadata_props`` of an export, every value a string (JSON for lists and dicts)."""
    meta = {"input_layout": INPUT_LAYOUT, "outputs": json.dumps(outputs)}
    for key in PREPROCESSING_KEYS:
        value = preprocessing[key]
        meta[key] = value if isinstance(value, str) else json.dumps(_plain(value))
    meta["model_config"] = json.dumps(model.cfg.to_dict())
    if class_names is not None:
        if len(class_names) != model.num_classes:
            raise ValueError(f"{len(class_names)} class names for {model.num_classes} classes")
        meta["class_names"] = json.dumps(list(class_names))
    return meta


def read_onnx_metadata(path: str | Path) -> dict:
    """The metadata :func:`export_onnx` wrote, JSON values decoded (``sampling`` and
    ``input_layout`` stay strings)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    out: dict = {}
    for entry in proto.metadata_props:
        try:
            out[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            out[entry.key] = entry.value
    return out


def quantize_int8(src: str | Path, out: str | Path) -> Path:
    """onnxruntime's dynamic int8 quantisation of ``src`` written to ``out`` (metadata kept)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)
    proto = onnx.load(str(tmp))
    original = onnx.load(str(src), load_external_data=False)
    del proto.metadata_props[:]
    proto.metadata_props.extend(original.metadata_props)
    proto.doc_string = original.doc_string
    onnx.save(proto, str(tmp))
    os.replace(tmp, out)
    log.info("wrote int8 (dynamic quantisation) %s", out)
    return out


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


class OnnxClassifier:
    """An exported classifier run by onnxruntime on the CPU: ``video (B, C, T, H, W)`` float32
    -> ``(B, num_classes)`` float32 logits, as a torch tensor. ``threads=0``: onnxruntime's
    choice (one per physical core)."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise CheckpointError(
                f"running {path} needs onnxruntime: pip install 'maskagain[deploy]'"
            ) from None

        self.path = str(path)
        self.metadata = read_onnx_metadata(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in self.session.get_outputs()]
        if outputs != ["logits"]:
            raise CheckpointError(
                f"{self.path} outputs {outputs}, not a classifier's logits (an --encoder-only "
                "export cannot predict classes)"
            )
        self.num_classes = int(self.session.get_outputs()[0].shape[1])

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        array = video.detach().to(torch.float32).cpu().contiguous().numpy()
        (logits,) = self.session.run(None, {"video": array})
        return torch.from_numpy(logits)
