"""Projections that map student features to the teacher's width (phi, phi', phi'')."""

from __future__ import annotations

from torch import nn

HINT_PROJECTIONS = ("auto", "mlp", "linear", "identity")


def linear_or_identity(in_dim: int, out_dim: int) -> nn.Module:
    """phi / phi' of eqs. 4 and 8: identity when the widths agree, else a Linear."""
    return nn.Identity() if in_dim == out_dim else nn.Linear(in_dim, out_dim)


def hint_projection(in_dim: int, out_dim: int, kind: str = "auto") -> nn.Module:
    """phi'' of eq. 14, applied to the selected student rows only.

    kind: "auto" (MLP when the widths differ, identity otherwise; the paper's MaskAgain-S),
    "mlp" (Linear in->out, ReLU, Linear out->out), "linear", or "identity" (equal widths only).
    """
    if kind not in HINT_PROJECTIONS:
        raise ValueError(f"hint projection must be one of {HINT_PROJECTIONS}, got {kind!r}")
    if kind == "auto":
        kind = "identity" if in_dim == out_dim else "mlp"
    if kind == "identity":
        if in_dim != out_dim:
            raise ValueError(
                f"hint_projection='identity' needs equal widths, got student {in_dim} and "
                f"teacher {out_dim}; use 'auto', 'mlp' or 'linear'"
            )
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))
