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
    """The registry's architectures and the published families ``load_encoder`` recognises."""
    from maskagain.models.families import FAMILIES, MASKAGAIN
    from maskagain.models.image_vit import MAE_HEADS
    from maskagain.models.registry import ARCHITECTURES

    lines = ["models (model.name / student.name = NAME; width x depth, heads):"]
    width = max(len(n) for n in ARCHITECTURES)
    for name, a in ARCHITECTURES.items():
        lines.append(f"  {name:<{width}}  {a['embed_dim']} x {a['depth']}, {a['num_heads']} heads")
    lines += ["", "teacher families (checkpoints load_encoder recognises; teacher.source = PATH):"]
    known = [f for f in FAMILIES if f.family != MASKAGAIN]
    width = max(len(f.name) for f in known)
    fam = max(len(f.family) for f in known)
    for f in known:
        lines.append(
            f"  {f.name:<{width}}  {f.family:<{fam}}  {f.embed_dim} x {f.depth}, "
            f"{f.num_heads} heads, patch {f.patch_size}, tubelet {f.tubelet_size}"
        )
    lines += ["", "image teachers (MVD co-teaching; image_teacher.source = PATH, MAE encoders):"]
    for (dim, depth, patch), heads in MAE_HEADS.items():
        lines.append(f"  MAE  {dim} x {depth}, {heads} heads, patch {patch}")
    return "\n".join(lines)


def config_folders() -> list[Path]:
    """Where shipped configs are: the repository's ``configs/`` (a source checkout) and the
    package's own ``maskagain/configs/`` (an installed wheel), those that exist."""
    package = Path(__file__).resolve().parents[1]
    folders = [package.parent / "configs", package / "configs"]
    return [f for f in folders if f.is_dir()]


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
        lines.append(f"configs in {folder} (maskagain RECIPE --config FILE):")
        names = [p.relative_to(folder).as_posix() for p in files]
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
