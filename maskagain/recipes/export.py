"""``maskagain export``: a checkpoint or run directory to Hugging Face ``transformers`` or to the
official VideoMAE ``.pth`` layout (the conversions live in :mod:`maskagain.models.export`).

Metadata a checkpoint does not carry in its weights is resolved by :func:`resolve_export_metadata`,
first match wins:

- normalisation: explicit arguments, our file's ``mean``/``std`` metadata, its ``train_config``
  metadata (``data.mean``/``data.std``), the run directory's ``config.yaml`` (same keys), a
  Hugging Face source's ``preprocessor_config.json``, else ImageNet (VideoMAE's own).
- class names: explicit list, our file's ``class_names`` (list) or ``id2label`` (mapping)
  metadata, ``class_index.json`` / ``classes.txt`` next to the weights, the file the training
  config names (``class_names``, then ``data.class_index``, then a folder dataset's
  ``data.root/classes.txt``), a Hugging Face source's ``id2label``, else
  none (the export then writes ``class_0 .. class_{n-1}`` and warns).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from maskagain.checkpoints import CheckpointError
from maskagain.constants import IMAGENET_MEAN, IMAGENET_STD
from maskagain.data.lists import names_from_mapping, read_class_index
from maskagain.models.export import (
    check_class_names,
    describe_dims,
    export_hf,
    export_videomae,
    load_checked,
)
from maskagain.models.vit import ModelConfig

log = logging.getLogger(__name__)

CLASS_FILES = ("class_index.json", "classes.txt")
RUN_CONFIG = "config.yaml"


@dataclass
class ExportMetadata:
    """What an export needs beyond the weights, and where each piece came from."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    norm_source: str
    class_names: list[str] | None
    class_source: str | None


def export_checkpoint(
    source: str | Path,
    out: str | Path,
    fmt: str,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **overrides,
) -> Path:
    """Load ``source`` (run directory, our safetensors, official ``.pth``, HF directory) strictly
    and export it as ``fmt`` (``"hf"`` or ``"videomae"``) to ``out``."""
    if fmt not in ("hf", "videomae"):
        raise ValueError(f"unknown export format {fmt!r}; choose 'hf' or 'videomae'")
    model, src_fmt, info = load_checked(source, **overrides)
    log.info("read %s as %s: %s", source, src_fmt, describe_dims(model.cfg))
    if fmt == "videomae":
        return export_videomae(model, out)
    if src_fmt not in ("maskagain", "hf") and not {"img_size", "num_frames"} & set(overrides):
        log.warning(
            "%s (%s) does not record its input size or head count; config.json will say %d "
            "frames of %dx%d and %d heads: pass img_size/num_frames/num_heads if that is wrong",
            source,
            src_fmt,
            model.cfg.num_frames,
            model.cfg.img_size,
            model.cfg.img_size,
            model.cfg.num_heads,
        )
    meta = resolve_export_metadata(source, info, model.cfg, class_names, mean, std)
    log.info("normalisation from %s: mean %s, std %s", meta.norm_source, meta.mean, meta.std)
    if meta.class_names is not None:
        log.info("%d class names from %s", len(meta.class_names), meta.class_source)
    elif model.cfg.num_classes:
        log.warning(
            "no class names found for %s (metadata class_names/id2label, %s, data.class_index); "
            "writing class_0..class_%d",
            source,
            " / ".join(CLASS_FILES),
            model.cfg.num_classes - 1,
        )
    return export_hf(model, out, meta.class_names, meta.mean, meta.std)


