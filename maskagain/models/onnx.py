"""ONNX export of a video ViT, with everything a consumer needs in the file's metadata.

Input layout (both exports): one input ``video``, float32 ``(batch, 3, frames, height, width)``,
RGB, values scaled to [0, 1] and then normalised per channel with the ``mean`` / ``std`` the
metadata holds; the batch axis is dynamic. Outputs:

- a classifier: ``logits`` ``(batch, num_classes)`` (softmax them for scores);
- ``encoder_only``: ``tokens`` ``(batch, N, D)`` (the last block's output) and ``features``
  ``(batch, D)`` (pooled and normalised as the classifier's head sees them).

Metadata (``metadata_props``, strings; JSON where a value is a list): ``input_layout``,
``mean``, ``std``, ``num_frames``, ``sampling_rate``, ``sampling``, ``input_size``,
``short_side``, ``test_clips``, ``test_crops``, ``class_names`` (classifiers), ``model_config``,
``outputs`` and ``graph`` (``standard`` or ``onnxruntime-fused``). :func:`read_onnx_metadata` reads it back.

Two graphs. The default uses standard ONNX operators only, so any ONNX runtime runs it.
``fused=True`` writes onnxruntime's own graph: each block's attention (q/k/v projection,
scaled dot products, softmax, weighting) as one ``com.microsoft::Attention`` node, then
onnxruntime's transformer optimizer fuses the residual adds into ``SkipLayerNormalization`` and
the MLP's bias and GELU into ``BiasGelu``; only onnxruntime runs it, faster (the metadata's
``graph`` says which). ``quantize_int8`` applies onnxruntime's dynamic int8 quantisation to a
fused graph: ``QAttention`` and ``DynamicQuantizeMatMul`` (weights stored as int8, activations
quantised on the fly); the patch embedding and the attention products stay fp32.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from maskagain.checkpoints import CheckpointError
from maskagain.models.layers import Attention
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


GRAPHS = {False: "standard", True: "onnxruntime-fused"}  # the metadata's ``graph`` value
# what the fused export writes: one per block (Attention) or per block and norm (the others)
FUSED_OPS = ("Attention", "SkipLayerNormalization", "BiasGelu")
# quantised by ``quantize_int8``: the patch embedding's ConvInteger ran slower than its fp32 Conv
INT8_OPS = ["Attention", "MatMul", "Gemm"]


class _AttentionOp(torch.autograd.Function):
    """``x (B, N, D) @ weight (D, 3D) + bias (3D)`` -> multi-head self-attention ``(B, N, D)``
    before the output projection; exported as one ``com.microsoft::Attention`` node."""

    @staticmethod
    def forward(ctx, x, weight, bias, num_heads: int, scale: float):
        b, n, d = x.shape
        qkv = (x @ weight + bias).reshape(b, n, 3, num_heads, d // num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, d_k)
        out = F.scaled_dot_product_attention(q, k, v, scale=scale)
        return out.transpose(1, 2).reshape(b, n, d)

    @staticmethod
    def symbolic(g, x, weight, bias, num_heads: int, scale: float):
        out = g.op(
            "com.microsoft::Attention", x, weight, bias, num_heads_i=num_heads, scale_f=scale
        )
        out.setType(x.type())  # (B, N, D), as the input: the exporter cannot infer it
        return out


class FusedAttention(nn.Module):
    """An :class:`Attention` with the same numbers whose ONNX export is onnxruntime's fused
    ``Attention`` operator (packed q/k/v weight ``(D, 3D)``, a zero k bias, constant scale)."""

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        dim = attn.qkv.weight.shape[1]
        self.num_heads, self.scale, self.proj = attn.num_heads, attn.scale, attn.proj
        bias = torch.zeros(3 * dim)
        if attn.q_bias is not None:
            bias = torch.cat((attn.q_bias, torch.zeros_like(attn.v_bias), attn.v_bias))
        self.register_buffer("qkv_weight", attn.qkv.weight.detach().t().contiguous())
        self.register_buffer("qkv_bias", bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, D)."""
        out = _AttentionOp.apply(x, self.qkv_weight, self.qkv_bias, self.num_heads, self.scale)
        return self.proj(out)


