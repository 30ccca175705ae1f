"""``maskagain demo --quick`` end to end (the CI smoke test) and the shipped teacher's card."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from maskagain.cli.main import main
from maskagain.config import load_config, load_yaml, to_dict
from maskagain.recipes.configs import PretrainConfig
from maskagain.recipes.demo import teacher as demo_teacher
from maskagain.recipes.demo.probes import random_encoder
from maskagain.recipes.demo.seeds import settings_of
from maskagain.recipes.demo.seeds_report import margins_table, seeds_summary
from maskagain.recipes.demo.settings import (
    DEFAULT_ROWS,
    GEOMETRY,
    QUICK_SIZES,
    REFERENCES,
    ROW_NAMES,
    STUDENT,
    TEACHER_CARD,
    TEACHER_WEIGHTS,
    select_rows,
)
from maskagain.recipes.demo.stages import stage_plan

ROOT = Path(__file__).resolve().parents[1]
FIELDS = (
    "model",
    "objective",
    "pretrain_epochs",
    "pretrain_seconds",
    "time_probe_top1",
    "probe_top1",
    "finetune_top1",
)


@pytest.mark.slow
def test_shipped_teacher_and_card() -> None:
    assert TEACHER_WEIGHTS.is_file() and TEACHER_CARD.is_file()
    assert TEACHER_WEIGHTS.stat().st_size < 5_000_000  # a few MB (fp16)
    card = json.loads(TEACHER_CARD.read_text())
    for key in ("epochs", "steps", "wall_seconds", "probe", "config", "command"):
        assert key in card, key
    assert {"teacher", "random_init", "teacher_single_frame"} <= set(card["probe"])
    # the shipped teacher was trained with the shipped config (out_dir aside)
    shipped = to_dict(load_config(PretrainConfig, ROOT / "configs" / "demo" / "teacher.yaml"))
    # (loaded through the schema, so options added since then take their defaults in both)
    recorded = to_dict(load_config(PretrainConfig, base=card["config"]))
    shipped.pop("out_dir"), recorded.pop("out_dir")
    assert recorded == shipped
    from maskagain.models.loading import load_encoder

    teacher = load_encoder(TEACHER_WEIGHTS)
    assert teacher.cfg.img_size == GEOMETRY["img_size"]
    assert teacher.cfg.num_frames == GEOMETRY["num_frames"]


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_demo_quick_end_to_end(tmp_path: Path, capsys) -> None:
    """``--rows all --finetune``: every row, every fine-tune, the profile and the headline."""
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--rows", "all", "--finetune", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[demo 1/" in printed and "| model |" in printed  # progress and the table
    assert "elapsed, ETA" in printed and "- told apart on the probe per time step" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["quick"] is True and summary["elapsed_seconds"] > 0
    assert summary["torch_threads"] == 1  # --threads default
    assert summary["dataset"]["kind"] == "synthetic" and "student" in summary["models"]
    assert summary["finetune"] is True and "finetune_top1" in summary["metrics"]
    # every stage read the clips rendered once into out/clips, removed at the end
    stored = {load_yaml(out / run / "config.yaml")["data"]["synthetic_store"]
              for run in ("maskagain", "mvd", "finetune/teacher", "finetune/scratch")}  # fmt: skip
    assert stored == {str((out / "clips").resolve())} and not (out / "clips").exists()
    # the profile: every stage of the plan once, in run order, with wall and CPU seconds
    stages = [p["stage"] for p in summary["profile"]]
    plan = stage_plan(ROW_NAMES, finetune=True, retrain=False, encoders=9)
    assert stages == [name for name, _ in plan]
    assert all(p["wall_s"] >= 0 and p["cpu_s"] >= 0 for p in summary["profile"])
    assert sum(p["wall_s"] for p in summary["profile"]) <= summary["elapsed_seconds"] + 1
    rows = summary["results"]
    objectives = [r["objective"] for r in rows]
    assert len(rows) == 9 and summary["rows"] == list(ROW_NAMES)
    for wanted in ("MaskAgain", "VideoMAE", "Hint", "MVD", "AMD", "scratch", "shipped"):
        assert any(wanted in o for o in objectives), wanted
    # the MVD row: its own distillation run (named terms logged) under the same student budget
    by_run = {r["run"]: r for r in rows}
    assert by_run["mvd"]["pretrain_epochs"] == by_run["maskagain"]["pretrain_epochs"] == 1
    assert by_run["mvd"]["pretrain_seconds"] > 0  # its cost
    mvd_log = [json.loads(x) for x in (out / "mvd" / "log.jsonl").read_text().splitlines()]
    assert any("video" in r and "loss" in r for r in mvd_log)
    assert (out / "mvd" / "student.safetensors").is_file()
    # the AMD row: the teacher on its lighter mask, aligned blocks and the pixel term logged
    amd_log = [json.loads(x) for x in (out / "amd" / "log.jsonl").read_text().splitlines()]
    assert any("pixel" in r and "loss" in r for r in amd_log)
    assert by_run["amd"]["pretrain_epochs"] == 1 and by_run["amd"]["pretrain_seconds"] > 0
    for row in rows:
        for key in FIELDS:
            assert key in row, key
        assert 0 <= row["probe_top1"] <= 100 and 0 <= row["time_probe_top1"] <= 100
        assert row["finetune_top1"] is None or 0 <= row["finetune_top1"] <= 100
    # every model is fine-tuned; the probe-only rows (single frame, random init) are not
    assert sum(r["finetune_top1"] is not None for r in rows) == 7
    # the noise benchmark reads a finished MVD row: its loss with the student's tokens as they
    # are, shuffled across clips and replaced by their mean
    from benchmarks import demo_noise

    assert (
        demo_noise.main(["--mvd-runs", str(out / "mvd"), "--json", str(tmp_path / "n.json")]) == 0
    )
    (losses,) = json.loads((tmp_path / "n.json").read_text())["mvd_content"].values()
    assert {"real", "shuffled", "batch_mean", "content_share"} == set(losses)
    assert all(math.isfinite(v) and v > 0 for k, v in losses.items() if k != "content_share")
    report = (out / "report.md").read_text()
    assert "| model |" in report and "## Headline" in report and "fine-tune top-1" in report
    for name in ("curves", "accuracy", "selections"):
        png = out / f"{name}.png"
        assert png.stat().st_size > 1000, name
        with Image.open(png) as img:
            img.load()
            assert img.size[0] > 100 and img.size[1] > 100


def test_demo_rows_are_selected_by_name(capsys) -> None:
    assert select_rows(None) == DEFAULT_ROWS and "mvd" not in DEFAULT_ROWS
    assert select_rows(["all"]) == ROW_NAMES
    assert select_rows(["mvd", "maskagain"]) == ("maskagain", "mvd")  # the table's order
    with pytest.raises(ValueError, match="demo rows"):
        select_rows(["dmae"])
    with pytest.raises(SystemExit) as info:
        main(["demo", "--rows", "dmae"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="'all' alone or row names"):
        main(["demo", "--quick", "--rows", "all", "hint"])


@pytest.mark.slow
def test_retrain_teacher_writes_a_shippable_card(tmp_path: Path, monkeypatch) -> None:
    """--retrain-teacher's path (pre-train, probe vs random init, fp16 weights + card), run on a
    one-epoch version of the shipped config."""
    real = demo_teacher.teacher_config

    def tiny(out_dir=None):
        cfg = real(out_dir)
        cfg.schedule.epochs, cfg.schedule.warmup_epochs = 1, 0
        cfg.data.synthetic_train_clips, cfg.engine.batch_size = 16, 8
        return cfg

    monkeypatch.setattr(demo_teacher, "teacher_config", tiny)
    card = demo_teacher.retrain_teacher(tmp_path / "teacher", probe_sizes=QUICK_SIZES)
    assert card["completed"] and card["steps"] == 2 and card["wall_seconds"] > 0
    assert {"teacher", "random_init", "teacher_single_frame"} <= set(card["probe"])
    weights = tmp_path / "teacher" / "demo_teacher.safetensors"
    assert json.loads((tmp_path / "teacher" / "demo_teacher.json").read_text())["steps"] == 2
    from maskagain.models.loading import load_encoder

    assert load_encoder(weights).cfg.embed_dim == 128


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_demo_quick_seeds_end_to_end(tmp_path: Path, capsys) -> None:
    """``--seeds 0 1``: one full demo per seed dir, the spread over seeds (json, md, png), and a
    second identical call reusing both seeds' results."""
    out = tmp_path / "demo"
    argv = ["demo", "--quick", "--seeds", "0", "1", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "[demo 1/" in printed and "MaskAgain minus" in printed and "reused" not in printed
    assert "ranking by the probe per time step" in printed and "told apart: " in printed
    assert "over 2 training seeds (means)" in printed  # the headline over seeds
    summaries = {}
    for seed in (0, 1):
        summary = json.loads((out / f"seed{seed}" / "summary.json").read_text())
        assert summary["seed"] == seed and summary["quick"] is True
        assert (out / f"seed{seed}" / "report.md").is_file()
        assert (out / f"seed{seed}" / "accuracy.png").stat().st_size > 1000
        # the default demo: the default rows, the official init, no fine-tune
        assert summary["rows"] == list(DEFAULT_ROWS) and not summary["finetune"]
        assert summary["student_init"] == "official"
        assert not (out / f"seed{seed}" / "finetune").exists() and "mvd" not in summary["rows"]
        assert all(r["finetune_top1"] is None for r in summary["results"])
        summaries[str(seed)] = {r["run"]: r for r in summary["results"]}
    assert not (out / "summary.json").exists()  # the per-seed demos stay in their seed dirs
    assert not (out / "clips").exists() and not (out / "seed0" / "clips").exists()
    seeds = json.loads((out / "seeds.json").read_text())
    assert seeds["seeds"] == [0, 1] and seeds["reused"] == [] and seeds["quick"] is True
    assert [r["run"] for r in seeds["rows"]] == list(summaries["0"])  # every row of the table
    for row in seeds["rows"]:
        for metric in ("time_probe_top1", "probe_top1", "finetune_top1"):
            values = {s: summaries[s][row["run"]][metric] for s in ("0", "1")}
            if values["0"] is None:
                assert row[metric] is None
                continue
            stats = row[metric]
            assert stats["per_seed"] == values
            assert stats["min"] == min(values.values()) and stats["max"] == max(values.values())
            assert stats["mean"] == pytest.approx(sum(values.values()) / 2, abs=0.01)
            assert stats["range"] == pytest.approx(stats["max"] - stats["min"], abs=0.01)
    # the ranking: student rows only, by the per-time-step probe's mean over seeds
    ranking = seeds["ranking"]
    students = [r for r in seeds["rows"] if r["run"] not in REFERENCES]
    assert ranking["metric"] == "time_probe_top1"
    assert sorted(ranking["order"]) == sorted(r["run"] for r in students)
    means = [ranking["mean"][run] for run in ranking["order"]]
    assert means == sorted(means, reverse=True)
    assert ranking["max_range"] == max(r["time_probe_top1"]["range"] for r in students)
    versus = seeds["maskagain_minus"]
    assert set(versus) == {"videomae", "hint", "amd", "scratch"}
    for other, m in versus.items():
        for s in ("0", "1"):
            ma, o = summaries[s]["maskagain"], summaries[s][other]
            for metric in ("time_probe_top1", "probe_top1", "finetune_top1"):
                if o[metric] is None:
                    assert m["per_seed"][s][metric] is None
                    continue
                diff = ma[metric] - o[metric]
                assert m["per_seed"][s][metric] == pytest.approx(diff, abs=0.01)
        assert m["finetune_top1"] is None and m["finetune_top1_ahead_every_seed"] is None
    # without the MaskAgain row (``--rows mvd``) there is nothing to subtract from
    others = {}
    for seed in (0, 1):
        summary = json.loads((out / f"seed{seed}" / "summary.json").read_text())
        summary["results"] = [r for r in summary["results"] if r["run"] != "maskagain"]
        others[seed] = summary
    alone = seeds_summary(others)
    assert alone["maskagain_minus"] == {} and margins_table(alone) == ""
    report = (out / "seeds.md").read_text()
    assert "| model |" in report and "## Ranking" in report and "## Headline" in report
    assert "![seeds](seeds.png)" in report
    assert "fine-tune" not in report.split("## Headline")[0]  # no fine-tune column
    seed_report = (out / "seed0" / "report.md").read_text()
    assert "No fine-tune (`maskagain demo --finetune` adds one" in seed_report
    assert "so it cannot rank). ± is one" in seed_report
    assert "| MaskAgain minus (probe per time step) | seed 0 | seed 1 | mean |" in report
    for r in seeds["rows"]:
        assert f"| {r['model']} | {r['objective']} |" in report
    with Image.open(out / "seeds.png") as img:
        img.load()
        assert img.size[0] > 100 and img.size[1] > 100

    # a second identical call: both seeds reused (fast, and it says so), same numbers
    stamp = (out / "seed0" / "summary.json").stat().st_mtime_ns
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "seed 0: reused" in printed and "seed 1: reused" in printed
    assert "[demo 1/" not in printed  # no stage ran
    again = json.loads((out / "seeds.json").read_text())
    assert again["reused"] == [0, 1] and again["rows"] == seeds["rows"]
    assert again["elapsed_seconds"] < 10
    # reused seeds keep the wall time they took when they ran
    assert again["seed_seconds"] == seeds["seed_seconds"]
    assert all(v > 0 for v in seeds["seed_seconds"].values())
    wall = f"Wall time: seed 0 {seeds['seed_seconds']['0']:.0f} s, seed 1"
    assert wall in (out / "seeds.md").read_text() and "(seeds 0, 1 reused)" in printed
    assert (out / "seed0" / "summary.json").stat().st_mtime_ns == stamp

    # a run killed during seed 1 (no summary.json yet): seed 0 reused, seed 1 run again
    (out / "seed1" / "summary.json").unlink()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "seed 0: reused" in printed and "seed 1: reused" not in printed
    assert json.loads((out / "seeds.json").read_text())["reused"] == [0]
    assert (out / "seed1" / "summary.json").is_file()


def test_demo_seed_and_seeds_conflict(capsys) -> None:
    for argv in (["--seed", "0", "--seeds", "1", "2"], ["--seeds", "1", "1"]):
        with pytest.raises(SystemExit) as exc:
            main(["demo", "--quick", *argv])
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --seeds: not allowed with argument --seed" in err
    assert "a seed is repeated" in err


@pytest.mark.slow
def test_probe_noise_benchmark_measures_both_spreads(tmp_path: Path) -> None:
    from benchmarks import demo_noise

    result = demo_noise.probe_noise([(32, 16)], inits=2)["32:16"]
    for key in ("untrained_student_over_inits", "teacher_over_probe_seeds"):
        stats = result[key]
        assert len(stats["values"]) == 2 and all(0 <= v <= 100 for v in stats["values"])
        assert stats["range"] == pytest.approx(
            max(stats["values"]) - min(stats["values"]), abs=0.02
        )


def test_position_share_separates_position_from_content() -> None:
    from benchmarks.demo_noise import position_share

    gen = torch.Generator().manual_seed(0)
    by_position = torch.randn(1, 6, 5, generator=gen).expand(40, 6, 5)
    only_position = position_share(by_position)
    assert only_position["share"] == pytest.approx(1.0)
    assert only_position["position_floor"] == pytest.approx(0.0)
    assert only_position["global_floor"] > 0.1
    # content that does not depend on the position: the per-position mean explains little
    content = torch.randn(4000, 6, 5, generator=gen)
    assert position_share(content)["share"] < 0.01
    half = position_share(by_position.repeat(100, 1, 1) + content)
    assert 0.2 < half["share"] < 0.8


@pytest.mark.slow
def test_row_variants_train_the_demo_row_with_overrides(tmp_path: Path) -> None:
    from benchmarks.demo_noise import parse_variants, row_variants

    variants = parse_variants(["demo=", "trunc=student.init=trunc_normal,mvd.loss=mse"])
    assert variants == {"demo": [], "trunc": ["student.init=trunc_normal", "mvd.loss=mse"]}
    with pytest.raises(SystemExit, match="NAME=KEY=VALUE"):
        parse_variants(["no_equals_sign"])
    result = row_variants(variants, [0], "mvd", tmp_path, QUICK_SIZES)
    for name in variants:
        assert 0 <= result[name]["time_probe_top1"][0] <= 100
        config = load_yaml(tmp_path / name / "seed0" / "mvd" / "config.yaml")
        changed = name == "trunc"
        assert config["student"]["init"] == ("trunc_normal" if changed else "official")
        assert config["mvd"]["loss"] == ("mse" if changed else "smooth_l1")
    # the VideoMAE row pre-trains with its own recipe; the untrained row has nothing to train
    mae = row_variants({"trunc": ["model.init=trunc_normal"]}, [0], "videomae", tmp_path,
                       QUICK_SIZES)  # fmt: skip
    assert 0 <= mae["trunc"]["time_probe_top1"][0] <= 100
    config = load_yaml(tmp_path / "trunc" / "seed0" / "videomae" / "config.yaml")
    assert config["model"]["init"] == "trunc_normal"
    with pytest.raises(SystemExit, match="--row must be one of"):
        row_variants(variants, [0], "scratch", tmp_path, QUICK_SIZES)


def test_random_encoder_follows_the_init_scheme() -> None:
    default = random_encoder(STUDENT, seed=3)
    again = random_encoder({**STUDENT, "init": "trunc_normal"}, seed=3)
    official = random_encoder({**STUDENT, "init": "official"}, seed=3)
    for a, b in zip(default.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    qkv = official.blocks[0].attn.qkv.weight
    fan_out, fan_in = qkv.shape
    assert qkv.std().item() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.05)
    assert default.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.15)


