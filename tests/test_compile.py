"""``engine.compile``: the masked training steps compile to one graph per kind (no graph
break) and are not recompiled on later steps; where compile cannot apply it is refused in one
line. Run with ``backend="aot_eager"`` (forward and backward traced, no kernel compiler)."""

from __future__ import annotations

import copy
import functools
import logging

import pytest
import torch
from torch._dynamo.utils import counters

from maskagain.config import load_config
from maskagain.data import MaskCollator
from maskagain.engine import compiling
from maskagain.models.registry import create_model
from maskagain.models.teacher import align_teacher
from maskagain.models.vjepa2 import VJEPA2Config, VJEPA2Encoder
from maskagain.recipes import distill as D
from maskagain.recipes.configs import DistillConfig, PretrainConfig
from maskagain.recipes.pretrain import build_pretrain_model, pretrain_step

pytestmark = pytest.mark.slow

CONFIGS = {
    "maskagain": "configs/tiny/distill.yaml",
    "mvd": "configs/tiny/distill_mvd.yaml",
    "amd": "configs/tiny/distill_amd.yaml",
}
# graph breaks of one compiled training step (student + objective), stated in docs/cuda.md
GRAPH_BREAKS = {"maskagain": 0, "mvd": 0, "amd": 0, "pretrain": 0}


def batches(grid, ratio: float, teacher_ratio: float | None, steps: int) -> list[dict]:
    """``steps`` batches of 2 random clips, each clip with its own mask (as the loader gives)."""
    collate = MaskCollator("tube", ratio, grid, seed=0, teacher_ratio=teacher_ratio)
    out = []
    for step in range(steps):
        items = [
            {"video": torch.randn(3, 4, 32, 32), "label": 0, "index": 2 * step + i}
            for i in range(2)
        ]
        out.append(collate(items))
    return out


def distill_setup(kind: str, steps: int):
    """(module, step function, batches) of a tiny distillation run of ``kind``."""
    teacher = create_model("vit_micro", img_size=32, num_frames=4, patch_size=8, depth=2)
    cfg = load_config(DistillConfig, CONFIGS[kind], ["teacher.source=unused"])
    module = D.build_distill_module(cfg, teacher)
    query = module.objective.teacher_query
    frozen = D.FrozenTeacher(teacher, query, "fp32")
    data = batches(module.student.cfg.grid, cfg.mask.ratio, query.mask_ratio, steps)
    return module, D.make_distill_step(frozen), data


def pretrain_setup(steps: int):
    cfg = load_config(PretrainConfig, "configs/tiny/pretrain.yaml", [])
    module = build_pretrain_model(cfg)
    return module, pretrain_step, batches(module.encoder.cfg.grid, cfg.mask.ratio, None, steps)


