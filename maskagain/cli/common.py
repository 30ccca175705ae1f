"""Arguments shared by the training subcommands: ``--config``, overrides, ``--out``, ``--resume``.

Usage (``maskagain.cli.recipe`` does this for every recipe)::

    add_config_arguments(parser, DistillConfig)
    ...
    cfg = config_from_args(args, DistillConfig)
    if args.dry_run:
        return print_config(cfg)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

import yaml

from maskagain.config import load_config, to_dict


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, resume: bool = True) -> None:
    """Add the common options and an epilog listing every config section and its keys."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML config (may name 'defaults')")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides applied on top of the config, e.g. optim.base_lr=3e-4",
    )
    parser.add_argument("--out", metavar="DIR", help="run directory (overrides out_dir)")
    if resume:
        parser.add_argument(
            "--resume",
            metavar="auto|PATH",
            help="'auto': continue from the newest checkpoint in the run directory (fresh start "
            "if there is none); PATH: that checkpoint",
        )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the config, print it resolved and exit without reading any data",
    )
    parser.epilog = config_epilog(cls)


def config_epilog(cls: type) -> str:
    """'config keys:' followed by one line per section with its field names."""
    lines = ["config keys (set in --config or as key=value; --dry-run prints every value):"]
    hints = typing.get_type_hints(cls)
    scalars = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            names = ", ".join(g.name for g in dataclasses.fields(tp))
            lines.append(f"  {f.name}.{{{names}}}")
        else:
            scalars.append(f.name)
    lines.insert(1, f"  {', '.join(scalars)}")
    return "\n".join(lines)


def config_from_args(args: argparse.Namespace, cls: type, base: dict | None = None):
    """Load ``--config`` (over ``base``), apply the overrides and ``--out``, validate; raises
    ConfigError."""
    overrides = list(args.overrides or [])
    if getattr(args, "out", None):
        overrides.append(f"out_dir={args.out}")
    return load_config(cls, args.config, overrides, base)


def print_config(cfg) -> int:
    """Print the resolved config as YAML; returns exit code 0."""
    sys.stdout.write(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return 0