@pytest.mark.e2e
def test_demo_student_init_is_drawn_recorded_and_part_of_reuse(tmp_path: Path, capsys) -> None:
    from maskagain.models.loading import load_encoder

    out = tmp_path / "demo"
    argv = ["demo", "--quick", "--seeds", "0", "--rows", "maskagain", "scratch", "--out", str(out)]
    assert main(argv) == 0  # the official init is the default
    summary = json.loads((out / "seed0" / "summary.json").read_text())
    assert summary["student_init"] == "official"
    assert summary["models"]["student"]["init"] == "official"
    assert load_yaml(out / "seed0" / "maskagain" / "config.yaml")["student"]["init"] == "official"
    scratch = load_encoder(out / "seed0" / "scratch" / "student_init.safetensors")
    drawn = random_encoder({**STUDENT, "init": "official"}, seed=0)
    for name, tensor in drawn.state_dict().items():
        assert torch.equal(scratch.state_dict()[name], tensor), name
    assert "drawn with the `official` init" in (out / "seed0" / "report.md").read_text()
    # the other init is another comparison: the seed is run again, not reused
    capsys.readouterr()
    assert main([*argv, "--student-init", "trunc_normal"]) == 0
    assert "seed 0: reused" not in capsys.readouterr().out
    again = json.loads((out / "seed0" / "summary.json").read_text())
    assert again["student_init"] == "trunc_normal"
    assert load_yaml(out / "seed0" / "maskagain" / "config.yaml")["student"]["init"] == (
        "trunc_normal"
    )
    scratch = load_encoder(out / "seed0" / "scratch" / "student_init.safetensors")
    assert scratch.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.15)
    # summaries written before the option drew every student with trunc_normal
    old = {k: v for k, v in summary.items() if k != "student_init"}
    assert settings_of(old)["student_init"] == "trunc_normal"
    with pytest.raises(SystemExit):
        main([*argv, "--student-init", "xavier"])


def test_cli_lists_every_init() -> None:
    from maskagain.cli import demo as cli_demo
    from maskagain.models.init import INIT_SCHEMES

    assert cli_demo.INITS == INIT_SCHEMES
