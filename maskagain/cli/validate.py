"""``maskagain validate``: check a config file (and overrides) without running anything."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import yaml

HELP = "check a config (and key=value overrides): print it resolved and every error, run nothing"

# the dotted key an error names ("config key 'a.b[0]' ...", "unknown config key 'a.b'")
_KEY = re.compile(r"config key '([\w.]+)(?:\[\d+\])?'")
MAX_ERRORS = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", metavar="CONFIG.yaml|NAME", help="the config file (or shipped config) to check"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides, as the recipe takes"
    )
    parser.add_argument(
        "--recipe",
        metavar="NAME",
        help="the recipe the config is for; default: from its folder (configs/<recipe>/), its "
        "name (<recipe>_*.yaml) or a 'maskagain <recipe> --config' line in it",
    )


def run(args: argparse.Namespace) -> int:
    from maskagain.cli.common import resolve_config
    from maskagain.cli.ls import command_of
    from maskagain.config import ConfigError
    from maskagain.recipes import RECIPES

    try:
        path = Path(resolve_config(args.config))
    except ConfigError as err:
        return _fail([str(err)])
    name = args.recipe or command_of(path)
    if name not in RECIPES:
        given = f"--recipe {name!r} is not a recipe" if name else f"cannot tell what {path} is for"
        return _fail([f"{given}; pass --recipe with one of {', '.join(RECIPES)}"])
    try:
        cfg, errors = check_config(RECIPES[name].config, path, list(args.overrides or []))
    except ConfigError as err:  # the file itself: YAML syntax, a missing 'defaults' include
        return _fail([str(err)])
    if cfg is not None:
        from maskagain.cli.recipe import data_path_error

        missing = data_path_error(getattr(cfg, "data", None))
        errors += [missing] if missing else []
        _default_out_dir(name, cfg, path, args.overrides or [])
        if errors:
            print("# resolved without the values in error (file values or defaults instead)")
        sys.stdout.write(yaml.safe_dump(_plain(cfg), sort_keys=False))
    for warning in source_warnings(name, cfg):
        print(f"maskagain validate: warning: {warning}", file=sys.stderr)
    if errors:
        return _fail(errors)
    print(f"{path}: valid {name} config", file=sys.stderr)
    return 0


def check_config(cls: type, path: Path, overrides: list[str]) -> tuple[object | None, list[str]]:
    """``(config, errors)``: every error of the file and overrides, one line each. After an
    error naming a key, that key's override is dropped (or, set in the file, the key is put back
    to its default) and the rest is checked again; the config is None when an error names no
    key that could be reset."""
    from maskagain.config import ConfigError, apply_overrides, load_config, load_yaml

    tree = load_yaml(path)
    overrides = list(overrides)
    errors: list[str] = []
    while len(errors) < MAX_ERRORS:
        try:
            tree_now = apply_overrides(tree, overrides)
            return load_config(cls, base=tree_now, relative_to=os.getcwd()), errors
        except ConfigError as err:
            errors.append(" ".join(str(err).split()))
            match = _KEY.search(str(err))
            if match is None:
                return None, errors
            key = match.group(1)
            kept = [o for o in overrides if not _sets(o, key)]
            if len(kept) < len(overrides):
                overrides = kept
            elif not _drop(tree, key.split(".")):
                return None, errors
    return None, errors


def _sets(override: str, key: str) -> bool:
    name = override.partition("=")[0].strip()
    return name == key or name.startswith(key + ".")


def _drop(tree: dict, parts: list[str]) -> bool:
    """Remove ``a.b.c`` from a raw tree; False when it is not there."""
    node = tree
    for part in parts[:-1]:
        node = node.get(part)
        if not isinstance(node, dict):
            return False
    return node.pop(parts[-1], KeyError) is not KeyError


def source_warnings(recipe: str, cfg) -> list[str]:
    """The checkpoints the config names, when they are not there (yet): warnings, since an
    earlier step may still write them."""
    from maskagain.checkpoints import CheckpointError
    from maskagain.models.loading import locate_source
    from maskagain.recipes import RECIPES

    if cfg is None:
        return []
    entry = RECIPES[recipe]
    warnings = []
    for key in filter(None, (entry.source, *entry.more_sources)):
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        if not node:
            continue
        try:
            locate_source(str(node), key)
        except CheckpointError as err:
            warnings.append(str(err))
    return warnings


def _default_out_dir(recipe: str, cfg, path: Path, overrides: list[str]) -> None:
    """The run directory the recipe command would use (``maskagain.cli.recipe``'s rule)."""
    from maskagain.cli.recipe import default_out_dir
    from maskagain.config import load_yaml

    if "out_dir" not in load_yaml(path) and not any(_sets(o, "out_dir") for o in overrides):
        cfg.out_dir = default_out_dir(recipe, cfg, str(path)) or cfg.out_dir


def _plain(cfg) -> dict:
    from maskagain.config import to_dict

    return to_dict(cfg)


def _fail(errors: list[str]) -> int:
    for error in errors:
        print(f"maskagain validate: error: {error}", file=sys.stderr)
    return 2
