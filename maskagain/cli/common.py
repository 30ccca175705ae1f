"""Arguments shared by the recipe subcommands: ``--config``, overrides, ``--out``, ``--resume``,
``--overwrite``, ``--dry-run``; and what the CLI checks about a run directory before a recipe
writes into it.

Usage (``maskagain.cli.recipe`` does this for every recipe)::

    add_config_arguments(parser, DistillConfig, example="engine.batch_size=32")
    ...
    cfg = config_from_args(args, DistillConfig)
    if args.dry_run:
        return print_config(cfg)
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import shutil
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from maskagain.config import (
    ConfigError,
    apply_overrides,
    deep_merge,
    field_docs,
    load_config,
    load_yaml,
    to_dict,
)

# what a run directory holds once a recipe has started in it (besides its top-level files)
RUN_FOLDERS = ("checkpoints", "tensorboard")
# where --overwrite keeps the run it replaces until the new one has run
STASH = ".replaced-run"


def add_config_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    resume: bool = True,
    example: str = "",
    out_rule: str = "",
) -> None:
    """Add the common options and an epilog listing every config section and its keys.

    ``example``: a ``key=value`` override that exists for ``cls``; ``out_rule``: where the run
    goes when ``out_dir`` is set nowhere (said in ``--out``'s help)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--config",
        metavar="FILE.yaml|NAME",
        help="YAML config (may name 'defaults'), or a shipped config by name, e.g. "
        "folder/finetune (`maskagain ls configs` lists them, `maskagain cp NAME FILE` copies one)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides applied on top of the config"
        + (f", e.g. {example}" if example else ""),
    )
    default = f"; default: out_dir of the config, else {out_rule}" if out_rule else ""
    parser.add_argument("--out", metavar="DIR", help=f"run directory (sets out_dir){default}")
    reuse = parser.add_mutually_exclusive_group()
    if resume:
        reuse.add_argument(
            "--resume",
            metavar="auto|PATH",
            help="'auto': continue from the newest checkpoint in the run directory (fresh start "
            "if there is none); PATH: that checkpoint",
        )
    reuse.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run the directory holds (its files, checkpoints/ and tensorboard/; "
        "other folders stay): it is deleted when the command ends, or put back if the command "
        "fails before writing a checkpoint, a log line or a summary; without this flag"
        + (" or --resume" if resume else "")
        + " such a directory is refused",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the config, print it resolved and exit without reading any data",
    )
    if isinstance(parser, ConfigHelpParser):
        parser.config_cls = cls  # the key list is made only when help is shown
    else:
        parser.epilog = config_epilog(cls)


class ConfigHelpParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose ``--help`` ends with the keys of ``config_cls`` and what each
    does (:func:`config_epilog`), read only when help is shown, so that building every
    subcommand's parser stays cheap."""

    config_cls: type | None = None

    def format_help(self) -> str:
        if self.config_cls is not None and self.epilog is None:
            self.epilog = config_epilog(self.config_cls)
        return super().format_help()


def config_epilog(cls: type) -> str:
    """'config keys:' followed by one line per key (``section.key``) with what it does."""
    keys = config_keys(cls)
    width = min(max(len(k) for k, _ in keys) + 2, 30)
    lines = ["config keys (set in --config or as key=value; --dry-run prints every value):"]
    for key, doc in keys:
        text = textwrap.wrap(doc or "-", 100 - width - 2) or ["-"]
        first = f"  {key:<{width}}" if len(key) < width else f"  {key}\n  {'':<{width}}"
        lines.append(first + text[0])
        lines.extend(f"  {'':<{width}}{t}" for t in text[1:])
    return "\n".join(lines)


