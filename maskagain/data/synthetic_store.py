"""Prerendered synthetic clips in a folder, read by every dataset whose config names it.

Rendering a clip is deterministic from ``(spec, seed, split, epoch, index)``, so a stored clip is
the clip rendering would give. Rendering a set of clips once (in several processes) lets many runs
in a row, and their loader workers (forked or spawned), read the same clips without rendering
them again: set ``data.synthetic_store`` to the folder. The folder holds

* ``index.json``: the spec and seed the clips were rendered from and, per split, its chunks
  ``{"file": "train-0.npy", "clips": [[epoch, index], ...]}`` (row ``k`` of the file is the
  ``k``-th clip of the list);
* one ``.npy`` file per chunk, uint8 ``(N, T, S, S, 3)``, read as a memory map.

A folder rendered from another spec or seed is refused, never read.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from maskagain.data.synthetic import SyntheticSpec, make_clip

INDEX = "index.json"


def _render_job(job: tuple[SyntheticSpec, int, str, int, int]) -> np.ndarray:
    spec, seed, split, epoch, index = job
    return make_clip(spec, seed, split, index, epoch)[0]


class SyntheticStore:
    """The prerendered clips of one ``(spec, seed)`` in ``folder`` (created by :meth:`render`)."""

    def __init__(self, folder: str | os.PathLike, spec: SyntheticSpec, seed: int) -> None:
        self.folder, self.spec, self.seed = Path(folder), spec, int(seed)
        self._chunks: dict[str, list[dict]] = {}  # split -> [{"file", "clips"}]
        self._rows: dict[tuple[str, int, int], tuple[str, int]] = {}  # -> (file, row)
        self._maps: dict[str, np.ndarray] = {}  # file -> its memory map, opened when first read
        if (self.folder / INDEX).is_file():
            self._load(json.loads((self.folder / INDEX).read_text(encoding="utf-8")))

    @classmethod
    def open(cls, folder: str | os.PathLike, spec: SyntheticSpec, seed: int) -> SyntheticStore:
        """The store a reader names: ``folder`` must hold clips of ``spec`` and ``seed``."""
        if not (Path(folder) / INDEX).is_file():
            raise FileNotFoundError(
                f"data.synthetic_store {os.fspath(folder)!r} holds no prerendered clips (no "
                f"{INDEX}); leave it empty to render the clips on the fly"
            )
        return cls(folder, spec, seed)

    def _load(self, index: dict) -> None:
        stored = (index.get("spec"), index.get("seed"))
        if stored != (asdict(self.spec), self.seed):
            raise ValueError(
                f"{self.folder}: its clips were rendered from spec {stored[0]} seed {stored[1]}, "
                f"not spec {asdict(self.spec)} seed {self.seed}; delete the folder or name another"
            )
        for split, chunks in index["splits"].items():
            for chunk in chunks:
                self._add(split, chunk)

    def _add(self, split: str, chunk: dict) -> None:
        self._chunks.setdefault(split, []).append(chunk)
        for row, (epoch, index) in enumerate(chunk["clips"]):
            self._rows[(split, int(epoch), int(index))] = (chunk["file"], row)

    def render(self, split: str, clips: Sequence[tuple[int, int]], workers: int = 1) -> int:
        """Render the ``(epoch, index)`` clips of ``split`` not stored yet, in ``workers``
        processes, into a new chunk. Returns how many were rendered."""
        todo = [(e, i) for e, i in clips if (split, e, i) not in self._rows]
        if not todo:
            return 0
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{split}-{len(self._chunks.get(split, []))}.npy"
        shape = (len(todo), self.spec.frames, self.spec.size, self.spec.size, 3)
        rows = np.lib.format.open_memmap(self.folder / name, "w+", np.uint8, shape)
        jobs = [(self.spec, self.seed, split, e, i) for e, i in todo]
        if workers > 1 and len(jobs) > 64:
            with ProcessPoolExecutor(workers) as pool:
                for k, frames in enumerate(pool.map(_render_job, jobs, chunksize=64)):
                    rows[k] = frames
        else:
            for k, job in enumerate(jobs):
                rows[k] = _render_job(job)
        rows.flush()
        del rows
        self._add(split, {"file": name, "clips": [[e, i] for e, i in todo]})
        self._write_index()
        return len(todo)

    def _write_index(self) -> None:
        index = {"spec": asdict(self.spec), "seed": self.seed, "splits": self._chunks}
        tmp = self.folder / f"{INDEX}.tmp"
        tmp.write_text(json.dumps(index) + "\n", encoding="utf-8")
        os.replace(tmp, self.folder / INDEX)

    def clip(self, split: str, epoch: int, index: int) -> np.ndarray | None:
        """The whole stored clip, read-only uint8 ``(T, S, S, 3)``, or None when not stored."""
        where = self._rows.get((split, int(epoch), int(index)))
        if where is None:
            return None
        file, row = where
        if file not in self._maps:
            self._maps[file] = np.load(self.folder / file, mmap_mode="r")
        return self._maps[file][row]

    def __len__(self) -> int:
        return len(self._rows)

    def __getstate__(self) -> dict:
        """Pickled (spawned loader workers) without its memory maps: each process opens its own."""
        return {**self.__dict__, "_maps": {}}

    def delete(self) -> None:
        """Remove the folder and every clip in it."""
        self._maps.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
        self._chunks.clear()
        self._rows.clear()
