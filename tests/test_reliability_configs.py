"""Bad configs and arguments fail fast with one line naming the key.

The cases are generated from the config dataclasses (every leaf field of every recipe, found by
introspection, so a new field is covered automatically): a value of the wrong type and an
out-of-range value, each given through the real CLI entry point with the recipe's runner
replaced by a recorder. Each must exit 2 with one stderr line naming the dotted key, before the
runner (hence any data or model loading) is reached. An out-of-range value may only be accepted
by a field listed in ``UNBOUNDED`` with the reason.

Then the checks that need the file system: a teacher path that does not exist, a teacher whose
patch grid cannot match the student, and empty or missing datasets, through ``maskagain
distill`` / ``pretrain``, before any model is built or video read.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Literal

import pytest
import yaml
from _reliability import ROOT, teacher_path

import maskagain.recipes.distill as distill_mod
from maskagain.cli.main import main
from maskagain.recipes.configs import (
    DistillConfig,
    EvaluateConfig,
    FinetuneConfig,
    PretrainConfig,
    ProbeConfig,
)

# recipe -> (config class, tiny config, module.function that runs it)
RECIPES = {
    "pretrain": (PretrainConfig, "pretrain.yaml", "maskagain.recipes.pretrain.run"),
    "distill": (DistillConfig, "distill.yaml", "maskagain.recipes.distill.run"),
    "finetune": (FinetuneConfig, "finetune.yaml", "maskagain.recipes.finetune.run"),
    "evaluate": (EvaluateConfig, "evaluate.yaml", "maskagain.recipes.evaluate.run"),
    "probe": (ProbeConfig, "probe.yaml", "maskagain.recipes.probe.run"),
}

# fields where any value of the right type is acceptable to the config, and why
UNBOUNDED = {
    "out_dir": "any directory name",
    "data.root": "a path: checked when the dataset is built (test_empty_or_missing_dataset)",
    "data.train_list": "a path: checked when the dataset is built",
    "data.val_list": "a path: checked when the dataset is built",
    "data.test_list": "a path: checked when the dataset is built",
    "data.class_index": "a path: checked when the dataset is built",
    "data.listing_cache": "a path the run writes the listing of a bucket to",
    "data.synthetic_store": "a path: checked when the dataset is built (test_demo_headline)",
    "data.mean": "any real per-channel mean",
    "teacher.source": "a path or hub id: checked when loaded (test_missing_teacher)",
    "init.source": "a path or hub id: checked when loaded",
    "encoder": "a path: checked when loaded",
    "checkpoint": "a path: checked when loaded",
    "class_names": "a path: checked when read",
    "objective.layer": "negative layers count from the end; checked against the depth",
}


def leaves(cls: type, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from leaves(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", tp


def bad_values(tp) -> dict[str, object]:
    """{'type': a value of the wrong type, 'range': an out-of-range value} for an annotation.
    Strings are typed on the command line; other objects go through a YAML file."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = options[0] if len(options) == 1 else tp
        if set(options) - {int} and all(  # int or a word: data.num_workers (int | "auto")
            o is int or typing.get_origin(o) is Literal for o in options
        ):
            return {"type": "abc", "range": "-1"}
    origin = typing.get_origin(tp)
    if tp is bool:
        return {"type": "maybe"}  # a bool has no range
    if tp in (int, float):
        return {"type": "abc", "range": "-1"}
    if tp is str:
        return {"type": {"not": "a string"}, "range": "bogus-value"}
    if origin is Literal:
        return {"type": [1, 2], "range": "bogus-value"}
    if origin is tuple:
        args = typing.get_args(tp)
        n = 1 if not args or args[-1] is Ellipsis else len(args)
        return {"type": "abc", "range": ",".join(["-1"] * n)}
    if tp is dict or origin is dict:
        return {"type": "abc", "range": {"bogus_field": 1}}
    raise AssertionError(f"no bad values for annotation {tp!r}: extend bad_values()")


