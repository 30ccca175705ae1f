"""``maskagain ls``: the models, shipped configs and commands there are to choose from."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HELP = "list the registered models, known teacher families, shipped configs and recipes"

WHAT = ("models", "configs", "recipes")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "what", nargs="*", metavar="WHAT", help=f"any of {', '.join(WHAT)} (default: all)"
    )


def run(args: argparse.Namespace) -> int:
    what = args.what or WHAT
    unknown = [w for w in what if w not in WHAT]
    if unknown:
        print(
            f"maskagain ls: error: cannot list {unknown[0]!r}; choose from {', '.join(WHAT)}",
            file=sys.stderr,
        )
        return 2
    sections = {"models": models_text, "configs": configs_text, "recipes": recipes_text}
    print("\n\n".join(sections[name]() for name in WHAT if name in what))
    return 0


def models_text() -> str:
    """The registry's architectures, the published families ``load_encoder`` recognises and
    the weights shipped with the package (from :mod:`maskagain.cli.catalog`: no torch)."""
    from maskagain.cli.catalog import ARCHITECTURES, FAMILIES, MAE_HEADS, SHIPPED_WEIGHTS

    lines = ["models (model.name / student.name = NAME; width x depth, heads):"]
    width = max(len(n) for n in ARCHITECTURES)
    for name, (dim, depth, heads) in ARCHITECTURES.items():
        lines.append(f"  {name:<{width}}  {dim} x {depth}, {heads} heads")
    lines += ["", "teacher families (checkpoints load_encoder recognises; teacher.source = PATH):"]
    width = max(len(f[0]) for f in FAMILIES)
    fam = max(len(f[1]) for f in FAMILIES)
    for name, family, dim, depth, heads, patch, tubelet in FAMILIES:
        lines.append(
            f"  {name:<{width}}  {family:<{fam}}  {dim} x {depth}, {heads} heads, "
            f"patch {patch}, tubelet {tubelet}"
        )
    lines += ["", "image teachers (MVD co-teaching; image_teacher.source = PATH, MAE encoders):"]
    for (dim, depth, patch), heads in MAE_HEADS.items():
        lines.append(f"  MAE  {dim} x {depth}, {heads} heads, patch {patch}")
    lines += ["", "shipped weights (teacher.source = NAME):"]
    for name, (_, what) in SHIPPED_WEIGHTS.items():
        lines.append(f"  {name}  {what}")
    return "\n".join(lines)


def config_folders() -> list[Path]:
    """Where shipped configs are: the package's own ``maskagain/configs/``."""
    from maskagain.cli.common import shipped_configs

    return [f for f in (shipped_configs(),) if f.is_dir()]


def command_of(path: Path) -> str | None:
    """The recipe a config is for: its folder (``configs/<recipe>/``), its name prefix
    (``<recipe>_*.yaml``) or a ``maskagain <recipe> --config`` line in its comments."""
    from maskagain.recipes import RECIPES

    for name in (path.parent.name, path.stem.split("_")[0]):
        if name in RECIPES:
            return name
    try:
        usage = re.search(r"maskagain (\w+) --config", path.read_text())
    except OSError:
        return None
    return usage.group(1) if usage and usage.group(1) in RECIPES else None


def configs_text() -> str:
    lines = []
    for folder in config_folders():
        files = sorted(p for p in folder.rglob("*.yaml") if not p.name.startswith("base"))
        lines.append(
            f"configs in {folder} (maskagain RECIPE --config NAME; maskagain cp NAME FILE):"
        )
        names = [p.relative_to(folder).with_suffix("").as_posix() for p in files]
        width = max((len(n) for n in names), default=0)
        for name, path in zip(names, files):
            lines.append(f"  {name:<{width}}  {command_of(path) or '?'}")
    return "\n".join(lines) or "configs: none found (no configs/ folder next to the package)"


def recipes_text() -> str:
    from maskagain.cli.main import SUBCOMMANDS
    from maskagain.recipes import RECIPES

    width = max(len(n) for n in (*RECIPES, *SUBCOMMANDS))
    lines = ["recipes (maskagain RECIPE --config FILE [key=value ...]):"]
    lines += [f"  {name:<{width}}  {r.help}" for name, r in RECIPES.items()]
    lines += ["", "tools (maskagain TOOL --help):"]
    lines += [f"  {name:<{width}}  {_tool_help(module)}" for name, module in SUBCOMMANDS.items()]
    return "\n".join(lines)


def _tool_help(module: str) -> str:
    import importlib

    return importlib.import_module(f"maskagain.cli.{module}").HELP
