"""Config system: YAML with defaults, dotted overrides with coercion, one-line actionable errors."""

from __future__ import annotations

import pytest

from maskagain.config import (
    ConfigError,
    apply_overrides,
    from_dict,
    load_config,
    load_yaml,
    save_config,
)
from maskagain.recipes.configs import DistillConfig, PretrainConfig
from maskagain.recipes.distill import check_teacher
from maskagain.recipes.sections import ModelSpec

TINY_DISTILL = "configs/tiny/distill.yaml"


def error_of(overrides, cls=DistillConfig, path=TINY_DISTILL) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(cls, path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_include_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 1\noptim:\n  base_lr: 1.0e-3\n  weight_decay: 0.1\n")
    (tmp_path / "run.yaml").write_text("defaults: base.yaml\noptim:\n  weight_decay: 0.2\n")
    tree = load_yaml(tmp_path / "run.yaml")
    assert tree == {"seed": 1, "optim": {"base_lr": 1e-3, "weight_decay": 0.2}}
    tree = apply_overrides(tree, ["optim.base_lr=3e-4", "optim.betas=0.9,0.99", "optim.lr=null"])
    cfg = from_dict(PretrainConfig, {**tree, "data": {"kind": "synthetic", "input_size": 224}})
    assert cfg.optim.base_lr == pytest.approx(3e-4) and isinstance(cfg.optim.base_lr, float)
    assert cfg.optim.betas == (0.9, 0.99)
    assert cfg.optim.lr is None and cfg.seed == 1


def test_override_types_are_coerced():
    cfg = load_config(
        DistillConfig,
        TINY_DISTILL,
        [
            "engine.grad_checkpointing=true",
            "engine.stop_after_steps=3",
            "out_dir=007",
            "teacher.overrides.img_size=32",
        ],
    )
    assert cfg.engine.grad_checkpointing is True
    assert cfg.engine.stop_after_steps == 3
    assert cfg.out_dir == "007"  # strings stay strings
    assert cfg.teacher.overrides == {"img_size": 32}


def test_saved_config_loads_back_identically(tmp_path):
    cfg = load_config(DistillConfig, TINY_DISTILL, ["optim.base_lr=2e-4"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(DistillConfig, tmp_path / "config.yaml") == cfg


def test_misspelled_key_names_key_and_suggestion():
    msg = error_of(["optim.base_lrr=1e-4"])
    assert "optim.base_lrr" in msg and "did you mean 'optim.base_lr'" in msg


def test_misspelled_section_in_yaml(tmp_path):
    (tmp_path / "bad.yaml").write_text(f"defaults: {tmp_path.parent}/x.yaml\n")
    (tmp_path / "typo.yaml").write_text("optimm:\n  lr: 1\n")
    msg = error_of([], path=tmp_path / "typo.yaml")
    assert "'optimm'" in msg and "did you mean 'optim'" in msg
    assert "does not exist" in error_of([], path=tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    "override, expected",
    [
        ("engine.batch_size=abc", "'engine.batch_size' expects int, got 'abc'"),
        (
            "engine.precision=bf61",
            "'engine.precision' must be one of 'auto', 'bf16', 'fp16', 'fp32'",
        ),
        ("optim.betas=0.9", "'optim.betas' expects 2 values"),
        ("mask.ratio=1.2", "'mask.ratio' must be in [0, 1)"),
        ("student.name=vit_bsae", "did you mean 'vit_base'"),
        ("objective.relation_softmax=col", "'objective.relation_softmax' must be one of 'row'"),
        ("objective.k=0", "config key 'objective.k' must be >= 1, got 0"),
        ("data.num_frames=0", "config key 'data.num_frames' must be >= 1, got 0"),
        ("data.kind=csv", "config key 'data.kind' must be one of 'list', 'folder'"),
        ("engine.accum_steps=0", "'engine.accum_steps' must be >= 1"),
        ("teacher.overrides.img_sise=32", "did you mean 'teacher.overrides.img_size'"),
        ("teacher.overrides.num_heads=two", "'teacher.overrides.num_heads' expects int"),
    ],
)
def test_bad_values_name_the_key(override, expected):
    assert expected in error_of([override])


def test_impossible_combinations():
    # tiny grid (2, 4, 4) at mask ratio 0.5: 8 visible tokens per frame, 16 per clip
    assert "'objective.k'=9 is larger than the 8 visible tokens per frame" in error_of(
        ["objective.k=9"]
    )
    msg = error_of(["objective.k_hint=17"])
    assert "'objective.k_hint'=17" in msg and "16 visible tokens per clip" in msg
    # the local term off: only the per-clip bound applies
    load_config(DistillConfig, TINY_DISTILL, ["objective.k=9", "objective.beta=0"])
    assert "'student.num_frames'=5 is not divisible by 'student.tubelet_size'=2" in error_of(
        ["student.num_frames=5", "data.num_frames=5"]
    )
    assert "'student.img_size'=36 is not divisible" in error_of(["student.img_size=36"])
    assert "'data.input_size'=48 does not match 'student.img_size'=32" in error_of(
        ["data.input_size=48", "data.short_side=48"]
    )


def test_teacher_must_share_the_tubelet_a_patch_is_aligned():
    student = ModelSpec(name="vit_nano", img_size=32, num_frames=4, patch_size=8).model_config()
    other_patch = ModelSpec(name="vit_nano", img_size=32, num_frames=4, patch_size=16)
    check_teacher(student, other_patch.model_config())  # aligned by resizing the teacher's input
    other_tubelet = ModelSpec(name="vit_nano", img_size=32, num_frames=4, tubelet_size=4)
    with pytest.raises(ConfigError, match=r"^config key 'teacher.source': .*tubelet is 4 frames"):
        check_teacher(student, other_tubelet.model_config())
    check_teacher(
        student, ModelSpec(name="vit_micro", img_size=32, num_frames=4, patch_size=8).model_config()
    )


def test_cli_reports_config_errors_on_one_line(capsys):
    from maskagain.cli.main import main

    assert main(["distill", "--config", TINY_DISTILL, "--dry-run", "optim.weight_decy=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean 'optim.weight_decay'" in err
    assert (
        main(["pretrain", "--config", "configs/tiny/pretrain.yaml", "--dry-run", "mask.kind=tub"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert (
        err.count("\n") == 0
        and "'mask.kind' must be one of" in err
        and "did you mean 'tube'" in err
    )


def test_dry_run_prints_resolved_config(capsys):
    from maskagain.cli.main import main

    assert main(["pretrain", "--config", "configs/tiny/pretrain.yaml", "--dry-run", "seed=5"]) == 0
    out = capsys.readouterr().out
    assert "seed: 5" in out and "decoder:" in out


def test_help_documents_options_and_config_keys(capsys):
    from maskagain.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["distill", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for text in (
        "--config",
        "--resume",
        "--out",
        "--dry-run",
        "objective.alpha ",
        "engine.batch_size ",
    ):
        assert text in out, text
    assert "weight of MAGlobal" in out  # each key says what it does


def test_partial_section_keeps_the_recipe_defaults():
    """A section given in part keeps the defaults of the recipe's own default section."""
    distill = from_dict(DistillConfig, {"student": {"name": "vit_small"}})
    assert distill.student.name == "vit_small"
    assert distill.student.drop_path_rate == DistillConfig().student.drop_path_rate == 0.1
    pretrain = from_dict(PretrainConfig, {"schedule": {"warmup_epochs": 5}})
    assert pretrain.schedule.warmup_epochs == 5
    assert pretrain.schedule.epochs == PretrainConfig().schedule.epochs == 800