def cases():
    for recipe, (cls, _, _) in RECIPES.items():
        for key, tp in leaves(cls):
            for kind, value in bad_values(tp).items():
                yield recipe, key, kind, value


def run_case(recipe, key, kind, value, tmp_path, capsys, called) -> str | None:
    """None when the case behaves; otherwise what went wrong."""
    _, config, _ = RECIPES[recipe]
    base = str(ROOT / "configs/tiny" / config)
    args = [recipe, "--config", base]
    if isinstance(value, str):
        args.append(f"{key}={value}")
    else:
        tree: dict = {"defaults": base}
        node = tree
        for part in key.split(".")[:-1]:
            node = node.setdefault(part, {})
        node[key.split(".")[-1]] = value
        path = tmp_path / "case.yaml"
        path.write_text(yaml.safe_dump(tree))
        args[2] = str(path)
    out_dir = tmp_path / "out"
    if key != "out_dir":
        args += ["--out", str(out_dir)]
    called.clear()
    code = main(args)
    captured = capsys.readouterr()
    if kind == "range" and code == 0 and key in UNBOUNDED:
        return None if called else "accepted but the runner was not reached"
    lines = captured.err.strip().splitlines()
    if code != 2:
        return f"exit {code} (runner called: {bool(called)}): {captured.err.strip()[-300:]}"
    if called or out_dir.exists():
        return "failed only after the runner started"
    if len(lines) != 1:
        return f"{len(lines)} stderr lines: {captured.err[-300:]}"
    if not re.search(rf"'{re.escape(key)}['\[.]", lines[0]):
        return f"error does not name '{key}': {lines[0][:300]}"
    if not lines[0].startswith(f"maskagain {recipe}: error: "):
        return f"not a CLI error line: {lines[0][:200]}"
    return None


@pytest.mark.slow
def test_every_field_wrong_type_and_out_of_range_fails_fast_naming_the_key(
    tmp_path, capsys, monkeypatch
):
    called: list = []
    # the tiny configs name checkpoints earlier tiny runs write; paths are checked elsewhere
    monkeypatch.setattr("maskagain.cli.recipe.check_paths", lambda cfg, recipe: None)
    for target in {t for _, _, t in RECIPES.values()}:
        module, name = target.rsplit(".", 1)
        monkeypatch.setattr(f"{module}.{name}", lambda *a, **k: called.append(a) or _Summary())
    all_cases = list(cases())
    assert len(all_cases) > 300  # every leaf of five recipes (sanity check on the generator)
    failures = []
    for case in all_cases:
        problem = run_case(*case, tmp_path, capsys, called)
        if problem:
            failures.append(f"{case[0]} {case[1]}={case[3]!r} ({case[2]}): {problem}")
    assert not failures, "\n".join(failures)


class _Summary(dict):
    """What a stubbed runner returns: every key the CLI prints reads as 0."""

    def __getitem__(self, key):
        return self.get(key, 0)


def test_unbounded_list_names_real_fields():
    keys = {key for _, key, _, _ in cases()}
    assert set(UNBOUNDED) <= keys


# ----------------------------------------------------------------------------- file system
def distill(tmp_path, *extra) -> int:
    config = str(ROOT / "configs/tiny/distill.yaml")
    return main(["distill", "--config", config, "--out", str(tmp_path / "run"), *extra])


@pytest.fixture
def no_data_reads(monkeypatch):
    """Fails the test if a dataset is opened or a student is built."""

    def refuse(*args, **kwargs):
        raise AssertionError("the run went past its checks")

    monkeypatch.setattr(distill_mod, "build_distill_module", refuse)
    monkeypatch.setattr(distill_mod, "build_masked_trainer", refuse)


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("maskagain distill: error: ")
    return lines[0]


def test_missing_teacher(tmp_path, capsys, no_data_reads):
    missing = tmp_path / "no_such_teacher.safetensors"
    assert distill(tmp_path, f"teacher.source={missing}") == 2  # checked before the data
    line = one_error_line(capsys)
    assert "'teacher.source'" in line and str(missing) in line and "does not exist" in line
    assert distill(tmp_path, "teacher.source=") == 2
    assert "'teacher.source' is empty" in one_error_line(capsys)