@pytest.mark.parametrize("kind", ["maskagain", "mvd", "amd", "pretrain"])
def test_compiled_step_has_no_graph_break_and_no_recompile(kind):
    torch._dynamo.reset()
    counters.clear()
    steps = 4
    module, step, data = pretrain_setup(steps) if kind == "pretrain" else distill_setup(kind, steps)
    compiled = torch.compile(module, backend="aot_eager")
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3)
    graphs = []
    for batch in data:
        losses = step(compiled, batch)
        losses["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        graphs.append(counters["stats"]["unique_graphs"])
        assert torch.isfinite(losses["loss"])
    breaks = sum(counters["graph_break"].values())
    assert breaks == GRAPH_BREAKS[kind], dict(counters["graph_break"])
    assert graphs[0] == breaks + 1  # one graph per piece
    assert graphs == [graphs[0]] * steps, graphs  # later steps reuse it: no recompile
    torch._dynamo.reset()


def test_compiled_step_matches_eager():
    module, step, data = distill_setup("maskagain", 1)
    torch.manual_seed(1)  # drop path draws the same
    eager = step(module, data[0])
    torch._dynamo.reset()
    torch.manual_seed(1)
    compiled = step(torch.compile(module, backend="aot_eager"), data[0])
    for key, value in eager.items():
        torch.testing.assert_close(compiled[key], value, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


def test_refusals_are_one_line(monkeypatch, caplog):
    monkeypatch.setattr(compiling.shutil, "which", lambda name: None)
    reason = compiling.compile_refusal(torch.device("cpu"))
    assert reason and "C++ compiler" in reason
    model = torch.nn.Linear(2, 2)
    with caplog.at_level(logging.WARNING, logger="maskagain"):
        assert compiling.maybe_compile(model, torch.device("cpu"), "the training step") is model
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == f"engine.compile: the training step runs uncompiled: {reason}"

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (6, 1))
    assert "compute capability 6.1" in compiling.compile_refusal(torch.device("cuda", 0))


class _NoBlocks(torch.nn.Module):
    """An encoder whose forward_features cannot return block outputs."""

    def forward_features(self, video, mask=None, attn_layers=()):
        raise AssertionError("never run: refused where the teacher is built")


def test_an_encoder_without_block_outputs_is_refused_where_it_is_built():
    query = D.EncoderQuery("teacher_mask", 0.5, blocks=(0, 1))
    with pytest.raises(ValueError, match=r"^the teacher \(_NoBlocks\) cannot return block") as err:
        query.check(_NoBlocks(), "the teacher")
    assert "\n" not in str(err.value)
    D.EncoderQuery().check(_NoBlocks(), "the teacher")  # no blocks read: nothing to refuse
    with pytest.raises(ValueError, match="has no forward_features"):
        query.check(torch.nn.Linear(2, 2), "the student")


def _teachers() -> dict[str, torch.nn.Module]:
    """One tiny teacher of every encoder family: VideoViT, V-JEPA 2, an aligned (patch 4 on a
    patch 8 grid) VideoViT."""
    geometry = dict(img_size=32, num_frames=4, tubelet_size=2, depth=2)
    student = create_model("vit_micro", patch_size=8, **geometry).cfg
    vjepa2 = VJEPA2Encoder(VJEPA2Config(embed_dim=48, num_heads=4, patch_size=8, **geometry))
    aligned = align_teacher(create_model("vit_micro", patch_size=4, **geometry), student)
    return {
        "videovit": create_model("vit_micro", patch_size=8, **geometry),
        "vjepa2": vjepa2,
        "aligned": aligned,
    }


@pytest.mark.parametrize("family", ["videovit", "vjepa2", "aligned"])
def test_teacher_block_outputs_compile_without_graph_breaks(family):
    """Block outputs come from the model's own call: a teacher asked for them (and for an
    attention tap) traces to one graph, whatever its family."""
    teacher = _teachers()[family].eval()
    query = D.EncoderQuery("teacher_mask", 0.5, blocks=(0, -1), attn_layers=(-1,))
    query.check(teacher, "the teacher")
    video = torch.randn(2, 3, 4, 32, 32)
    mask = torch.zeros(2, 32, dtype=torch.bool)
    mask[:, ::2] = True
    visible = (~mask).nonzero()[:, 1].reshape(2, -1)
    torch._dynamo.reset()
    with torch.inference_mode():
        eager = query.run(teacher, video, mask, visible)
        explained = torch._dynamo.explain(functools.partial(query.run, teacher))(
            video, mask, visible
        )
    assert explained.graph_break_count == 0, explained.break_reasons
    assert set(eager.blocks) == {0, 1} and eager.blocks[1] is eager.tokens
    # block 0's output is what the same encoder cut to its first block ends with
    first = copy.deepcopy(teacher)
    encoder = getattr(first, "encoder", first)
    encoder.blocks = encoder.blocks[:1]
    with torch.inference_mode():
        cut = first.forward_features(video, mask, visible=visible).tokens
    torch.testing.assert_close(eager.blocks[0], cut)
    torch._dynamo.reset()


@pytest.mark.parametrize("kind", ["maskagain", "mvd", "amd"])
def test_teacher_forward_compiles_to_one_graph(kind):
    """What the frozen teacher runs (attention taps, block outputs, its own mask or none), in
    inference mode as it trains: no graph break either."""
    module, step, data = distill_setup(kind, 1)
    frozen = [
        c.cell_contents for c in step.__closure__ if isinstance(c.cell_contents, D.FrozenTeacher)
    ]
    (teacher,) = frozen
    query, batch = teacher.query, data[0]
    torch._dynamo.reset()
    with torch.inference_mode():
        explained = torch._dynamo.explain(teacher._forward)(
            batch["video"], query.mask_of(batch), query.visible_of(batch)
        )
    assert explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()
