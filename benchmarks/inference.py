"""What a student costs to run: clips/s, peak memory and the accuracy change of each path.

    python -m benchmarks.inference [--device cpu] [--student RUN_DIR] [--json out.json]
    python -m benchmarks.inference --tiny          # nano models, seconds (the test suite)

Speed rows (random weights, 400-class head): ViT-S and ViT-B at 16 x 224 x 224 (``--tiny``: a
nano ViT at 4 x 32 x 32), each through every path: PyTorch eager fp32, PyTorch eager with
dynamic int8 linear layers (``eager_int8``), ``torch.compile`` (inductor, weights frozen),
onnxruntime fp32 (standard operators, ``export --format onnx``), onnxruntime's fused graph
(``export --optimize``) and its dynamic int8 quantisation (``export --quantize int8``), and
the standard graph with every matrix product in dynamic int8, the attention products included
(``ort_int8_products``, a benchmark row only); on
CUDA eager fp32, eager bf16 autocast and ``torch.compile`` (onnxruntime runs on the CPU only).
Timings alternate: round after round, every path runs one batch in turn, so load from other
jobs falls on all paths alike; clips/s is the batch over the median wall seconds. Each row also
gives the process's CPU seconds a clip: with ``--threads 1 --cpu-time`` the ratios come from
them, and hold on a busy machine. GFLOP/s counts the matrix products of a clip. Peak memory:
the peak RSS of a child process that builds one path and runs one batch (CPU; it includes the
~0.4 GB Python and torch runtime), ``torch.cuda.max_memory_allocated`` on CUDA.

Ceiling (``--ceiling``): plain fp32 and int8 GEMMs and the fp32 attention products at the first
model's shapes, and the batch-1 speed-up over fp32 that int8 allows at those kernel rates.

Accuracy rows (``--student``): a fine-tuned run directory tested on its own test set with the
views of its config, through every path; the change is against eager fp32, in points.

Predict row (``--predict-videos N``): ``maskagain predict``'s machinery on N real H.264 files
this script writes, with the ViT-S through the fastest path: the clips/s of the whole run
(decoding in worker processes) as a share of the model's own clips/s in that run.
``--predict-path PATH`` times only that row, through PATH.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.flops import block_macs
from maskagain.models import create_model
from maskagain.models.onnx import OPSET, OnnxClassifier, export_onnx, quantize_int8

CPU_PATHS = ("eager_fp32", "eager_int8", "compile", "ort_fp32", "ort_fused", "ort_int8",
             "ort_int8_products")  # fmt: skip
CUDA_PATHS = ("eager_fp32", "eager_bf16", "compile")
FULL = {"vit_s": dict(name="vit_small"), "vit_b": dict(name="vit_base")}
FULL_GEOMETRY = dict(num_frames=16, img_size=224, patch_size=16, tubelet_size=2)
TINY = {"nano": dict(name="vit_nano")}
TINY_GEOMETRY = dict(num_frames=4, img_size=32, patch_size=8, tubelet_size=2)


def build_model(spec: dict, geometry: dict, num_classes: int = 400) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(spec["name"], num_classes=num_classes, **geometry).eval()


def preprocessing_of(model) -> dict:
    """Preprocessing metadata for an export (DataConfig defaults at the model's geometry)."""
    from maskagain.data.config import DataConfig

    d = DataConfig(num_frames=model.cfg.num_frames, input_size=model.cfg.img_size)
    keys = ("mean", "std", "num_frames", "sampling_rate", "sampling", "input_size")
    out = {k: getattr(d, k) for k in keys}
    return {**out, "short_side": d.input_size, "test_clips": 1, "test_crops": 1}


def build_path(model, path: str, device: str, workdir: Path) -> Callable:
    """A callable ``video (B, C, T, H, W) -> logits`` running ``model`` through ``path``."""
    if path.startswith("ort_"):
        return OnnxClassifier(onnx_file(model, path, workdir), threads=torch.get_num_threads())
    model = torch_int8(model) if path == "eager_int8" else model.to(device)
    if path == "compile":
        torch._inductor.config.freezing = True  # weights folded in as constants (inference)
    net = torch.compile(model, dynamic=False) if path == "compile" else model
    dtype = torch.bfloat16 if path == "eager_bf16" else None

    @torch.inference_mode()
    def run(video: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            return net(video.to(device)).float()

    return run


class _LinearQKV(torch.nn.Module):
    """A VideoMAE attention block whose q/k/v projection is an ``nn.Linear`` (biases packed, the
    k bias zero), so that dynamic quantisation reaches it; the products run in SDPA."""

    def __init__(self, attn) -> None:
        super().__init__()
        dim = attn.qkv.weight.shape[1]
        self.num_heads, self.proj = attn.num_heads, attn.proj
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        with torch.no_grad():
            self.qkv.weight.copy_(attn.qkv.weight)
            zero = torch.zeros(dim)
            q_bias, v_bias = (zero, zero) if attn.q_bias is None else (attn.q_bias, attn.v_bias)
            self.qkv.bias.copy_(torch.cat((q_bias, zero, v_bias)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, d_k)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


def torch_int8(model) -> torch.nn.Module:
    """A copy of ``model`` (CPU) with PyTorch's dynamic int8 ``Linear`` layers (fbgemm: int8
    weights, activations quantised on the fly), the q/k/v projections included."""
    model = copy.deepcopy(model).cpu()
    for block in model.blocks:
        block.attn = _LinearQKV(block.attn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the torch.ao deprecation notice
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, torch.qint8)


def onnx_file(model, path: str, workdir: Path) -> Path:
    """The export ``path`` runs: standard operators (``ort_fp32``), onnxruntime's fused graph
    (``ort_fused``), its dynamic int8 quantisation (``ort_int8``), or the standard graph with
    every matrix product in dynamic int8, attention products included (``ort_int8_products``);
    written once per model."""
    fused = path in ("ort_fused", "ort_int8")
    file = workdir / f"model_{id(model)}{'_fused' if fused else ''}.onnx"
    if not file.is_file():
        export_onnx(model, file, preprocessing_of(model), None, fused=fused)
    if path in ("ort_fp32", "ort_fused"):
        return file
    products = path == "ort_int8_products"
    int8 = file.with_suffix(".products.int8.onnx" if products else ".int8.onnx")
    return int8 if int8.is_file() else quantize_int8(file, int8, products)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_paths(runners: dict[str, Callable], video: torch.Tensor | None, rounds: int, device: str):
    """Wall and CPU seconds per batch of every path, rounds alternating over the paths (one
    warm-up each): ``{path: [(wall, cpu), ...]}``. CPU seconds are this process's (all its
    threads, spinning included): at one thread they hardly depend on what else runs."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    args = () if video is None else (video,)  # None: runners that take no input
    for run in runners.values():
        run(*args)  # warm-up (and compilation)
    for _ in range(rounds):
        for name, run in runners.items():
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            run(*args)
            _sync(device)
            times[name].append((time.perf_counter() - t0, time.process_time() - c0))
    return times


def _median(times: list[tuple[float, float]], which: int = 0) -> float:
    return statistics.median(t[which] for t in times)


def peak_memory_mb(model_key: str, path: str, batch: int, args: argparse.Namespace) -> float:
    """Peak memory of one batch through ``path`` (a child process's peak RSS on CPU)."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.inference",
        "--child",
        f"{model_key}:{path}:{batch}",
        "--device",
        args.device,
        "--threads",
        str(torch.get_num_threads()),
    ]
    cmd += ["--tiny"] if args.tiny else []  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def child(spec: str, args: argparse.Namespace) -> None:
    """Build one path, run one batch, print the peak memory in MB."""
    key, path, batch = spec.split(":")
    models, geometry = (TINY, TINY_GEOMETRY) if args.tiny else (FULL, FULL_GEOMETRY)
    model = build_model(models[key], geometry)
    with tempfile.TemporaryDirectory() as tmp:
        run = build_path(model, path, args.device, Path(tmp))
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        run(_clips(model, int(batch)))
        if args.device == "cuda":
            print(torch.cuda.max_memory_allocated() / 2**20)
            return
    print(_peak_rss_mb())


def _peak_rss_mb() -> float:
    """This process's peak RSS (``VmHWM``: unlike ``ru_maxrss`` it does not carry the parent's
    peak over ``fork`` + ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _clips(model, batch: int) -> torch.Tensor:
    cfg = model.cfg
    return torch.randn(batch, 3, cfg.num_frames, cfg.img_size, cfg.img_size)


def speed_rows(args: argparse.Namespace, workdir: Path) -> list[dict]:
    models, geometry = (TINY, TINY_GEOMETRY) if args.tiny else (FULL, FULL_GEOMETRY)
    paths = [p for p in (CUDA_PATHS if args.device == "cuda" else CPU_PATHS) if p in args.paths]
    rows = []
    for key, spec in models.items():
        batches = [b for b in args.batches if f"{key}:{b}" not in args.skip]
        if not batches:  # every batch of this model skipped
            continue
        model = build_model(spec, geometry)
        runners = {p: build_path(model, p, args.device, workdir) for p in paths}
        for batch in batches:
            times = time_paths(runners, _clips(model, batch), args.rounds, args.device)
            print(f"{key} batch {batch}: " + ", ".join(
                f"{p} {_median(t):.2f}s" for p, t in times.items()), flush=True)  # fmt: skip
            gflop = sum(clip_gflop(model.cfg).values())
            for p in paths:
                rate = batch / _median(times[p])
                rows.append({"model": key, "path": p, "batch": batch, "clips_per_s": rate,
                             "gflop_per_s": rate * gflop, "seconds": [t[0] for t in times[p]],
                             "cpu_s_per_clip": _median(times[p], 1) / batch,
                             "gflop_per_cpu_s": gflop * batch / _median(times[p], 1)})  # fmt: skip
        for p in paths:
            mem = peak_memory_mb(key, p, max(batches), args)
            for row in rows:
                if row["model"] == key and row["path"] == p:
                    row["peak_memory_mb"] = mem
        del runners
    return rows


# ----------------------------------------------------------------------------- accuracy
def accuracy_rows(run_dir: Path, args: argparse.Namespace, workdir: Path) -> list[dict]:
    """Top-1 of the fine-tuned ``run_dir`` on its test set through every path."""
    from maskagain.engine.evaluation import MultiViewAccumulator
    from maskagain.recipes.classifier import load_classifier
    from maskagain.recipes.evaluate import config_base

    model = load_classifier(run_dir).eval()
    dataset = _test_set(config_base([f"checkpoint={run_dir}"]))
    paths = [p for p in (CUDA_PATHS if args.device == "cuda" else CPU_PATHS) if p in args.paths]
    runners = {p: build_path(model, p, args.device, workdir) for p in paths}
    accs = {p: MultiViewAccumulator(model.num_classes) for p in paths}
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, num_workers=0)
    for batch in loader:
        sample = batch["index"] * dataset.views + batch.get("view", 0)
        for p, run in runners.items():
            accs[p].add(run(batch["video"]), batch["label"], batch["index"], sample)
    results = {p: acc.compute() for p, acc in accs.items()}
    base = results["eager_fp32"]
    return [{"path": p, "top1": r.top1, "change": r.top1 - base.top1, "videos": r.num_videos,
             "views": dataset.views,
             "agree_with_eager": float((r.predictions == base.predictions).float().mean() * 100)}
            for p, r in results.items()]  # fmt: skip


def _test_set(base: dict):
    from maskagain.data.config import DataConfig
    from maskagain.data.datasets import build_dataset

    data = DataConfig(**{**base["data"], "num_workers": 0})
    for key in ("mean", "std", "pretrain_scales", "crop_scale", "crop_ratio"):
        setattr(data, key, tuple(getattr(data, key)))
    data.validate()
    return build_dataset(data, "test", "eval")


# ----------------------------------------------------------------------------- predict
def predict_row(args: argparse.Namespace, workdir: Path, path: str) -> dict:
    """``predict`` on real H.264 files with the ViT-S (nano with ``--tiny``) through ``path``."""
    from maskagain.data.synthetic import SyntheticSpec, make_clip, write_video
    from maskagain.recipes.predict import Predictor, data_config, predict

    models, geometry = (TINY, TINY_GEOMETRY) if args.tiny else (FULL, FULL_GEOMETRY)
    key = next(iter(models))
    model = build_model(models[key], geometry)
    prep = {**preprocessing_of(model), "sampling_rate": 2 if args.tiny else 4}
    prep["short_side"] = model.cfg.img_size + (4 if args.tiny else 32)
    side, frames = prep["short_side"] + 8, model.cfg.num_frames * prep["sampling_rate"] + 8
    spec = SyntheticSpec(size=side, frames=frames)  # moving shapes, as compressible as footage
    files = []
    for i in range(args.predict_videos):
        f = workdir / f"v{i}.mp4"
        write_video(f, make_clip(spec, 0, "val", i)[0])
        files.append(str(f))
    names = [str(i) for i in range(model.num_classes)]
    predictor = Predictor(build_path(model, path, args.device, workdir), model.num_classes,
                          names, prep, path)  # fmt: skip
    cfg = data_config(prep, num_workers=args.predict_workers)
    pred = predict(predictor, files, cfg, batch_size=8, progress=False)
    return {"model": key, "path": path, "videos": len(files), "clips": pred.clips,
            "clips_per_s": pred.clips / pred.wall_s, "model_clips_per_s": pred.clips / pred.model_s,
            "share": pred.model_s / pred.wall_s, "workers": args.predict_workers}  # fmt: skip


# ----------------------------------------------------------------------------- ceiling
def clip_gflop(cfg) -> dict[str, float]:
    """Forward GFLOP of one clip, matrix products only (:mod:`benchmarks.flops`' conventions):
    ``linear`` (tubelet embedding, q/k/v, projection, MLP, head) and ``attention`` (q @ k^T and
    weights @ v, 2 N^2 D per block)."""
    n, d = math.prod(cfg.grid), cfg.embed_dim
    attention = cfg.depth * 2 * n * n * d
    blocks = cfg.depth * block_macs(n, d, int(d * cfg.mlp_ratio)) - attention
    embed = n * cfg.in_chans * cfg.tubelet_size * cfg.patch_size**2 * d
    linear = blocks + embed + d * (cfg.num_classes or 0)
    return {"linear": 2 * linear / 1e9, "attention": 2 * attention / 1e9}


def _ort_op(op: str, feeds: dict, consts: dict, domain: str = "", **attrs) -> Callable:
    """A one-node onnxruntime session running ``op`` on ``feeds`` (arrays) and ``consts``; its
    output is int32 for ``MatMulInteger``, float32 otherwise."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    tensor = helper.np_dtype_to_tensor_dtype
    out = onnx.TensorProto.INT32 if op == "MatMulInteger" else onnx.TensorProto.FLOAT
    node = helper.make_node(op, [*feeds, *consts], ["y"], domain=domain, **attrs)
    graph = helper.make_graph(
        [node], op,
        [helper.make_tensor_value_info(k, tensor(v.dtype), v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info("y", out, None)],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(model.SerializeToString(), opts, ["CPUExecutionProvider"])
    return lambda: session.run(None, feeds)


def kernel_runners(cfg) -> dict[str, tuple[Callable, float]]:
    """Plain kernels at the model's shapes, each ``(run, GFLOP)``: the MLP's first GEMM
    ``(N, D) @ (D, 4D)`` in fp32 and int8, and one block's attention products in fp32."""
    import numpy as np

    n, d, heads = math.prod(cfg.grid), cfg.embed_dim, cfg.num_heads
    hidden = int(d * cfg.mlp_ratio)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((n, d), np.float32), rng.standard_normal((d, hidden), np.float32)
    xu8 = rng.integers(0, 255, (n, d), np.uint8)
    ws8 = rng.integers(-127, 127, (d, hidden), np.int8)
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    q, k, v = (rng.standard_normal((1, n, d), np.float32) for _ in range(3))
    tq, tk, tv = (torch.from_numpy(t).view(1, n, heads, -1).transpose(1, 2) for t in (q, k, v))
    gemm, attention = 2 * n * d * hidden / 1e9, 4 * n * n * d / 1e9
    mha = dict(domain="com.microsoft", num_heads=heads)
    return {
        "fp32 GEMM, torch.mm": (lambda: tx @ tw, gemm),
        "fp32 GEMM, onnxruntime MatMul": (_ort_op("MatMul", {"x": x}, {"w": w}), gemm),
        "int8 GEMM, onnxruntime MatMulInteger (u8 x s8)": (
            _ort_op("MatMulInteger", {"x": xu8}, {"w": ws8}), gemm),
        "int8 GEMM + quantising x, onnxruntime DynamicQuantizeMatMul": (
            _ort_op("DynamicQuantizeMatMul", {"x": x}, {"w": ws8, "s": np.float32(0.01)},
                    domain="com.microsoft"), gemm),
        "fp32 attention products, torch SDPA": (
            lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv), attention),
        "fp32 attention products, onnxruntime MultiHeadAttention": (
            _ort_op("MultiHeadAttention", {"q": q, "k": k, "v": v}, {}, **mha), attention),
    }  # fmt: skip


def ceiling_rows(args: argparse.Namespace) -> dict:
    """GFLOP/s of plain kernels at the first model's shapes (rounds alternating), and the batch-1
    speed-up over fp32 they allow: every product at its kernel's rate, fp32 (GEMM and SDPA)
    against int8 linears with fp32 attention, and against int8 for every product."""
    models, geometry = (TINY, TINY_GEOMETRY) if args.tiny else (FULL, FULL_GEOMETRY)
    cfg = build_model(next(iter(models.values())), geometry).cfg
    runners = kernel_runners(cfg)
    times = time_paths({k: r for k, (r, _) in runners.items()}, None, args.rounds, "cpu")
    which = 1 if args.cpu_time else 0
    rate = {k: runners[k][1] / _median(t, which) for k, t in times.items()}
    work = clip_gflop(cfg)
    fp32_gemm = max(rate["fp32 GEMM, torch.mm"], rate["fp32 GEMM, onnxruntime MatMul"])
    int8_gemm = rate["int8 GEMM + quantising x, onnxruntime DynamicQuantizeMatMul"]
    attn = max(v for k, v in rate.items() if "attention" in k)
    fp32_s = work["linear"] / fp32_gemm + work["attention"] / attn
    int8_s = work["linear"] / int8_gemm + work["attention"] / attn
    all_int8_s = (work["linear"] + work["attention"]) / int8_gemm
    return {"gflop_per_clip": work, "kernels": rate, "fp32_s": fp32_s,
            "bound_int8_linear": fp32_s / int8_s, "bound_all_int8": fp32_s / all_int8_s}  # fmt: skip


# ----------------------------------------------------------------------------- report
def markdown(result: dict) -> str:
    lines = ["| model | path | clips/s batch 1 | clips/s batch 8 | CPU s a clip (batch 1) | x eager (batch 1) | GFLOP/s (batch 1) | peak MB (largest batch) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    by = {(r["model"], r["path"], r["batch"]): r for r in result["speed"]}
    for model, path in dict.fromkeys((r["model"], r["path"]) for r in result["speed"]):
        one, eight = by.get((model, path, 1)), by.get((model, path, 8))
        peak = (eight or one)["peak_memory_mb"]
        ratio = _eager_ratio(one, by.get((model, "eager_fp32", 1)), result.get("cpu_time"))
        cells = [f"{r['clips_per_s']:.2f}" if r else "-" for r in (one, eight)]
        flops = one and one["gflop_per_cpu_s" if result.get("cpu_time") else "gflop_per_s"]
        cells += [f"{one['cpu_s_per_clip']:.2f}", f"{ratio:.2f}" if ratio else "-",
                  f"{flops:.0f}"] if one else ["-"] * 3  # fmt: skip
        lines.append(f"| {model} | {path} | {' | '.join(cells)} | {peak:.0f} |")
    if result.get("cpu_time"):
        lines.append("\n(x eager and GFLOP/s from CPU seconds)")
    if result.get("accuracy"):
        lines += ["", "| path | top-1 | change (points) | same top-1 as eager | test videos x views |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for r in result["accuracy"]:
            lines.append(f"| {r['path']} | {r['top1']:.2f} | {r['change']:+.2f} | "
                         f"{r['agree_with_eager']:.1f}% | {r['videos']} x {r['views']} |")  # fmt: skip
    if result.get("ceiling"):
        lines += ["", _ceiling_markdown(result["ceiling"])]
    if result.get("predict"):
        p = result["predict"]
        lines += ["", f"predict ({p['model']}, {p['path']}, {p['videos']} H.264 files, "
                  f"{p['workers']} decoding workers): {p['clips_per_s']:.2f} clips/s, the model alone "
                  f"{p['model_clips_per_s']:.2f} clips/s: {p['share'] * 100:.0f}%"]  # fmt: skip
    return "\n".join(lines)


def _eager_ratio(row: dict | None, eager: dict | None, cpu_time: bool) -> float | None:
    """How many times faster ``row`` runs than eager fp32 (wall or CPU seconds)."""
    if not row or not eager:
        return None
    if cpu_time:
        return eager["cpu_s_per_clip"] / row["cpu_s_per_clip"]
    return row["clips_per_s"] / eager["clips_per_s"]


def _ceiling_markdown(c: dict) -> str:
    work = c["gflop_per_clip"]
    lines = ["| kernel (shapes of one block of the first model) | GFLOP/s |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in c["kernels"].items()]
    lines += ["", f"one clip: {work['linear']:.1f} GFLOP linear + {work['attention']:.1f} GFLOP "
              f"attention products; at these kernel rates an fp32 run takes {c['fp32_s']:.2f} s; "
              f"int8 linears with fp32 attention can be at most {c['bound_int8_linear']:.2f}x "
              f"faster, int8 for every product {c['bound_all_int8']:.2f}x"]  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.inference", description=__doc__.split("\n")[0]
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--tiny", action="store_true", help="nano models at 4x32x32 (seconds)")
    p.add_argument("--paths", nargs="+", default=list(dict.fromkeys(CPU_PATHS + CUDA_PATHS)),
                   help="paths to run (default: all of the device's)")  # fmt: skip
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--skip", nargs="+", default=[], metavar="MODEL:BATCH",
                   help="leave out a model's batch size, e.g. vit_b:8 on a small CPU")  # fmt: skip
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per batch (default 5)")
    p.add_argument("--student", type=Path, help="fine-tuned run directory for the accuracy rows")
    p.add_argument("--predict-videos", type=int, default=0, help="H.264 files for the predict row")
    p.add_argument("--predict-workers", type=int, default=1)
    p.add_argument("--predict-path", choices=CPU_PATHS + CUDA_PATHS,
                   help="time only the predict row, through this path (no speed rows)")  # fmt: skip
    p.add_argument("--cpu-time", action="store_true",
                   help="ratios and kernel rates from CPU seconds, not wall seconds (with "
                   "--threads 1 they hold on a busy machine)")  # fmt: skip
    p.add_argument("--ceiling", action="store_true",
                   help="also time plain GEMM and attention kernels: the speed-up int8 allows")  # fmt: skip
    p.add_argument("--threads", type=int, help="torch and onnxruntime threads (default: torch's)")
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args)
        return None
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="maskagain-inference-") as tmp:
        result = {"speed": [] if args.predict_path else speed_rows(args, Path(tmp))}
        if args.ceiling:
            result["ceiling"] = ceiling_rows(args)
        if args.student:
            result["accuracy"] = accuracy_rows(args.student, args, Path(tmp))
        if args.predict_videos:
            path = (
                args.predict_path
                or max(
                    (r for r in result["speed"] if r["batch"] == max(args.batches)),
                    key=lambda r: r["clips_per_s"],
                )["path"]
            )
            result["predict"] = predict_row(args, Path(tmp), path)
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                         "threads": torch.get_num_threads(), "load": os.getloadavg(),
                         "torch": torch.__version__}  # fmt: skip
    result["cpu_time"] = args.cpu_time
    result["command"] = " ".join(["python -m benchmarks.inference", *(argv or sys.argv[1:])])
    result["wall_s"] = time.time() - t0
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