def test_teacher_grid_mismatch(tmp_path, capsys, no_data_reads):
    """A teacher whose tubelet differs cannot share the student's masks: one line before any
    data is read. (A different patch is aligned and a different clip length resamples the
    positions: tests/test_cli_distill.py runs both.)"""
    from maskagain.models.loading import save_encoder
    from maskagain.models.registry import create_model

    model = create_model("vit_nano", img_size=32, num_frames=4, patch_size=8, tubelet_size=4)
    path = save_encoder(model, tmp_path / "tubelet.safetensors")
    assert distill(tmp_path, f"teacher.source={path}") == 2
    line = one_error_line(capsys)
    assert "config key 'teacher.source'" in line and "tubelet is 4 frames" in line


@pytest.mark.parametrize("case", ["empty_list", "missing_list", "unset_list", "empty_folder"])
def test_empty_or_missing_dataset(tmp_path, tmp_path_factory, capsys, monkeypatch, case):
    teacher = teacher_path(tmp_path_factory)

    def refuse(*args, **kwargs):
        raise AssertionError("the teacher was loaded before the dataset was checked")

    monkeypatch.setattr(distill_mod, "load_encoder", refuse)
    monkeypatch.setattr(distill_mod, "build_distill_module", refuse)
    (tmp_path / "empty.txt").write_text("# no videos\n")
    (tmp_path / "videos").mkdir()
    data = {
        "empty_list": ["data.kind=list", f"data.train_list={tmp_path / 'empty.txt'}"],
        "missing_list": ["data.kind=list", f"data.train_list={tmp_path / 'nope.txt'}"],
        "unset_list": ["data.kind=list"],
        "empty_folder": ["data.kind=folder", f"data.root={tmp_path / 'videos'}"],
    }[case]
    assert distill(tmp_path, f"teacher.source={teacher}", *data) == 2
    line = one_error_line(capsys)
    key = "data.root" if case == "empty_folder" else "data.train_list"
    if case == "missing_list":  # found missing before any data is read
        assert f"config key '{key}': {tmp_path / 'nope.txt'} does not exist" in line
    else:
        assert f"config key '{key}': no usable train dataset" in line


