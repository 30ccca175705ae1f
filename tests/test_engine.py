"""The shared training engine on a toy recipe: schedule, groups, sampler, checkpoints, resume,
accumulation, precision and the non-finite stop."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from maskagain.engine.checkpoint import (
    atomic_torch_save,
    capture_rng,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_rng,
)
from maskagain.engine.config import EngineConfig, OptimConfig, ScheduleConfig
from maskagain.engine.distributed import DistInfo
from maskagain.engine.feed import SeededItems, build_train_loader
from maskagain.engine.optim import cosine_lr, param_groups
from maskagain.engine.run import build_optimization, clips_per_step, steps_per_epoch
from maskagain.engine.sampler import ResumableSampler
from maskagain.engine.trainer import NonFiniteLossError, Trainer


class ToyData(Dataset):
    def __init__(self, n: int = 24) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 6, generator=g)
        self.y = self.x @ torch.randn(6, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "index": i}


class ToyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.norm = nn.LayerNorm(16)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.norm(self.fc1(x)).relu()))


def toy_step(module: nn.Module, batch: dict) -> dict:
    err = (module(batch["x"]).float() - batch["y"]).pow(2)
    return {"loss": err.mean(), "max_err": err.max().detach()}


class NoisyData(ToyData):
    """Random augmentation from the global torch RNG, as the video transforms do."""

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        return {**item, "x": item["x"] + 0.1 * torch.randn(6)}


def make_trainer(
    tmp_path, seed=0, data=None, step_fn=toy_step, epochs=2, init_seed=None, workers=0, **engine
):
    torch.manual_seed(seed if init_seed is None else init_seed)
    opts = dict(batch_size=4, precision="fp32", log_every=2, tensorboard=False, progress=False)
    cfg = EngineConfig(**{**opts, **engine})
    dist = DistInfo()
    model = ToyModel()
    loader, sampler = build_train_loader(data or ToyData(), None, cfg, workers, dist, seed)
    steps = steps_per_epoch(len(sampler.order()), cfg)
    optim = OptimConfig(lr=1e-2, clip_grad=1.0)
    sched = ScheduleConfig(epochs=epochs, warmup_epochs=1, min_lr=1e-4)
    opt, schedule = build_optimization(model, optim, sched, steps, 4, dist.device)
    return Trainer(
        engine=cfg,
        dist=dist,
        run_dir=tmp_path,
        model=model,
        step_fn=step_fn,
        optimizer=opt,
        schedule=schedule,
        loader=loader,
        sampler=sampler,
        epochs=epochs,
        steps_per_epoch=steps,
        clips_per_step=clips_per_step(cfg, dist.world_size),
        clip_grad=1.0,
        config={"toy": True},
    )


def test_cosine_schedule_shape():
    kw = dict(total_steps=100, peak_lr=1.0, min_lr=0.1, warmup_steps=10, warmup_lr=0.0)
    assert cosine_lr(0, **kw) == 0.0
    assert cosine_lr(5, **kw) == pytest.approx(0.5)
    assert cosine_lr(10, **kw) == pytest.approx(1.0)
    assert cosine_lr(55, **kw) == pytest.approx(0.55)
    assert cosine_lr(100, **kw) == pytest.approx(0.1)
    lrs = [cosine_lr(s, **kw) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_param_groups_skip_decay_on_norms_biases_and_listed_names():
    class WithPos(ToyModel):
        def __init__(self):
            super().__init__()
            self.pos = nn.Parameter(torch.zeros(4, 16))

        def no_weight_decay(self):
            return {"pos"}

    groups = param_groups(WithPos(), 0.05)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["fc1.weight"]["weight_decay"] == 0.05
    assert by_name["fc2.weight"]["weight_decay"] == 0.05
    assert all(g["lr_scale"] == 1.0 for g in groups)
    for name in ("fc1.bias", "norm.weight", "norm.bias", "pos", "fc2.bias"):
        assert by_name[name]["weight_decay"] == 0.0, name


def test_sampler_shards_resumes_and_reshuffles():
    full = [ResumableSampler(10, seed=3, rank=r, world_size=2).order() for r in range(2)]
    assert sorted(full[0] + full[1]) == list(range(10))
    s = ResumableSampler(10, seed=3, rank=0, world_size=2)
    s.set_start(2)
    assert list(s) == full[0][2:] and len(s) == 3
    s.set_epoch(1)
    s.set_start(0)
    assert list(s) != full[0]


def test_atomic_save_prune_and_weights_only(tmp_path):
    for step in (1, 2, 3):
        atomic_torch_save(
            {"w": torch.ones(2) * step, "n": step},
            tmp_path / "checkpoints" / f"ckpt_step{step:08d}.pt",
        )
    prune_checkpoints(tmp_path, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.suffix == ".tmp"]
    assert load_checkpoint(list_checkpoints(tmp_path)[-1][1])["n"] == 3


def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    import random

    import numpy as np

    state = capture_rng()
    atomic_torch_save({"rng": state}, tmp_path / "r.pt")
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_fit_runs_logs_and_checkpoints(tmp_path):
    trainer = make_trainer(tmp_path)
    metrics = trainer.fit()
    assert trainer.state.step == trainer.total_steps == 12
    assert math.isfinite(metrics["loss"]) and "max_err" in metrics and "grad_norm" in metrics
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == 6  # every 2 steps
    ckpt = load_checkpoint(list_checkpoints(tmp_path)[-1][1])
    assert ckpt["state"] == {"epoch": 2, "step": 12, "batch_in_epoch": 0}
    assert ckpt["schedule"]["step_count"] == 12


def weights(trainer: Trainer) -> dict:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize(
    "stop, ema, precision", [(3, 0.0, "fp32"), (6, 0.0, "fp32"), (5, 0.9, "fp32"), (5, 0.0, "fp16")]
)
def test_resume_matches_uninterrupted_run(tmp_path, stop, ema, precision):
    opts = dict(ema_decay=ema, precision=precision)
    full = make_trainer(tmp_path / "full", **opts)
    full.fit()
    first = make_trainer(tmp_path / "cut", stop_after_steps=stop, **opts)
    first.fit()
    assert first.state.step == stop
    # other initial weights and RNG: everything must come from the checkpoint
    second = make_trainer(tmp_path / "cut", init_seed=123, **opts)
    second.resume(list_checkpoints(tmp_path / "cut")[-1][1])
    second.fit()
    assert second.state.step == full.state.step
    assert second.schedule.step_count == full.schedule.step_count
    a, b = weights(full), weights(second)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    sa, sb = full.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    torch.testing.assert_close(sa[0]["exp_avg"], sb[0]["exp_avg"], rtol=0, atol=0)
    if precision == "fp16":  # the loss scale continued where it stopped
        assert second.scaler.get_scale() == full.scaler.get_scale()
    if ema:
        ea, eb = full.ema.module.state_dict(), second.ema.module.state_dict()
        assert not torch.equal(ea["fc1.weight"], a["fc1.weight"])
        for k in ea:
            torch.testing.assert_close(ea[k], eb[k], rtol=0, atol=0, msg=f"ema {k}")


def test_accumulation_equals_big_batch(tmp_path):
    big = make_trainer(tmp_path / "big", batch_size=4, log_every=1, epochs=1, max_steps_per_epoch=2)
    small = make_trainer(
        tmp_path / "acc", batch_size=2, accum_steps=2, log_every=1, epochs=1, max_steps_per_epoch=2
    )
    for t in (big, small):
        t.model.drop.p = 0.0
        t.fit()
    assert small.state.step == big.state.step == 2
    a, b = weights(big), weights(small)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path, precision):
    trainer = make_trainer(tmp_path, precision=precision, epochs=1)
    before = weights(trainer)
    metrics = trainer.fit()
    assert math.isfinite(metrics["loss"])
    assert (trainer.scaler is not None) == (precision == "fp16")
    assert any(not torch.equal(before[k], v) for k, v in weights(trainer).items())


def test_non_finite_loss_names_step_and_term_and_keeps_checkpoint(tmp_path):
    calls = {"n": 0}

    def step(module, batch):
        out = toy_step(module, batch)
        calls["n"] += 1
        if calls["n"] == 8:  # the 8th step; checkpoints after steps 3 and 6
            out["max_err"] = out["max_err"] * float("nan")
        return out

    trainer = make_trainer(tmp_path, step_fn=step, log_every=4, ckpt_every_steps=3)
    with pytest.raises(NonFiniteLossError, match=r"step 8: term 'max_err'"):
        trainer.fit()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 6]


def test_non_finite_loss_is_caught_before_a_checkpoint(tmp_path):
    def step(module, batch):
        out = toy_step(module, batch)
        out["loss"] = out["loss"] + (float("inf") if batch["index"][0] >= 0 else 0.0)
        return out

    trainer = make_trainer(tmp_path, step_fn=step, log_every=100, ckpt_every_steps=2)
    with pytest.raises(NonFiniteLossError, match=r"step 1: term 'loss'"):
        trainer.fit()
    assert list_checkpoints(tmp_path) == []


@pytest.mark.subprocess
def test_resume_with_workers_and_random_augmentation(tmp_path):
    """Per-item seeds make augmentation independent of workers and of where a run resumed."""

    def run(run_dir, **kw):
        return make_trainer(run_dir, data=SeededItems(NoisyData(), 0), workers=2, **kw)

    full = run(tmp_path / "full")
    full.fit()
    run(tmp_path / "cut", stop_after_steps=5).fit()
    second = run(tmp_path / "cut", init_seed=9)
    second.resume(list_checkpoints(tmp_path / "cut")[-1][1])
    second.fit()
    a, b = weights(full), weights(second)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    # the per-item seed changes with the epoch and leaves the caller's RNG alone
    items = SeededItems(NoisyData(), 0)
    state = torch.get_rng_state()
    x0 = items[3]["x"]
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(items[3]["x"], x0)
    items.set_epoch(1)
    assert not torch.equal(items[3]["x"], x0)


def test_read_log_skips_a_torn_last_line(tmp_path):
    from maskagain.engine.metrics import read_log

    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    assert read_log(path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    assert read_log(tmp_path / "missing.jsonl") == []
