"""Dataset indexes in the formats peers use.

* VideoMAE/MVD list files: ``path label`` per line, space- or comma-separated, paths relative to a
  root prefix (absolute paths are kept).
* Frame-folder lists (SSv2/rawframes): ``path num_frames label``.
* Class-folder trees: ``root/<class>/<video>`` or ``root/<split>/<class>/<video>``; a tree
  without its own ``val`` / ``test`` folders is split into seeded, stratified held-out parts
  (:func:`folder_split_records`). Nothing is written into the tree.

A malformed line is an error at load time naming ``file:line``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from maskagain.config import ConfigError
from maskagain.data.listing import FileTree, LocalTree
from maskagain.data.storage import Storage, is_remote

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (
    ".mp4",
    ".avi",
    ".mkv",
    ".webm",
    ".mov",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".flv",
    ".3gp",
)


@dataclass(frozen=True)
class VideoRecord:
    """One video of a dataset: a file (or frame folder when ``num_frames`` is set) and its label."""

    path: str
    label: int
    num_frames: int | None = None


class ListFormatError(ValueError):
    """A malformed line in a list file; the message names ``file:line``."""


def split_line(line: str, separator: str, fields: int) -> list[str]:
    """Split from the right so paths may contain the separator (spaces in file names)."""
    if separator == "comma" or (separator == "auto" and "," in line):
        parts = line.rsplit(",", fields - 1)
    else:
        parts = line.rsplit(None, fields - 1)
    return [p.strip() for p in parts]


def _join(root: str, path: str) -> str:
    keep = not root or os.path.isabs(path) or is_remote(path)
    return (
        path
        if keep
        else f"{root.rstrip('/')}/{path}"
        if is_remote(root)
        else os.path.join(root, path)
    )


def read_list(
    list_file: str | os.PathLike, root: str = "", separator: str = "auto", frames: bool = False
) -> list[VideoRecord]:
    """Parse a list file: ``path label`` lines, or ``path num_frames label`` with ``frames=True``.

    Blank lines and lines starting with ``#`` are skipped. ``list_file`` and ``root`` may be
    URLs (``s3://...``, see :mod:`maskagain.data.storage`).
    """
    list_file = str(list_file)
    fields = 3 if frames else 2
    form = "path num_frames label" if frames else "path label"
    records = []
    with _open_text(list_file) as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = split_line(line, separator, fields)
            where = f"{list_file}:{lineno}"
            if len(parts) != fields or not parts[0]:
                raise ListFormatError(f"{where}: expected '{form}', got {line!r}")
            try:
                numbers = [int(p) for p in parts[1:]]
            except ValueError:
                raise ListFormatError(
                    f"{where}: expected integer {form.split(' ', 1)[1]}, got {line!r}"
                ) from None
            if min(numbers) < 0 or (frames and numbers[0] < 1):
                raise ListFormatError(f"{where}: negative label or frame count in {line!r}")
            path = _join(root, parts[0])
            records.append(VideoRecord(path, numbers[-1], numbers[0] if frames else None))
    if not records:
        raise ListFormatError(f"{list_file}: no entries")
    log.info("%s: %d videos", list_file, len(records))
    return records


def _open_text(path: str) -> io.TextIOBase:
    """A local or remote text file (a remote one is read whole: list files are small)."""
    if is_remote(path):
        return io.StringIO(Storage().read_text(path))
    return open(path, encoding="utf-8")


def write_list(records: list[VideoRecord], list_file: str | os.PathLike, root: str = "") -> None:
    """Write records in the VideoMAE format (``path label``, paths relative to ``root``)."""
    with open(list_file, "w", encoding="utf-8") as f:
        for r in records:
            path = os.path.relpath(r.path, root) if root else r.path
            middle = f" {r.num_frames}" if r.num_frames is not None else ""
            f.write(f"{path}{middle} {r.label}\n")


def read_class_index(path: str | os.PathLike) -> list[str]:
    """Class names, label ``i`` at position ``i``, from ``classes.txt`` (one name a line) or
    ``class_index.json`` (a list, a ``{name: index}`` mapping as in Kinetics' files, or an
    ``{index: name}`` mapping). Raises :class:`ListFormatError` naming the file."""
    with _open_text(str(path)) as f:
        text = f.read()
    if str(path).lower().endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ListFormatError(f"{path} is not valid JSON ({e})") from None
        if isinstance(data, dict) and data and all(isinstance(v, int) for v in data.values()):
            data = {str(v): k for k, v in data.items()}  # {name: index}
        if isinstance(data, dict) and data:
            names = names_from_mapping(data, str(path))
        elif isinstance(data, list):
            names = [str(n) for n in data]
        else:
            raise ListFormatError(f"{path} holds neither a list of class names nor a mapping")
    else:
        names = [n.strip() for n in text.splitlines() if n.strip()]
    if len(set(names)) != len(names):
        raise ListFormatError(f"{path}: duplicate class names")
    return names


def names_from_mapping(mapping: dict, where: str) -> list[str]:
    """``{index: name}`` (keys may be strings, as in ``config.json``'s ``id2label``) as a list;
    the indices must be ``0..n-1``."""
    try:
        by_index = {int(k): str(v) for k, v in mapping.items()}
    except (TypeError, ValueError):
        raise ListFormatError(
            f"{where}: keys must be class indices, got {list(mapping)[:5]}"
        ) from None
    if sorted(by_index) != list(range(len(by_index))):
        raise ListFormatError(f"{where}: class indices are not 0..{len(by_index) - 1}")
    return [by_index[i] for i in range(len(by_index))]


def write_class_index(names: list[str], path: str | os.PathLike) -> None:
    Path(path).write_text("".join(f"{n}\n" for n in names), encoding="utf-8")


def save_class_index(names: list[str], path: str | os.PathLike) -> None:
    """``write_class_index``, with a warning instead of an error where it cannot be written."""
    try:
        write_class_index(names, path)
        log.info("wrote class index of %d classes to %s", len(names), path)
    except OSError as e:
        log.warning("could not save the class index to %s: %s", path, e)


def scan_class_folders(
    directory: str | os.PathLike,
    class_index: str | os.PathLike | None = None,
    names: list[str] | None = None,
    tree: FileTree | None = None,
) -> tuple[list[VideoRecord], list[str]]:
    """Index a ``directory/<class>/<video>`` tree. Returns (records, class names).

    Class names (label = position) come from ``names``, else from the ``class_index`` file (or
    ``directory/classes.txt``) when it exists, so labels stay fixed across splits and machines;
    otherwise they are the sorted folder names, saved to ``class_index`` only when one is given
    (a warning if it cannot be written): the data folder itself is never written to.
    ``tree`` answers what is in the folders (default: the local filesystem).
    """
    tree = tree or LocalTree()
    directory = str(directory).rstrip("/") or "/"
    if not tree.is_dir(directory):
        raise FileNotFoundError(f"dataset folder not found: {directory}")
    folders = tree.dirs(directory)
    index_path = str(class_index) if class_index else _sub(directory, "classes.txt")
    if names is None and (tree.is_file(index_path) if not class_index else _exists(index_path)):
        names = read_class_index(index_path)
    elif names is None:
        names = folders
        if not names:
            raise ValueError(f"{directory}: no class folders")
        if class_index:
            save_class_index(names, index_path)
    unknown = sorted(set(folders) - set(names))
    if unknown:
        raise ValueError(f"{directory}: class folders {unknown[:5]} are not in the class index")
    label = {n: i for i, n in enumerate(names)}
    records = []
    for name in folders:
        for file in tree.files(_sub(directory, name)):
            if os.path.splitext(file)[1].lower() in VIDEO_EXTENSIONS:
                records.append(VideoRecord(file, label[name]))
    if not records:
        raise ValueError(f"{directory}: no video files with extensions {VIDEO_EXTENSIONS}")
    log.info("%s: %d videos in %d classes", directory, len(records), len(folders))
    return records, names


def _sub(folder: str, name: str) -> str:
    """``folder/name`` for a local folder or a URL."""
    return f"{folder.rstrip('/')}/{name}" if is_remote(folder) else os.path.join(folder, name)


def _exists(path: str) -> bool:
    return Storage().exists(path) if is_remote(path) else os.path.isfile(path)


# ----------------------------------------------------------------------------- folder splits
SPLIT_FOLDERS = ("train", "val", "test")


def held_out_order(records: list[VideoRecord], base: str | os.PathLike, seed: int) -> list[int]:
    """Positions of ``records`` ordered by a hash of ``seed`` and each path relative to ``base``:
    the same order on every machine, and adding a video does not move the others."""

    def key(i: int) -> str:
        rel = os.path.relpath(records[i].path, base).replace(os.sep, "/")
        return hashlib.sha1(f"{seed}/{rel}".encode()).hexdigest()

    return sorted(range(len(records)), key=key)


def stratified_split(
    records: list[VideoRecord],
    base: str | os.PathLike,
    fractions: dict[str, float],
    seed: int,
    class_names: list[str] | None = None,
) -> dict[str, list[VideoRecord]]:
    """Split ``records`` per class into held-out parts (``fractions``, e.g. ``{"test": 0.1,
    "val": 0.1}``, filled in that order) and ``"train"`` (the rest).

    Each part with a fraction > 0 takes ``max(1, round(fraction * n))`` of a class's n videos
    while one stays in train; a class too small for every part gives what it can (a warning
    names it). Records keep their input order inside each part.
    """
    by_class: dict[int, list[int]] = {}
    for i, r in enumerate(records):
        by_class.setdefault(r.label, []).append(i)
    order = held_out_order(records, base, seed)
    rank = {i: k for k, i in enumerate(order)}
    assigned: dict[int, str] = {}
    short = []
    for label, members in sorted(by_class.items()):
        members = sorted(members, key=rank.__getitem__)
        n, start = len(members), 0
        for part, fraction in fractions.items():
            if fraction <= 0:
                continue
            take = min(max(1, round(fraction * n)), n - 1 - start)
            if take < max(1, round(fraction * n)):
                short.append(class_names[label] if class_names else str(label))
            for i in members[start : start + max(take, 0)]:
                assigned[i] = part
            start += max(take, 0)
    if short:
        log.warning(
            "classes %s have too few videos to hold out %s; they keep at least one for train",
            sorted(set(short))[:10],
            " and ".join(p for p, f in fractions.items() if f > 0),
        )
    parts: dict[str, list[VideoRecord]] = {"train": [], **{p: [] for p in fractions}}
    for i, r in enumerate(records):
        parts[assigned.get(i, "train")].append(r)
    return parts


def folder_split_records(
    root: str | os.PathLike,
    split: str,
    names: list[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    tree: FileTree | None = None,
) -> list[VideoRecord]:
    """The videos of ``split`` in a class-folder tree ``root`` (``tree``: what is in it;
    default the local filesystem).

    ``root/<split>`` is used when it exists. Otherwise the pool (``root/train``, or ``root``)
    gives the held-out parts: val takes ``val_fraction`` of each class unless ``root/val``
    exists, test ``test_fraction`` unless ``root/test`` or ``root/val`` exists (it then tests on
    the val folder); train is the pool minus what was held out. A val split with
    ``val_fraction=0`` and no val folder is refused; a test split with ``test_fraction=0`` and
    no test folder is the val split (both say so in a warning).
    """
    tree = tree or LocalTree()
    root = str(root).rstrip("/") or "/"
    own = {s: _sub(root, s) for s in SPLIT_FOLDERS if tree.is_dir(_sub(root, s))}
    fractions = {}  # the held-out parts taken from the pool, in this order
    if "test" not in own and "val" not in own:
        fractions["test"] = test_fraction
    if "val" not in own:
        fractions["val"] = val_fraction
    carved = any(f > 0 for f in fractions.values())
    if split in own and (split != "train" or not carved):
        return scan_class_folders(own[split], names=names, tree=tree)[0]
    if split == "test" and ("val" in own or test_fraction <= 0):
        log.warning(
            "%s has no 'test' folder%s; the test split is the val split (not a separate "
            "held-out set)",
            root,
            "" if "val" in own else " and data.test_fraction=0",
        )
        return folder_split_records(root, "val", names, val_fraction, test_fraction, seed, tree)
    if split == "val" and val_fraction <= 0:
        raise ConfigError(
            f"config key 'data.val_fraction' is 0 and {root} has no 'val' folder: set "
            f"data.val_fraction > 0 to hold out part of every class, or add {root}/val/<class>/"
        )
    pool = own.get("train", root)
    records = scan_class_folders(pool, names=names, tree=tree)[0]
    parts = stratified_split(records, pool, fractions, seed, names)
    if carved:
        log.info(
            "%s: the %s split has %d videos (held out per class, data.split_seed=%d: %s)",
            pool,
            split,
            len(parts[split]),
            seed,
            ", ".join(f"{k} {len(v)}" for k, v in parts.items()),
        )
    return parts[split]