@pytest.mark.parametrize("recipe", ["pretrain", "finetune"])
def test_empty_dataset_other_recipes(tmp_path, capsys, recipe):
    (tmp_path / "empty.txt").write_text("")
    config = str(ROOT / f"configs/tiny/{recipe}.yaml")
    args = ["data.kind=list", f"data.train_list={tmp_path / 'empty.txt'}"]
    assert main([recipe, "--config", config, "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"maskagain {recipe}: error: ")
    assert "config key 'data.train_list': no usable train dataset" in err[0]
    assert not list(Path(tmp_path / "r").glob("checkpoints/*"))


@pytest.mark.parametrize("split", ["val", "test"])
def test_finetune_empty_val_or_test_list_fails_before_training(
    tmp_path, capsys, monkeypatch, split
):
    """Fine-tuning reads its val and test lists up front: an empty one is a one-line error
    before any model is built, not a traceback after the last epoch."""
    import maskagain.recipes.finetune as finetune_mod

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the val/test lists were checked")

    monkeypatch.setattr(finetune_mod, "build_finetune_model", refuse)
    (tmp_path / "good.txt").write_text("a.mp4 0\nb.mp4 1\n")  # lists only: no video opened
    (tmp_path / "empty.txt").write_text("# nothing here\n")
    lists = {"train": "good", "val": "good", "test": "good", split: "empty"}
    args = ["data.kind=list"] + [f"data.{k}_list={tmp_path / v}.txt" for k, v in lists.items()]
    config = str(ROOT / "configs/tiny/finetune.yaml")
    assert main(["finetune", "--config", config, "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("maskagain finetune: error: "), err
    assert f"config key 'data.{split}_list': no usable {split} dataset" in err[0]


# evaluate / probe read their lists before any model: (recipe, failing split's key, overrides)
EVAL_SOURCES = {
    "evaluate_empty_list": ("evaluate", "data.test_list", ["data.test_list={empty}"]),
    "evaluate_comments_only": ("evaluate", "data.test_list", ["data.test_list={comments}"]),
    "evaluate_val_fallback": ("evaluate", "data.val_list", ["data.val_list={empty}"]),
    "evaluate_no_videos": ("evaluate", "data.root", ["data.kind=folder", "data.root={videos}"]),
    "probe_empty_train": ("probe", "data.train_list", ["data.train_list={empty}"]),
    "probe_comments_only_val": (
        "probe",
        "data.val_list",
        ["data.train_list={good}", "data.val_list={comments}"],
    ),
    "probe_no_videos": ("probe", "data.root", ["data.kind=folder", "data.root={videos}"]),
}


@pytest.mark.parametrize("case", list(EVAL_SOURCES))
def test_empty_dataset_evaluate_and_probe(tmp_path, capsys, monkeypatch, case):
    """An empty list, a list of comments and blank lines, or a root without videos: exit 2 with
    one line naming the key, the file and what it must hold, before any model is loaded."""
    import maskagain.recipes.evaluate as eval_mod
    import maskagain.recipes.probe as probe_mod

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the dataset was checked")

    monkeypatch.setattr(eval_mod, "load_classifier", refuse)
    monkeypatch.setattr(probe_mod, "load_encoder", refuse)
    files = {
        "empty": tmp_path / "empty.txt",
        "comments": tmp_path / "comments.txt",
        "good": tmp_path / "good.txt",
        "videos": tmp_path / "videos",
    }
    files["empty"].write_text("")
    files["comments"].write_text("# header\n\n   \n# no videos listed\n")
    files["good"].write_text("a.mp4 0\nb.mp4 1\n")  # list files only: no video is opened
    (files["videos"] / "class_a").mkdir(parents=True)  # a class folder without videos
    recipe, key, overrides = EVAL_SOURCES[case]
    config = str(ROOT / f"configs/tiny/{recipe}.yaml")
    model = "checkpoint" if recipe == "evaluate" else "encoder"
    (tmp_path / "model.safetensors").write_bytes(b"")  # exists (checked first), never loaded
    args = [f"{model}={tmp_path / 'model.safetensors'}", "data.kind=list"]
    args += [o.format(**files) for o in overrides]
    code = main([recipe, "--config", config, "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"maskagain {recipe}: error: "), err
    assert f"config key '{key}': no usable" in lines[0]
    if key != "data.root":
        bad = files["empty" if "empty" in case or "fallback" in case else "comments"]
        assert f"{bad}: no entries" in lines[0]
    else:
        assert f"{files['videos']}: no video files" in lines[0]
    assert "; set it to a " in lines[0], "the error names the fix"
    assert "Traceback" not in err
    assert not (tmp_path / "r" / "summary.json").exists()


@pytest.mark.subprocess
def test_empty_evaluate_list_from_the_console_script(tmp_path):
    """The same through a real process: one stderr line, exit 2, no traceback."""
    import subprocess
    import sys

    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "model.safetensors").write_bytes(b"")  # exists: the checkpoint is checked first
    cmd = [
        sys.executable, "-m", "maskagain", "evaluate",
        "--config", str(ROOT / "configs/tiny/evaluate.yaml"), "--out", str(tmp_path / "r"),
        f"checkpoint={tmp_path / 'model.safetensors'}", "data.kind=list",
        f"data.test_list={tmp_path / 'empty.txt'}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (
        f"maskagain evaluate: error: config key 'data.test_list': no usable test dataset: "
        f"{tmp_path / 'empty.txt'}: no entries; set it to a list file of 'path label' lines, "
        "one per video"
    )
