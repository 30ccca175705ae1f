"""The videos a user names on the command line: files, folders (walked recursively for video
extensions) and list files (``.txt`` / ``.csv``: a path per line, an optional label after it
ignored, paths relative to the list's folder)."""

from __future__ import annotations

import os
from pathlib import Path

from maskagain.config import ConfigError
from maskagain.data.lists import VIDEO_EXTENSIONS, split_line

LIST_SUFFIXES = (".txt", ".csv", ".lst", ".list")


def collect_videos(inputs: list[str]) -> list[str]:
    """The video paths that ``inputs`` name, in the order given (folders sorted), duplicates
    dropped. Raises :class:`ConfigError` for an input that does not exist or a folder without
    videos; a listed path that is missing is kept (reported when read, like any bad file)."""
    found: list[str] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            videos = sorted(
                str(p)
                for p in path.rglob("*")
                if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
            )
            if not videos:
                raise ConfigError(
                    f"{item} holds no video files ({', '.join(VIDEO_EXTENSIONS)}); "
                    "name the files or another folder"
                )
            found += videos
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            found += read_video_list(path)
        elif path.is_file():
            found.append(str(path))
        else:
            raise ConfigError(f"{item} does not exist; give video files, folders or list files")
    return list(dict.fromkeys(found))


def read_video_list(path: Path) -> list[str]:
    """Paths of a list file: one per line (``path`` or ``path label``); ``#`` comments and blank
    lines skipped; relative paths are read against the list's folder."""
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        entry = line
        parts = split_line(line, "auto", 2)
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            entry = parts[0]  # "path label": the label is not needed to predict
        out.append(entry if os.path.isabs(entry) else str(path.parent / entry))
    if not out:
        raise ConfigError(f"list file {path} names no videos")
    return out
