"""The subcommands backed by a recipe (``maskagain.recipes.RECIPES``): ``--config``, dotted
overrides, ``--out``, ``--resume``, ``--overwrite``, ``--dry-run`` and the recipe's shortcut
options.

Each one loads and validates the whole config, picks the run directory (:func:`default_out_dir`
when ``out_dir`` is set nowhere) and checks that it holds no other run (unless ``--resume`` or
``--overwrite``), all before anything is written; then it runs the recipe, whose own checks
(checkpoint paths, data) come before it writes into the run directory, or are undone by
:class:`~maskagain.cli.common.RunGuard` when they fail after; and prints one JSON line of its
summary (rank 0).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from maskagain.cli.common import (
    RunGuard,
    add_config_arguments,
    config_from_args,
    print_config,
    resolve_config,
    run_contents,
    sets_out_dir,
)
from maskagain.config import ConfigError
from maskagain.recipes import Recipe

log = logging.getLogger(__name__)

# where a run goes when out_dir is set nowhere (see default_out_dir)
OUT_RULES = {
    "evaluate": "<checkpoint's run dir>/evaluate (-ema, -val for use_ema, split=val), or "
    "runs/evaluate-<checkpoint name> for a checkpoint outside a run",
    "probe": "runs/probe-<encoder name>",
}
TRAINING_OUT_RULE = "runs/<--config file name without .yaml>, or runs/{name} without --config"
# weights files named after their role, not their run: the run directory names them
_ROLE_NAMES = {
    "student.safetensors",
    "model.safetensors",
    "model_ema.safetensors",
    "encoder.safetensors",
    "teacher.safetensors",
}


def add_arguments(parser: argparse.ArgumentParser, recipe: Recipe) -> None:
    add_config_arguments(
        parser,
        recipe.config,
        resume=recipe.trains,
        example=recipe.example,
        out_rule=OUT_RULES.get(recipe.name, TRAINING_OUT_RULE.format(name=recipe.name)),
    )
    if recipe.shortcut is not None:
        option, text = recipe.shortcut
        parser.add_argument(option, metavar="PATH", dest="set_source", help=text)


def run(args: argparse.Namespace, recipe: Recipe) -> int:
    cfg = load(args, recipe)
    if args.dry_run:
        return print_config(cfg)
    check_paths(cfg, recipe)
    resume = getattr(args, "resume", None)
    replace = check_run_dir(cfg.out_dir, recipe, resume, args.overwrite)
    main_process = os.environ.get("RANK", "0") == "0"
    guard = RunGuard.enter(cfg.out_dir, replace) if main_process else None
    try:
        summary = recipe.run(cfg, resume)
    except BaseException:
        if guard is not None:
            guard.finish(failed=True)
        raise
    if guard is not None:
        guard.finish(failed=False)
    if main_process:
        print(json.dumps(_printed(summary, recipe.prints) | {"out_dir": cfg.out_dir}))
        _warn_at_chance(recipe.name, summary)
    return 0


def _warn_at_chance(command: str, summary: dict) -> None:
    """One line when the run's test score is within noise of chance."""
    from maskagain.engine.evaluation import chance_warning

    result = summary.get("test_result")
    line = chance_warning(result) if isinstance(result, dict) else None
    if line:
        print(f"maskagain {command}: warning: {line}", file=sys.stderr)


def config_value(cfg, key: str):
    """The value of dotted ``key`` in a config tree (None when a section is missing)."""
    node = cfg
    for part in key.split("."):
        node = getattr(node, part, None)
    return node


def check_paths(cfg, recipe: Recipe) -> None:
    """Every path the run reads, before any of it is read: the checkpoints its config names
    (teacher, init, encoder) and the data root and list files. Raises ConfigError (one line,
    with the closest existing names) on the first that is missing."""
    from maskagain.checkpoints import CheckpointError
    from maskagain.models.loading import locate_source

    for key in filter(None, (recipe.source, *recipe.more_sources)):
        value = config_value(cfg, key)
        if value:
            try:
                locate_source(str(value), key)
            except CheckpointError as err:
                raise ConfigError(str(err)) from None
    error = data_path_error(config_value(cfg, "data"))
    if error:
        raise ConfigError(error)


def data_path_error(data) -> str | None:
    """The first missing data path (``data.root``, then the list files), as one line, or None."""
    from maskagain.data.storage import is_remote
    from maskagain.models.loading import did_you_mean

    if data is None or getattr(data, "kind", "synthetic") == "synthetic":
        return None
    if is_remote(data.root):  # read when the dataset is built, which names a missing object
        return None
    root = Path(str(data.root or ".")).expanduser()
    if data.root and not root.is_dir():
        return f"config key 'data.root': {data.root} is not a folder{did_you_mean(root)}"
    for key in ("train_list", "val_list", "test_list"):
        value = getattr(data, key, "")
        if value and data.kind != "folder" and not (root / value).is_file():
            path = root / value
            return f"config key 'data.{key}': {path} does not exist{did_you_mean(path)}"
    return None


