"""``maskagain`` console script: the recipes' subcommands (``maskagain.recipes.RECIPES``,
through ``maskagain.cli.recipe``) and one subcommand per tool module in ``maskagain.cli``.

A tool module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
The library never imports from here.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import sys

from maskagain.cli import recipe as recipe_cli
from maskagain.cli.common import ConfigHelpParser
from maskagain.recipes import RECIPES

# subcommand -> module under maskagain.cli; each imports torch and PyAV only inside its run(),
# so `--help` stays fast (tests/test_cli_first_hour.py checks it)
SUBCOMMANDS: dict[str, str] = {
    "ls": "ls",
    "cp": "cp",
    "validate": "validate",
    "make-synthetic": "make_synthetic",
    "export": "export",
    "inspect": "inspect_cmd",
    "demo": "demo",
    "visualize": "visualize",
    "prepare": "prepare",
    "predict": "predict",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskagain",
        description="Masked video distillation (MaskAgain): pre-train, distill, fine-tune, evaluate.",
        epilog="start with `maskagain demo --quick` (about 10 s on a CPU); `maskagain ls` lists "
        "models, configs and recipes; `maskagain COMMAND --help` shows a command's options",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ConfigHelpParser)
    for name, recipe in RECIPES.items():
        p = sub.add_parser(name, help=recipe.help, description=recipe.help)
        recipe_cli.add_arguments(p, recipe)
        p.set_defaults(_run=functools.partial(recipe_cli.run, recipe=recipe))
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(f"maskagain.cli.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def version() -> str:
    """The installed package's version (its metadata), or "unknown" when it is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("maskagain")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options (``--out DIR a.b=1``): argparse leaves those
    # for last, so gather them here for the subcommands that take overrides
    if (
        extra
        and isinstance(getattr(args, "overrides", None), list)
        and all(_is_override(e) for e in extra)
    ):
        args.overrides.extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        code = known_error_code(err)
        if code is None:
            raise
        message = " ".join(str(err).split())
        print(f"maskagain {args.command}: error: {message}", file=sys.stderr)
        return code


def _is_override(item: str) -> bool:
    key, sep, _ = item.partition("=")
    return bool(sep and key) and not item.startswith("-")


def known_error_code(err: Exception) -> int | None:
    """Exit code for errors users cause (printed as one line, no traceback); None otherwise.

    2: an invalid configuration; 1: an unreadable checkpoint, a non-finite loss, too many bad
    video files; 128 + signal number (130, 143): SIGINT/SIGTERM stopped training after a
    checkpoint.
    """
    from maskagain.config import ConfigError

    if isinstance(err, ConfigError):
        return 2
    from maskagain.engine.trainer import NonFiniteLossError, TrainingInterrupted

    if isinstance(err, TrainingInterrupted):
        return 128 + err.signum
    from maskagain.checkpoints import CheckpointError

    known: tuple[type[Exception], ...] = (CheckpointError, NonFiniteLossError)
    try:
        from maskagain.data import TooManyBadFiles

        known += (TooManyBadFiles,)
    except ImportError:
        pass
    return 1 if isinstance(err, known) else None


if __name__ == "__main__":
    sys.exit(main())