# ----------------------------------------------------------------------------- metadata
def resolve_export_metadata(
    source: str | Path,
    info: dict,
    cfg: ModelConfig,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ExportMetadata:
    """Normalisation and class names for ``source`` (order in the module docstring)."""
    run_dir = weights_dir(source)
    train_cfg = training_config(run_dir, info)
    m, s, norm_source = _resolve_norm(info, train_cfg, _hf_preprocessor(run_dir), mean, std)
    names, class_source = None, None
    if cfg.num_classes:
        names, class_source = _resolve_class_names(run_dir, info, train_cfg, class_names)
        check_class_names(cfg, names, class_source)
    return ExportMetadata(m, s, norm_source, names, class_source)


def weights_dir(source: str | Path) -> Path:
    """The directory holding ``source``'s weights (the run directory for our checkpoints)."""
    path = Path(source).expanduser()
    return path if path.is_dir() else path.parent


def training_config(run_dir: Path, info: dict) -> dict:
    """The training config stored in the file's metadata (``train_config``, or the ``config`` of
    a model card such as the shipped teacher's), else the run's ``config.yaml``."""
    card = info.get("card") if isinstance(info.get("card"), dict) else {}
    for cfg in (info.get("train_config"), card.get("config")):
        if isinstance(cfg, dict):
            return cfg
    path = run_dir / RUN_CONFIG
    if path.is_file():
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            log.warning("ignoring unreadable %s: %s", path, str(e).splitlines()[0])
            return {}
        return loaded if isinstance(loaded, dict) else {}
    return {}


def _hf_preprocessor(run_dir: Path) -> dict:
    path = run_dir / "preprocessor_config.json"
    if not (run_dir / "config.json").is_file() or not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("ignoring unreadable %s", path)
        return {}
    return content if isinstance(content, dict) else {}


def _resolve_norm(
    info: dict, train_cfg: dict, hf_proc: dict, mean, std
) -> tuple[tuple, tuple, str]:
    data = train_cfg.get("data") if isinstance(train_cfg.get("data"), dict) else {}
    candidates = (
        ("arguments", mean, std),
        ("checkpoint metadata", info.get("mean"), info.get("std")),
        ("training config (data.mean/std)", data.get("mean"), data.get("std")),
        ("source preprocessor_config.json", hf_proc.get("image_mean"), hf_proc.get("image_std")),
    )
    for origin, m, s in candidates:
        if m is not None and s is not None:
            return tuple(float(x) for x in m), tuple(float(x) for x in s), origin
        if (m is None) != (s is None):
            raise CheckpointError(f"{origin} gives only one of mean/std ({m=}, {s=})")
    return IMAGENET_MEAN, IMAGENET_STD, "ImageNet default"


def _resolve_class_names(run_dir: Path, info: dict, train_cfg: dict, explicit):
    if explicit is not None:
        return list(explicit), "arguments"
    if isinstance(info.get("class_names"), list):
        return [str(n) for n in info["class_names"]], "checkpoint metadata (class_names)"
    if isinstance(info.get("id2label"), dict):
        return _names_from_mapping(info["id2label"], "metadata id2label"), "checkpoint metadata"
    for name in CLASS_FILES:
        if (run_dir / name).is_file():
            return read_class_names(run_dir / name), str(run_dir / name)
    found = _class_file_from_config(run_dir, train_cfg)
    if found is not None:
        return read_class_names(found[0]), found[1]
    hf = info.get("hf_config") or {}
    if isinstance(hf.get("id2label"), dict):
        names = _names_from_mapping(hf["id2label"], "config.json id2label")
        if not all(n == f"LABEL_{i}" for i, n in enumerate(names)):
            return names, "source config.json id2label"
    return None, None


def _class_file_from_config(run_dir: Path, train_cfg: dict) -> tuple[Path, str] | None:
    """The class names file a training config points at: the fine-tuning recipe's
    ``class_names``, ``data.class_index``, or a folder dataset's generated ``root/classes.txt``.
    Relative paths are tried against the run directory, then the working directory."""
    data = train_cfg.get("data") if isinstance(train_cfg.get("data"), dict) else {}
    keys = [
        ("class_names", train_cfg.get("class_names")),
        ("data.class_index", data.get("class_index")),
    ]
    if data.get("kind") == "folder" and data.get("root"):
        keys.append(("data.root", str(Path(data["root"]) / "classes.txt")))
    for key, value in keys:
        if not isinstance(value, str) or not value:
            continue
        for path in (run_dir / value, Path(value).expanduser()):
            if path.is_file():
                return path, f"{path} ({key} in the training config)"
        log.warning("training config %s names %s, which does not exist here", key, value)
    return None


def read_class_names(path: str | Path) -> list[str]:
    """:func:`maskagain.data.lists.read_class_index`, its errors as :class:`CheckpointError`."""
    try:
        return read_class_index(path)
    except ValueError as e:
        raise CheckpointError(str(e)) from None


def _names_from_mapping(mapping: dict, where: str) -> list[str]:
    try:
        return names_from_mapping(mapping, where)
    except ValueError as e:
        raise CheckpointError(str(e)) from None


# ----------------------------------------------------------------------------- ONNX
def resolve_preprocessing(source: str | Path, info: dict, cfg: ModelConfig) -> dict:
    """How clips for ``source`` are made, as :data:`maskagain.models.onnx.PREPROCESSING_KEYS`:
    the training config's ``data`` section (metadata or the run's ``config.yaml``), a Hugging
    Face source's processor (normalisation, short side) and the model (frames, size); keys
    none of them records take ``DataConfig``'s defaults, named in a warning."""
    from maskagain.data.config import DataConfig
    from maskagain.models.onnx import PREPROCESSING_KEYS

    run_dir = weights_dir(source)
    train_cfg = training_config(run_dir, info)
    data = train_cfg.get("data") if isinstance(train_cfg.get("data"), dict) else {}
    mean, std, _ = _resolve_norm(info, train_cfg, _hf_preprocessor(run_dir), None, None)
    found = {k: data[k] for k in PREPROCESSING_KEYS if k in data}
    found.update(mean=list(mean), std=list(std))
    found.setdefault("num_frames", cfg.num_frames)
    found.setdefault("input_size", cfg.img_size)
    edge = (_hf_preprocessor(run_dir).get("size") or {}).get("shortest_edge")
    if edge and "short_side" not in found:
        found["short_side"] = int(edge)
    defaults = DataConfig()
    guessed = [k for k in PREPROCESSING_KEYS if k not in found]
    if "short_side" in guessed:
        found["short_side"] = round(found["input_size"] * defaults.short_side / defaults.input_size)
    for key in guessed:
        found.setdefault(key, getattr(defaults, key))
    if guessed:
        log.warning(
            "%s records no %s; using %s (set them if the model was trained otherwise)",
            source, ", ".join(guessed), ", ".join(f"{k}={found[k]}" for k in guessed),
        )  # fmt: skip
    return {k: _listed(found[k]) for k in PREPROCESSING_KEYS}


def _listed(value):
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else value


def export_onnx_checkpoint(
    source: str | Path,
    out: str | Path,
    encoder_only: bool = False,
    quantize: str | None = None,
    class_names: Sequence[str] | None = None,
    optimize: bool = False,
    **overrides,
) -> list[Path]:
    """Load ``source`` strictly and write it as ONNX to ``out`` (see
    :mod:`maskagain.models.onnx`), with its preprocessing and class names in the metadata;
    ``optimize``: onnxruntime's fused graph instead of standard operators; ``quantize="int8"``
    adds onnxruntime's dynamic int8 quantisation of the fused graph at :func:`int8_path`,
    ``"int8-products"`` that of the standard graph with the attention products in int8 too.
    Returns the files written."""
    from maskagain.models.onnx import export_onnx

    if quantize not in (None, *QUANTIZATIONS):
        raise ValueError(f"unknown quantisation {quantize!r}; choose one of {QUANTIZATIONS}")
    out = Path(out)
    if out.is_dir():
        raise CheckpointError(f"--out {out} is a directory; give the .onnx file to write")
    model, src_fmt, info = load_checked(source, **overrides)
    log.info("read %s as %s: %s", source, src_fmt, describe_dims(model.cfg))
    preprocessing = resolve_preprocessing(source, info, model.cfg)
    names = None
    if model.cfg.num_classes and not encoder_only:
        names = resolve_export_metadata(source, info, model.cfg, class_names).class_names
        if names is None:
            raise CheckpointError(
                f"no class names found for {source}; pass --class-names FILE (one a line)"
            )
    args = (preprocessing, names, encoder_only)
    written = [export_onnx(model, out, *args, fused=optimize)]
    if quantize == "int8":
        written.append(_int8_export(model, out if optimize else None, args, int8_path(out)))
    elif quantize == "int8-products":
        standard = None if optimize else out
        written.append(_int8_export(model, standard, args, int8_path(out), products=True))
    return written


def _int8_export(
    model, written: Path | None, export_args: tuple, out: Path, products: bool = False
) -> Path:
    """The int8 quantisation of ``model``'s fused graph (``products``: of its standard graph,
    the attention products included); ``written``: that graph when already exported."""
    from maskagain.models.onnx import export_onnx, quantize_int8

    if written is not None:
        return quantize_int8(written, out, products)
    with tempfile.TemporaryDirectory(prefix="maskagain-onnx-") as tmp:
        graph = export_onnx(model, Path(tmp) / "m.onnx", *export_args, fused=not products)
        return quantize_int8(graph, out, products)


QUANTIZATIONS = ("int8", "int8-products")


def int8_path(path: str | Path) -> Path:
    """Where the int8 twin of an ONNX export goes: ``model.onnx`` -> ``model.int8.onnx``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.int8{path.suffix or '.onnx'}")
