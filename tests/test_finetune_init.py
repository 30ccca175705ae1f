"""``finetune init.source=...`` takes the checkpoint's architecture; what the user set explicitly
and what cannot be taken (the clip) is said in one line naming both values."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from maskagain.cli.main import main
from maskagain.models import create_model
from maskagain.models.loading import save_encoder
from maskagain.recipes.classifier import ArchitectureMismatch, resolve_init_architecture
from maskagain.recipes.configs import FinetuneConfig
from maskagain.recipes.sections import ModelSpec

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny"


@pytest.fixture
def student(tmp_path: Path) -> Path:
    """A distill run directory holding a nano student of 8 frames at 32 px, patch 8."""
    model = create_model("vit_nano", img_size=32, num_frames=8, patch_size=8, tubelet_size=2)
    save_encoder(model, tmp_path / "distill" / "student.safetensors", {"recipe": "distill"})
    return tmp_path / "distill"


def config(source: str, **model) -> FinetuneConfig:
    spec = {"name": "vit_base", "img_size": 32, "num_frames": 8, "patch_size": 16, **model}
    cfg = FinetuneConfig(model=ModelSpec(**spec))
    cfg.init.source = source
    return cfg


def test_architecture_comes_from_the_checkpoint(student, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config("distill")
    ckpt = resolve_init_architecture(cfg)
    m = cfg.model
    assert (m.name, m.embed_dim, m.depth, m.num_heads) == ("vit_nano", 64, 2, 2)
    assert (m.patch_size, m.tubelet_size) == (8, 2) and ckpt.num_frames == 8
    assert cfg.init.source == str(student)  # absolute: the saved config works from anywhere
    assert resolve_init_architecture(config("")) is None


def test_an_explicit_conflicting_width_is_one_line(student):
    with pytest.raises(ArchitectureMismatch) as err:
        resolve_init_architecture(config(str(student), depth=12))
    message = str(err.value)
    assert "\n" not in message
    assert "'model.depth'=12" in message and "depth=2" in message and "drop model.depth" in message
    resolve_init_architecture(config(str(student), depth=2))  # agreeing is fine


def test_another_clip_is_one_warning_with_both_sizes(student, caplog):
    with caplog.at_level(logging.WARNING, logger="maskagain"):
        resolve_init_architecture(config(str(student), num_frames=4))
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1
    assert "4 frames of 32 px" in lines[0] and "8 frames of 32 px" in lines[0]
    assert "data.num_frames=8 model.num_frames=8" in lines[0]


def test_cli_mismatch_is_one_line_without_traceback(student, tmp_path, capsys):
    code = main(
        [
            "finetune",
            "--config",
            str(TINY / "finetune.yaml"),
            "--out",
            str(tmp_path / "ft"),
            f"init.source={student}",
            "model.embed_dim=128",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "'model.embed_dim'=128" in err[0] and "embed_dim=64" in err[0]
