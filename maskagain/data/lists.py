"""Dataset indexes in the formats peers use.

* VideoMAE/MVD list files: ``path label`` per line, space- or comma-separated, paths relative to a
  root prefix (absolute paths are kept).
* Frame-folder lists (SSv2/rawframes): ``path num_frames label``.
* Class-folder trees: ``root/<class>/<video>`` with a class index generated once and saved.

A malformed line is an error at load time naming ``file:line``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

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


def _split(line: str, separator: str, fields: int) -> list[str]:
    """Split from the right so paths may contain the separator (spaces in file names)."""
    if separator == "comma" or (separator == "auto" and "," in line):
        parts = line.rsplit(",", fields - 1)
    else:
        parts = line.rsplit(None, fields - 1)
    return [p.strip() for p in parts]


def _join(root: str, path: str) -> str:
    return path if not root or os.path.isabs(path) else os.path.join(root, path)


def read_list(
    list_file: str | os.PathLike, root: str = "", separator: str = "auto", frames: bool = False
) -> list[VideoRecord]:
    """Parse a list file: ``path label`` lines, or ``path num_frames label`` with ``frames=True``.

    Blank lines and lines starting with ``#`` are skipped.
    """
    list_file = str(list_file)
    fields = 3 if frames else 2
    form = "path num_frames label" if frames else "path label"
    records = []
    with open(list_file, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = _split(line, separator, fields)
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
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
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
) -> tuple[list[VideoRecord], list[str]]:
    """Index a ``directory/<class>/<video>`` tree. Returns (records, class names).

    Class names (label = position) come from ``names``, else from the ``class_index`` file when
    it exists, so labels stay fixed across splits and machines; otherwise they are the sorted
    folder names, saved to ``class_index`` (default ``directory/classes.txt``; a warning if it
    cannot be written).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {directory}")
    folders = sorted(p.name for p in directory.iterdir() if p.is_dir())
    index_path = Path(class_index) if class_index else directory / "classes.txt"
    if names is None and index_path.is_file():
        names = read_class_index(index_path)
    elif names is None:
        names = folders
        if not names:
            raise ValueError(f"{directory}: no class folders")
        save_class_index(names, index_path)
    unknown = sorted(set(folders) - set(names))
    if unknown:
        raise ValueError(f"{directory}: class folders {unknown[:5]} are not in the class index")
    label = {n: i for i, n in enumerate(names)}
    records = []
    for name in folders:
        for file in sorted((directory / name).rglob("*")):
            if file.is_file() and file.suffix.lower() in VIDEO_EXTENSIONS:
                records.append(VideoRecord(str(file), label[name]))
    if not records:
        raise ValueError(f"{directory}: no video files with extensions {VIDEO_EXTENSIONS}")
    log.info("%s: %d videos in %d classes", directory, len(records), len(folders))
    return records, names
