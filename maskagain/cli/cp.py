"""``maskagain cp NAME FILE``: copy a shipped config to edit (as torchtune's ``tune cp``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "copy a shipped config (e.g. folder/finetune) to a file to edit"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="a shipped config (`maskagain ls configs`)")
    parser.add_argument("file", metavar="FILE", help="where to write it (a file or a folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing FILE")


def run(args: argparse.Namespace) -> int:
    from maskagain.cli.common import resolve_config, shipped_configs
    from maskagain.config import ConfigError, load_yaml

    try:
        source = Path(resolve_config(args.name))
    except ConfigError as err:
        return _fail(str(err))
    if shipped_configs() not in source.resolve().parents:
        return _fail(f"{args.name} is not a shipped config (`maskagain ls configs` lists them)")
    target = Path(args.file)
    if target.is_dir():
        target = target / source.name
    if target.exists() and not args.overwrite:
        return _fail(f"{target} exists; add --overwrite to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(copied_text(source, load_yaml(source)))
    print(f"copied {source.relative_to(shipped_configs())} to {target}")
    return 0


def copied_text(source: Path, resolved: dict) -> str:
    """The config with its ``defaults`` folded in (a copy elsewhere cannot reach the shipped
    base files by a relative path), under the shipped file's own comment header."""
    import yaml

    header = []
    for line in source.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    header.append(
        f"# copied from the shipped config {source.parent.name}/{source.stem} (defaults folded in)"
    )
    return "\n".join(header) + "\n" + yaml.safe_dump(resolved, sort_keys=False)


def _fail(message: str) -> int:
    print(f"maskagain cp: error: {message}", file=sys.stderr)
    return 2
