"""The demo's headline follows from its numbers; its stage lines, profile and shared clips."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from maskagain.config import ConfigError
from maskagain.data import DataConfig, build_dataset
from maskagain.recipes.demo import stages as demo_stages
from maskagain.recipes.demo.headline import headline, headline_lines, told_apart
from maskagain.recipes.demo.rows import data_section, demo_store
from maskagain.recipes.demo.settings import QUICK_SIZES
from maskagain.recipes.demo.stages import stage_plan


def _row(run: str, objective: str, values: list[float], seconds: float | None = 30.0) -> dict:
    return {"run": run, "objective": objective, "values": values, "seconds": seconds}


def test_overlapping_seeds_are_not_told_apart() -> None:
    rows = [
        _row("maskagain", "MaskAgain", [60.5, 57.1, 59.4], 33.0),
        _row("hint", "Hint", [59.8, 62.2, 59.2], 29.0),
        _row("videomae", "VideoMAE", [34.4, 32.7, 33.3], 36.0),
    ]
    lines = headline_lines(rows, 52.6, 0.2, "probe per time step")
    text = "\n".join(lines)
    # Hint's mean is higher but its seeds overlap MaskAgain's; both are above every VideoMAE seed
    assert "Hint 60.4 ~ MaskAgain 59.0 > VideoMAE 33.5" in text
    assert "over 3 training seeds" in text
    assert "- not told apart: Hint and MaskAgain." in lines
    assert "- selection (MaskAgain) is not told apart from plain Hint at this scale." in lines
    assert "Hint 29 s (1.0x)" in text and "VideoMAE 36 s (1.2x)" in text
    assert "cheapest, Hint" in text
    assert "Hint +7.8, MaskAgain +6.4, VideoMAE -19.1; 2 of 3 student rows above it" in text


def test_separated_seeds_are_told_apart() -> None:
    rows = [
        _row("hint", "Hint", [45.5, 44.6, 44.2]),
        _row("maskagain", "MaskAgain", [51.5, 49.5, 52.0]),
        _row("scratch", "untrained", [35.8, 36.0, 37.1], None),
    ]
    lines = headline_lines(rows, 52.6, 0.2, "probe per time step")
    assert "MaskAgain 51.0 > Hint 44.8 > untrained 36.3" in lines[0]
    assert not any(line.startswith("- not told apart") for line in lines)
    assert "- selection (MaskAgain) is ahead of plain Hint at this scale." in lines
    cost = next(line for line in lines if "pre-training cost" in line)
    assert "untrained" not in cost  # nothing to pre-train
    assert "0 of 3 student rows above it" in lines[-1]
    # and behind when the numbers say so
    swapped = [_row("maskagain", "MaskAgain", [40.0, 41.0]), _row("hint", "Hint", [45.0, 46.0])]
    assert "- selection (MaskAgain) is behind plain Hint at this scale." in (
        headline_lines(swapped, None, None, "probe")
    )


def test_one_seed_is_judged_against_the_probe_noise() -> None:
    # noise 0.2 std: a gap must exceed 2 x sqrt(2) x 0.2 = 0.57 points
    rows = [
        _row("maskagain", "MaskAgain", [60.5]),
        _row("hint", "Hint", [60.1]),
        _row("amd", "AMD", [59.0]),
    ]
    lines = headline_lines(rows, 52.6, 0.2, "probe per time step")
    assert "MaskAgain 60.5 ~ Hint 60.1 > AMD 59.0" in lines[0]
    assert "0.57 points" in lines[0] and "--seeds 0 1 2" in lines[0]
    assert "- not told apart: MaskAgain and Hint." in lines
    # a noisier probe joins all three; an unknown noise establishes nothing
    noisy = headline_lines(rows, None, 1.0, "probe per time step")
    assert "- not told apart: MaskAgain, Hint and AMD." in noisy
    unknown = headline_lines(rows, None, None, "probe per time step")
    assert "MaskAgain 60.5 ? Hint 60.1 ? AMD 59.0" in unknown[0]
    assert told_apart([60.5], [59.0], None) is None


def _summary(values: dict[str, float]) -> dict:
    results = [
        {"run": run, "objective": run.title(), "pretrain_epochs": 5 if run != "scratch" else 0,
         "pretrain_seconds": 30.0, "time_probe_top1": v}
        for run, v in values.items()
    ]  # fmt: skip
    profile = [{"stage": "maskagain", "wall_s": 44.0, "cpu_s": 25.0},
               {"stage": "hint", "wall_s": 56.0, "cpu_s": 26.0}]  # fmt: skip
    return {"results": results, "probe_noise_std": 0.2, "profile": profile}


def test_report_headline_from_a_summary() -> None:
    summary = _summary({"teacher": 52.6, "random_init": 36.0, "maskagain": 60.0, "hint": 59.9,
                        "scratch": 37.0})  # fmt: skip
    lines = headline(summary)
    assert "Maskagain 60.0 ~ Hint 59.9 > Scratch 37.0" in lines[0]  # references left out
    assert "not told apart from plain Hint at this scale (one training seed" in "\n".join(lines)
    cost = next(line for line in lines if "pre-training cost" in line)
    assert "CPU seconds" in cost and "Maskagain 25 s (1.0x), Hint 26 s (1.0x)" in cost
    assert "wall seconds 30, 30" in cost
    assert "against the teacher (52.6" in lines[-1] and "2 of 3 student rows above it" in lines[-1]


def test_stage_lines_carry_elapsed_time_and_an_eta(capsys, monkeypatch) -> None:
    now = [0.0]
    monkeypatch.setattr(demo_stages.time, "time", lambda: now[0])
    stages = demo_stages.Stages([("a", 10.0), ("b", 10.0), ("c", 20.0)])  # t0 = 0
    stages.start("first")  # elapsed 0: the plan's 40 s
    now[0] = 10.0
    stages.start("second")  # a took 10 s as planned: 10 + 30
    now[0] = 30.0
    stages.start("third")  # a and b took 30 s against 20 planned: 30 + 1.5 x 20
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[demo 1/3 |    0s elapsed, ETA   40s total] first"
    assert lines[1] == "[demo 2/3 |   10s elapsed, ETA   40s total] second"
    assert lines[2] == "[demo 3/3 |   30s elapsed, ETA   60s total] third"
    now[0] = 35.0
    profile = stages.finish()
    assert [(p["stage"], p["wall_s"]) for p in profile] == [("a", 10.0), ("b", 20.0), ("c", 5.0)]


def test_stored_clips_are_the_clips_rendering_gives(tmp_path) -> None:
    cfg = DataConfig(**data_section(QUICK_SIZES, 8))
    fresh = build_dataset(cfg, "train", "eval")
    rendered = [fresh[i]["video"] for i in range(8)]
    store = demo_store(QUICK_SIZES, tmp_path / "clips")
    assert store.render("train", [(0, i) for i in range(8)], workers=2) == 8
    assert store.render("train", [(0, i) for i in range(8)]) == 0  # stored
    assert store.clip("train", 1, 3) is None  # another epoch
    cfg.synthetic_store = str(tmp_path / "clips")
    ds = build_dataset(cfg, "train", "eval")  # a reader of its own, from the config key
    assert ds.store is not None and len(ds.store) == 8
    for a, b in zip(rendered, (ds[i]["video"] for i in range(8))):
        assert torch.equal(a, b)
    clip_before = np.array(ds.store.clip("train", 0, 3))
    ds[3]["video"].mul_(0)  # a reader cannot change the stored clip
    assert np.array_equal(ds.store.clip("train", 0, 3), clip_before)
    pickled = pickle.loads(pickle.dumps(ds))  # a spawned loader worker's copy
    assert torch.equal(pickled[5]["video"], rendered[5])


def test_two_stores_in_one_process_stay_apart(tmp_path) -> None:
    one, two = (demo_store(QUICK_SIZES, tmp_path / name) for name in ("one", "two"))
    one.render("train", [(0, 0)])
    assert two.clip("train", 0, 0) is None
    cfg = DataConfig(**data_section(QUICK_SIZES, 8))
    assert build_dataset(cfg, "train", "eval").store is None  # no key: rendered on the fly
    cfg.synthetic_store = str(tmp_path / "two")
    with pytest.raises(FileNotFoundError, match="holds no prerendered clips"):
        build_dataset(cfg, "train", "eval")
    one.delete()
    assert not (tmp_path / "one").exists() and one.clip("train", 0, 0) is None


def test_a_store_of_another_spec_or_seed_is_refused(tmp_path) -> None:
    demo_store(QUICK_SIZES, tmp_path).render("val", [(0, 1)])
    other = data_section(QUICK_SIZES, 8, synthetic_store=str(tmp_path))
    for key, value in (("synthetic_seed", 1), ("synthetic_distractor", 0.5)):
        cfg = DataConfig(**{**other, key: value})
        with pytest.raises(ValueError, match="its clips were rendered from spec .* not spec"):
            build_dataset(cfg, "val", "eval")
    assert build_dataset(DataConfig(**other), "val", "eval").store.clip("val", 0, 1) is not None
    with pytest.raises(ConfigError, match="synthetic_store' is read by kind=synthetic only"):
        DataConfig(kind="list", synthetic_store=str(tmp_path)).validate()


@pytest.mark.parametrize("finetune", [False, True])
def test_stage_plan_follows_rows_and_finetune(finetune: bool) -> None:
    plan = [name for name, _ in stage_plan(("maskagain", "scratch"), finetune, False, 5)]
    tail = ["finetune_teacher", "finetune_maskagain", "finetune_scratch"] if finetune else []
    assert plan == ["clips", "maskagain", "probe_clips", "probes", *tail, "report"]
