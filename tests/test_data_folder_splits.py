"""Class-folder trees without val/test folders: seeded, stratified, disjoint held-out parts that
do not depend on where the tree lies; split reports; no file written into the data."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from maskagain.config import ConfigError
from maskagain.data.config import DataConfig
from maskagain.data.lists import folder_split_records, stratified_split
from maskagain.recipes.splits import describe_splits, overlap_with_run, write_splits

NAMES = ["jump", "run", "swim"]


def tree(root: Path, per_class: dict[str, int], prefix: str = "") -> Path:
    """Empty ``.mp4`` files (the scan reads names only) under ``root/prefix/<class>/``."""
    for name, n in per_class.items():
        d = root / prefix / name
        d.mkdir(parents=True, exist_ok=True)
        for j in range(n):
            (d / f"clip {j}.mp4").write_bytes(b"")
    return root


def parts(root: Path, val: float = 0.1, test: float = 0.1, seed: int = 0) -> dict[str, list]:
    return {
        s: folder_split_records(root, s, NAMES, val, test, seed) for s in ("train", "val", "test")
    }


def rel(records, root: Path) -> list[str]:
    return sorted(str(Path(r.path).relative_to(root)) for r in records)


def test_flat_tree_is_split_into_disjoint_stratified_parts(tmp_path):
    root = tree(tmp_path / "videos", {"jump": 20, "run": 10, "swim": 3})
    before = sorted(p.name for p in root.rglob("*"))
    got = parts(root)
    train, val, test = (set(rel(got[s], root)) for s in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)
    assert len(train | val | test) == 33
    for split, expected in (("val", {0: 2, 1: 1, 2: 1}), ("test", {0: 2, 1: 1, 2: 1})):
        counts = {c: sum(r.label == c for r in got[split]) for c in range(3)}
        assert counts == expected, split  # round(0.1 * n), at least one per class
    assert sorted(p.name for p in root.rglob("*")) == before  # nothing written into the data


def test_split_is_the_same_for_a_moved_copy_and_changes_with_the_seed(tmp_path):
    root = tree(tmp_path / "a", {"jump": 12, "run": 12, "swim": 12})
    copy = Path(shutil.copytree(root, tmp_path / "elsewhere" / "b"))
    a, b = parts(root), parts(copy)
    for split in a:
        assert rel(a[split], root) == rel(b[split], copy)
    other = parts(root, seed=1)
    assert rel(other["test"], root) != rel(a["test"], root)


def test_small_classes_keep_one_training_video(tmp_path, caplog):
    root = tree(tmp_path / "v", {"jump": 2, "run": 1, "swim": 5})
    assert stratified_split([], root, {"val": 0.5}, 0) == {"train": [], "val": []}
    got = parts(root, val=0.2, test=0.2)
    by_class = {s: sorted(r.label for r in got[s]) for s in got}
    assert by_class["train"].count(0) == 1 and by_class["train"].count(1) == 1
    assert by_class["test"] == [0, 2] and by_class["val"] == [2]
    assert "too few videos" in caplog.text


def test_zero_val_fraction_is_refused_and_zero_test_fraction_tests_on_val(tmp_path):
    root = tree(tmp_path / "v", {"jump": 5, "run": 5, "swim": 5})
    with pytest.raises(ConfigError, match=r"data\.val_fraction.*val/<class>/"):
        folder_split_records(root, "val", NAMES, 0.0, 0.1, 0)
    got = parts(root, val=0.2, test=0.0)
    assert rel(got["test"], root) == rel(got["val"], root)
    assert len(got["train"]) == 12


def test_split_folders_are_used_as_they_are(tmp_path):
    root = tree(tmp_path / "v", {"jump": 4, "run": 4, "swim": 4}, "train")
    tree(root, {"jump": 1, "run": 1, "swim": 1}, "val")
    got = parts(root)
    assert len(got["train"]) == 12 and len(got["val"]) == 3
    assert got["test"] == got["val"]  # no test folder: tests on val, said by the report
    tree(root, {"jump": 2, "run": 2, "swim": 2}, "test")
    got = parts(root)
    assert len(got["test"]) == 6 and len(got["train"]) == 12


def test_a_train_folder_alone_gives_a_held_out_val_part(tmp_path):
    root = tree(tmp_path / "v", {"jump": 10, "run": 10, "swim": 10}, "train")
    tree(root, {"jump": 2, "run": 2, "swim": 2}, "test")
    got = parts(root, val=0.2)
    assert (len(got["train"]), len(got["val"]), len(got["test"])) == (24, 6, 6)
    assert not set(rel(got["train"], root)) & set(rel(got["val"], root))


class _Listed:
    """What the split report reads from a dataset: ``num_videos`` and ``path(i)``."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.num_videos = len(paths)

    def path(self, i: int) -> str:
        return self.paths[i]