def with_fused_attention(model: VideoViT) -> VideoViT:
    """A copy of ``model`` whose blocks' attention exports as onnxruntime's fused operator."""
    fused = copy.deepcopy(model)
    for i, block in enumerate(fused.blocks):
        if not isinstance(block.attn, Attention):
            raise ValueError(f"block {i} has {type(block.attn).__name__}, not Attention")
        block.attn = FusedAttention(block.attn)
    return fused


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
    fused: bool = False,
) -> Path:
    """Write ``model`` (eval mode, float32, on the CPU) as ONNX to ``out`` with a dynamic batch
    axis and the metadata of the module docstring. ``preprocessing`` maps every key of
    :data:`PREPROCESSING_KEYS` to its value; ``fused``: onnxruntime's fused graph."""
    import onnx

    missing = [k for k in PREPROCESSING_KEYS if k not in preprocessing]
    if missing:
        raise ValueError(f"preprocessing lacks {missing}")
    if not encoder_only and not model.num_classes:
        raise ValueError("the model has no classification head; export it with encoder_only")
    cfg = model.cfg
    module = with_fused_attention(model) if fused else model
    module = EncoderOutputs(module) if encoder_only else module
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
    if fused:
        optimize_for_onnxruntime(tmp, cfg.num_heads, cfg.embed_dim, cfg.depth)
    proto = onnx.load(str(tmp))
    meta = onnx_metadata(model, preprocessing, None if encoder_only else class_names, outputs)
    meta["graph"] = GRAPHS[fused]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = INPUT_LAYOUT
    onnx.save(proto, str(tmp))
    os.replace(tmp, out)
    log.info("wrote ONNX %s (%s) to %s", "encoder" if encoder_only else "classifier", outputs, out)
    return out


def optimize_for_onnxruntime(path: Path, num_heads: int, hidden_size: int, depth: int) -> None:
    """Run onnxruntime's transformer optimizer on ``path`` in place (:data:`FUSED_OPS`); raises
    unless every block's attention is one ``Attention`` node."""
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level 0: the operator fusions only; onnxruntime's own graph optimisations run when a
    # session opens the file (they depend on the machine)
    optimized = optimize_model(
        str(path), model_type="vit", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
    )
    optimized.save_model_to_file(str(path))
    counts = op_counts(path)
    log.info("onnxruntime fusions: %s", {op: counts[op] for op in FUSED_OPS})
    if counts["Attention"] != depth:
        raise RuntimeError(f"the fused export of {depth} blocks has {dict(counts)}")


def op_counts(path: str | Path) -> Counter:
    """How many nodes of each operator type the graph at ``path`` holds."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return Counter(node.op_type for node in graph.node)


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


def quantize_int8(src: str | Path, out: str | Path, products: bool = False) -> Path:
    """onnxruntime's dynamic int8 quantisation of ``src`` (best a fused export) written to
    ``out``, metadata kept: the :data:`INT8_OPS` nodes get int8 weights. ``products`` (for a
    standard graph): the attention products too, both operands quantised on the fly."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    hint = _DropLogLine("pre-processing before quantization")  # meant for static quantisation
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(
            str(src),
            str(tmp),
            op_types_to_quantize=INT8_OPS,
            weight_type=QuantType.QInt8,
            # shape inference cannot type the outputs of onnxruntime's own operators
            extra_options={
                "DefaultTensorType": onnx.TensorProto.FLOAT,
                "MatMulConstBOnly": not products,
            },
        )
    finally:
        logging.getLogger().removeFilter(hint)
    proto = onnx.load(str(tmp))
    original = onnx.load(str(src), load_external_data=False)
    del proto.metadata_props[:]
    proto.metadata_props.extend(original.metadata_props)
    proto.doc_string = original.doc_string
    onnx.save(proto, str(tmp))
    os.replace(tmp, out)
    log.info("wrote int8 (dynamic quantisation) %s", out)
    return out


class _DropLogLine(logging.Filter):
    """Drops the log records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


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
