"""The subcommands backed by a recipe (``maskagain.recipes.RECIPES``): ``--config``, dotted
overrides, ``--out``, ``--resume``, ``--dry-run`` and the recipe's shortcut options.

Each one loads and validates the whole config before anything else happens, runs the recipe
and prints one JSON line of its summary (rank 0).
"""

from __future__ import annotations

import argparse
import json
import os

from maskagain.cli.common import add_config_arguments, config_from_args, print_config
from maskagain.recipes import Recipe

# option -> (config key it sets, help), per recipe
SHORTCUTS: dict[str, dict[str, tuple[str, str]]] = {
    "evaluate": {
        "--checkpoint": (
            "checkpoint",
            "a finetune run directory (its data config is used unless --config is given), an "
            "exported weights file or a training checkpoint (sets 'checkpoint')",
        ),
    },
    "probe": {
        "--encoder": (
            "encoder",
            "encoder to probe: a distill/pretrain run directory or weights file (sets 'encoder')",
        ),
    },
}
# recipes that train (and so can resume)
RESUMABLE = ("pretrain", "distill", "finetune")


def add_arguments(parser: argparse.ArgumentParser, recipe: Recipe) -> None:
    add_config_arguments(parser, recipe.config, resume=recipe.name in RESUMABLE)
    for option, (key, text) in SHORTCUTS.get(recipe.name, {}).items():
        parser.add_argument(option, metavar="PATH", dest=f"set_{key}", help=text)


def run(args: argparse.Namespace, recipe: Recipe) -> int:
    for _, (key, _) in SHORTCUTS.get(recipe.name, {}).items():
        value = getattr(args, f"set_{key}", None)
        if value:
            args.overrides = [*(args.overrides or []), f"{key}={value}"]
    base = _base_tree(recipe, args)
    cfg = config_from_args(args, recipe.config, base)
    if args.dry_run:
        return print_config(cfg)
    summary = recipe.run(cfg, getattr(args, "resume", None))
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(_printed(summary, recipe.prints) | {"out_dir": cfg.out_dir}))
    return 0


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