def test_split_report_counts_reuse_and_overlap(tmp_path):
    a, b, c = (str(tmp_path / f"{n}.mp4") for n in "abc")
    summary, listing = describe_splits(
        {"train": _Listed([a]), "val": _Listed([b, c]), "test": _Listed([b, c])}, str(tmp_path)
    )
    assert summary["train"] == {"videos": 1} and summary["test"] == {"videos": 2, "same_as": "val"}
    assert summary["disjoint"] is True and listing["test"] == [b, c]
    summary, _ = describe_splits({"train": _Listed([a, b]), "val": _Listed([b])})
    assert summary["disjoint"] is False and summary["overlap"] == {"train/val": 1}


def test_overlap_with_a_moved_run_compares_paths_under_the_data_root(tmp_path):
    old_root, new_root = tmp_path / "old", tmp_path / "new"
    _, listing = describe_splits(
        {
            "train": _Listed([str(old_root / "x/1.mp4")]),
            "val": _Listed([str(old_root / "x/2.mp4")]),
        },
        str(old_root),
    )
    write_splits(tmp_path, listing)
    assert json.loads((tmp_path / "splits.json").read_text())["root"] == str(old_root)
    paths = [str(new_root / "x/1.mp4"), str(new_root / "x/3.mp4")]
    assert overlap_with_run(paths, str(new_root), tmp_path) == {"in_train": 1, "in_val": 0}
    assert overlap_with_run(paths, str(new_root), tmp_path / "none") is None


def test_fractions_are_validated_and_paths_made_absolute_against_the_base(tmp_path):
    with pytest.raises(ConfigError, match="data.test_fraction"):
        DataConfig(test_fraction=1.0).validate()
    with pytest.raises(ConfigError, match="data.val_fraction"):
        DataConfig(val_fraction=0.6, test_fraction=0.4).validate()
    c = DataConfig(kind="folder", root="vids", class_index="~/c.txt")
    c.validate()
    assert c.root == "vids"  # validating checks values; it rewrites nothing
    c.resolve_paths(tmp_path)
    assert c.root == str(tmp_path / "vids") and c.class_index == str(Path.home() / "c.txt")
    listed = DataConfig(kind="list", train_list="../lists/train.csv")
    listed.resolve_paths(str(tmp_path / "runs"))
    assert listed.root == str(tmp_path / "runs")
    assert listed.train_list == str(tmp_path / "lists" / "train.csv")
    synthetic = DataConfig(kind="synthetic")
    synthetic.resolve_paths(tmp_path)
    assert synthetic.root == ""
    with pytest.raises(ValueError, match="absolute"):
        DataConfig(root="vids").resolve_paths("relative/dir")


def test_the_cli_reads_data_paths_against_its_working_directory(tmp_path, monkeypatch):
    from maskagain.cli.common import config_from_args
    from maskagain.recipes.configs import ProbeConfig

    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(
        config=None, overrides=["encoder=e.pt", "data.kind=folder", "data.root=vids"]
    )
    assert config_from_args(args, ProbeConfig).data.root == str(tmp_path / "vids")
