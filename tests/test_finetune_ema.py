"""Model EMA against a plain running-average reference, and its checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from maskagain.engine.ema import ModelEma
from maskagain.models import create_model


def test_ema_matches_reference_and_round_trips(tiny_kwargs: dict) -> None:
    model = create_model("vit_nano", num_classes=3, **tiny_kwargs)
    ema = ModelEma(model, decay=0.9)
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(model)
        for k, v in model.state_dict().items():
            ref[k] = 0.9 * ref[k] + 0.1 * v
    for k, v in ema.module.state_dict().items():
        assert torch.allclose(v, ref[k], atol=1e-6), k
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert not ema.module.training

    other = ModelEma(create_model("vit_nano", num_classes=3, **tiny_kwargs), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 3
    for a, b in zip(other.module.state_dict().values(), ema.module.state_dict().values()):
        assert torch.equal(a, b)


def test_ema_rejects_bad_decay(tiny_kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ModelEma(create_model("vit_nano", **tiny_kwargs), decay=1.0)
