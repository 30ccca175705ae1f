"""Folder trees to index class-folder datasets: the local filesystem, or one listing of a
remote root (an object store has no folders, only keys), read once and cached as JSON.

The cache (``data.listing_cache``, by default ``<run dir>/listing.json`` for a remote
``data.root``) maps each root to the paths of its files relative to it; a resumed run re-uses
it instead of listing the bucket again. Delete it to see new files.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import PurePosixPath

from maskagain.data.storage import Storage, is_remote, redact

log = logging.getLogger(__name__)


def _key(rel: str) -> tuple[str, ...]:
    """Sort key of a relative path: by its parts, as sorting ``pathlib`` paths does."""
    return PurePosixPath(rel).parts


class LocalTree:
    """The local filesystem."""

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def is_file(self, path: str) -> bool:
        return os.path.isfile(path)

    def dirs(self, path: str) -> list[str]:
        """Names of the folders in ``path``, sorted."""
        return sorted(e.name for e in os.scandir(path) if e.is_dir())

    def files(self, path: str) -> list[str]:
        """Every file under ``path`` (recursively), sorted by path parts."""
        found = [
            os.path.relpath(os.path.join(d, f), path)
            for d, _, names in os.walk(path, followlinks=True)
            for f in names
        ]
        return [os.path.join(path, rel) for rel in sorted(found, key=_key)]


class ListedTree:
    """A remote root as the folders implied by one listing of its files."""

    def __init__(self, root: str, relative: list[str]) -> None:
        self.root = root.rstrip("/")
        self.relative = sorted(relative, key=_key)
        self._files = set(relative)
        self.folders = {"."} | {str(p) for r in relative for p in PurePosixPath(r).parents}

    def _rel(self, path: str) -> str | None:
        path = path.rstrip("/")
        if path == self.root:
            return "."
        return path[len(self.root) + 1 :] if path.startswith(self.root + "/") else None

    def is_dir(self, path: str) -> bool:
        return self._rel(path) in self.folders

    def is_file(self, path: str) -> bool:
        return self._rel(path) in self._files

    def dirs(self, path: str) -> list[str]:
        rel = self._rel(path)
        return sorted(
            PurePosixPath(f).name
            for f in self.folders
            if f != "." and str(PurePosixPath(f).parent) == rel
        )

    def files(self, path: str) -> list[str]:
        rel = self._rel(path)
        if rel is None:
            return []
        inside = (
            self.relative if rel == "." else [r for r in self.relative if r.startswith(rel + "/")]
        )
        return [f"{self.root}/{r}" for r in inside]


FileTree = LocalTree | ListedTree


def file_tree(root: str, cache: str = "", storage: Storage | None = None) -> FileTree:
    """The tree of ``root``: the local filesystem, or for a URL its listing, read from the JSON
    file ``cache`` when that holds ``root`` and otherwise listed (one recursive listing) and
    saved there."""
    if not is_remote(root):
        return LocalTree()
    storage = storage or Storage()
    root = root.rstrip("/")
    listings = _read_cache(cache)
    if root in listings:
        log.info("listing of %s: %d files, from %s", redact(root), len(listings[root]), cache)
        return ListedTree(root, listings[root])
    relative = [p[len(root) + 1 :] for p in storage.list_files(root) if p.startswith(root + "/")]
    log.info("listed %s: %d files", redact(root), len(relative))
    if cache:
        listings[root] = relative
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        storage.write_bytes(cache, json.dumps({"roots": listings}).encode())
    return ListedTree(root, relative)


def _read_cache(cache: str) -> dict[str, list[str]]:
    if not cache or not os.path.isfile(cache):
        return {}
    try:
        with open(cache, encoding="utf-8") as f:
            return dict(json.load(f)["roots"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring the unreadable listing cache %s (%s); listing again", cache, e)
        return {}