def load(args: argparse.Namespace, recipe: Recipe):
    """The validated config of the command line, with its run directory decided."""
    args.config = resolve_config(args.config)
    value = getattr(args, "set_source", None)
    if value:
        args.overrides = [*(args.overrides or []), f"{recipe.source}={value}"]
    kind = _kind_override(args)
    if kind:
        args.config = kind_config(args.config, kind)
    base = _base_tree(recipe, args)
    try:
        cfg = config_from_args(args, recipe.config, base)
    except ConfigError as err:
        if not kind:
            raise
        raise ConfigError(f"{err} (objective.kind={kind}: {_kind_hint(kind)})") from None
    if not sets_out_dir(args, base):
        cfg.out_dir = default_out_dir(recipe.name, cfg, args.config) or cfg.out_dir
    return cfg


def _kind_override(args: argparse.Namespace) -> str | None:
    """The ``objective.kind`` the command line sets, if any (the last one)."""
    kinds = [
        o.partition("=")[2].strip() for o in args.overrides or [] if o.startswith("objective.kind=")
    ]
    return kinds[-1] if kinds else None


def kind_config(config: str | None, kind: str) -> str | None:
    """The shipped sibling of ``config`` that sets ``objective.kind=kind``'s defaults
    (``tiny/distill.yaml`` -> ``tiny/distill_amd.yaml``), when ``config`` sets another kind
    and there is one; else ``config``."""
    from maskagain.config import load_yaml

    if not config:
        return config
    path = Path(config)
    sibling = path.with_name(f"{path.stem}_{kind}.yaml")
    own = (load_yaml(path).get("objective") or {}).get("kind", "maskagain")
    if own == kind or not sibling.is_file():
        return config
    print(
        f"objective.kind={kind}: using {sibling}, {path.name} with that kind's shipped defaults",
        file=sys.stderr,
    )
    return str(sibling)


def _kind_hint(kind: str) -> str:
    """Where the shipped defaults of an objective kind are."""
    from maskagain.cli.common import shipped_configs

    names = sorted(
        p.relative_to(shipped_configs()).with_suffix("").as_posix()
        for p in shipped_configs().rglob(f"*_{kind}.yaml")
    )
    if not names:
        return "no shipped config sets this kind"
    return f"its shipped defaults are in --config {' or --config '.join(names)}"


def default_out_dir(recipe: str, cfg, config_path: str | None) -> str | None:
    """The run directory when ``out_dir`` is set nowhere: ``evaluate`` next to the run it tests
    (``<run>/evaluate``) or ``runs/evaluate-<checkpoint name>``; ``probe``:
    ``runs/probe-<encoder name>``; a training recipe: ``runs/<config file stem>``. None: keep
    the config's default (``runs/<recipe>``, a training recipe without ``--config``)."""
    if recipe == "evaluate":
        name = "evaluate" + ("-ema" if cfg.use_ema else "") + ("-val" if cfg.split == "val" else "")
        run_dir = _run_dir_of(cfg.checkpoint)
        if run_dir is not None:
            return str(run_dir / name)
        return f"runs/{name}-{source_name(cfg.checkpoint)}"
    if recipe == "probe":
        return f"runs/probe-{source_name(cfg.encoder)}"
    return f"runs/{Path(config_path).stem}" if config_path else None


def source_name(source: str) -> str:
    """A short name for a checkpoint: its run directory's name for a run's own weights
    (``runs/x/student.safetensors``, ``runs/x/checkpoints/ckpt_step8.pt``: ``x``), else its
    file or folder name without extension (a hub id's model name)."""
    path = Path(str(source).rstrip("/"))
    if path.parent.name == "checkpoints" and path.suffix == ".pt":
        path = path.parent.parent
    elif path.name in _ROLE_NAMES:
        path = path.parent
    return (path.stem if path.suffix else path.name) or "checkpoint"


def _run_dir_of(checkpoint: str) -> Path | None:
    """The maskagain run directory (one with ``config.yaml``) that ``checkpoint`` is, or whose
    weights or training checkpoint it is; None otherwise (a Hugging Face folder, a download)."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        folder = path
    elif path.parent.name == "checkpoints":
        folder = path.parent.parent
    else:
        folder = path.parent
    return folder if (folder / "config.yaml").is_file() else None


def check_run_dir(out_dir: str, recipe: Recipe, resume: str | None, overwrite: bool) -> bool:
    """Whether the run in ``out_dir`` is to be replaced (``overwrite`` and there is one).
    A directory holding a run is refused (:class:`ConfigError`, before anything is written)
    unless the command resumes it or ``overwrite`` is given."""
    found = run_contents(out_dir)
    if not found or (resume not in (None, "", "none") and recipe.trains):
        return False
    if overwrite:
        log.info("--overwrite: replacing the run in %s (%s)", out_dir, ", ".join(found))
        return True
    fix = "--resume auto to continue it, " if recipe.trains else ""
    raise ConfigError(
        f"{out_dir} already holds a run ({', '.join(found)}); add {fix}--overwrite to replace "
        "it, or --out DIR for a new one"
    )


def _base_tree(recipe: Recipe, args: argparse.Namespace) -> dict | None:
    """What a recipe takes from elsewhere when no ``--config`` is given (``evaluate``: the data
    section of the fine-tuning run it tests)."""
    if args.config:
        return None
    hook = getattr(recipe.load(), "config_base", None)
    return hook(list(args.overrides or [])) if hook else None


def _printed(summary: dict, keys: tuple[str, ...]) -> dict:
    out = {}
    for key in keys:
        node = summary
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None or key in summary:
            out[key.replace(".", "_")] = node
    return out