def config_keys(cls: type, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, one-line description) of every leaf key of config dataclass ``cls``: its own
    fields first, then each section's; the description is the field's attribute docstring
    (:func:`maskagain.config.field_docs`), "" when it has none."""
    docs = field_docs(cls)
    leaves, sections = [], []
    for f in dataclasses.fields(cls):
        section = _section_type(cls, f)
        if section is not None:
            sections.extend(config_keys(section, f"{prefix}{f.name}."))
        else:
            leaves.append((f"{prefix}{f.name}", docs.get(f.name, "")))
    return leaves + sections


def _section_type(cls: type, f: dataclasses.Field) -> type | None:
    """The dataclass a field of ``cls`` holds (a config section), or None for a value. Reads
    the annotation's name in ``cls``'s module, as ``typing.get_type_hints`` would, without
    evaluating every annotation."""
    tp = f.type
    if isinstance(tp, str):
        tp = vars(sys.modules[cls.__module__]).get(tp)
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def cli_overrides(args: argparse.Namespace) -> list[str]:
    """The dotted overrides of the command line, ``--out`` last (as ``out_dir=``)."""
    overrides = list(args.overrides or [])
    if getattr(args, "out", None):
        overrides.append(f"out_dir={args.out}")
    return overrides


def config_from_args(args: argparse.Namespace, cls: type, base: dict | None = None):
    """Load ``--config`` (over ``base``), apply the overrides and ``--out``, validate, read the
    data paths against the working directory; raises ConfigError."""
    return load_config(cls, args.config, cli_overrides(args), base, relative_to=os.getcwd())


def shipped_configs() -> Path:
    """The folder of the configs shipped inside the package."""
    return Path(__file__).resolve().parents[1] / "configs"


def resolve_config(name: str | None) -> str | None:
    """The file ``--config NAME`` means: an existing file as given, else a shipped config
    (``distill/k400_vit_b`` or ``distill/k400_vit_b.yaml`` under ``maskagain/configs/``).
    Raises ConfigError naming the closest shipped configs."""
    if not name or Path(name).is_file():
        return name
    folder = shipped_configs()
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    shipped = folder / f"{stem}.yaml"
    if shipped.is_file():
        return str(shipped)
    names = sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))
    close = difflib.get_close_matches(stem.removeprefix("configs/"), names, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise ConfigError(
        f"--config {name}: no such file and no shipped config of that name{hint} "
        "(`maskagain ls configs` lists them)"
    )


def raw_tree(args: argparse.Namespace, base: Mapping | None = None) -> dict:
    """The config as written (``base``, the ``--config`` file with its ``defaults``, the
    overrides), before any default or check is applied."""
    tree = deep_merge(base or {}, load_yaml(args.config) if args.config else {})
    return apply_overrides(tree, cli_overrides(args))


def sets_out_dir(args: argparse.Namespace, base: Mapping | None = None) -> bool:
    """Whether ``out_dir`` is given anywhere: ``--out``, an override, the config file or one
    it includes."""
    return "out_dir" in raw_tree(args, base)


def print_config(cfg) -> int:
    """Print the resolved config as YAML; returns exit code 0."""
    sys.stdout.write(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return 0


def run_contents(run_dir: str | Path) -> list[str]:
    """What shows that ``run_dir`` holds a run, finished or not: ``config.yaml``,
    ``summary.json``, ``log.jsonl`` and the training checkpoints; empty when there is none."""
    run_dir = Path(run_dir)
    found = [n for n in ("config.yaml", "summary.json", "log.jsonl") if (run_dir / n).is_file()]
    ckpts = sorted((run_dir / "checkpoints").glob("ckpt_step*.pt"))
    if ckpts:
        found.append(f"{len(ckpts)} checkpoint{'s' if len(ckpts) > 1 else ''}")
    return found


def _progress(run_dir: Path) -> tuple:
    """What only running writes: checkpoint names, ``log.jsonl``'s size, ``summary.json``'s
    modification time."""
    ckpts = tuple(sorted(p.name for p in (run_dir / "checkpoints").glob("ckpt_step*.pt")))
    log_file, summary = run_dir / "log.jsonl", run_dir / "summary.json"
    return (
        ckpts,
        log_file.stat().st_size if log_file.is_file() else 0,
        summary.stat().st_mtime_ns if summary.is_file() else None,
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@dataclass
class RunGuard:
    """A command's changes to its run directory, undone when it fails before running.

    :meth:`enter` notes the directory (and with ``replace`` moves the run it holds aside: its
    files and its ``checkpoints/`` and ``tensorboard/`` folders; other folders stay).
    :meth:`finish` then keeps what the command wrote, unless it failed before writing a
    checkpoint, a log line or a summary: then the directory goes back to how it was (the
    replaced run comes back, a ``config.yaml`` it rewrote is restored, files it created are
    removed), so a typo never costs an earlier run nor leaves a half-made one behind.
    """

    run_dir: Path
    existed: bool
    before: set[str]
    saved: dict[str, bytes]
    marks: tuple = ()
    stash: Path | None = None

    @classmethod
    def enter(cls, run_dir: str | Path, replace: bool = False) -> RunGuard:
        run_dir = Path(run_dir)
        existed = run_dir.is_dir()
        before = {p.name for p in run_dir.iterdir()} if existed else set()
        saved = {n: (run_dir / n).read_bytes() for n in ("config.yaml", "train.log") if n in before}
        guard = cls(run_dir, existed, before, saved)
        if replace and existed:
            guard.stash = run_dir / STASH
            if guard.stash.exists():  # left by a replacing command that was killed
                _remove(guard.stash)
            guard.stash.mkdir()
            for path in list(run_dir.iterdir()):
                if path != guard.stash and (path.is_file() or path.name in RUN_FOLDERS):
                    path.rename(guard.stash / path.name)
        guard.marks = _progress(run_dir)
        return guard

    def ran(self) -> bool:
        """Whether the command wrote a checkpoint, a log line or a summary."""
        return _progress(self.run_dir) != self.marks

    def finish(self, failed: bool) -> None:
        """Keep the command's work (and drop the replaced run), or undo a failed start."""
        if failed and not self.ran():
            self.rollback()
        elif self.stash is not None:
            shutil.rmtree(self.stash, ignore_errors=True)

    def rollback(self) -> None:
        if not self.run_dir.is_dir():
            return
        for path in list(self.run_dir.iterdir()):
            if path == self.stash:
                continue
            if self.stash is not None:  # the old run is set aside: all run files are new
                new = path.is_file() or path.name in RUN_FOLDERS
            else:
                new = path.name not in self.before
            if new:
                _remove(path)
            elif path.name in self.saved:
                path.write_bytes(self.saved[path.name])
        if self.stash is not None:
            for path in list(self.stash.iterdir()):
                path.rename(self.run_dir / path.name)
            self.stash.rmdir()
        if not self.existed and not any(self.run_dir.iterdir()):
            self.run_dir.rmdir()
