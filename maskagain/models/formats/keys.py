"""Renaming state-dict keys between layouts, shared by the converters and the exporter."""

from __future__ import annotations


def swap_prefix(key: str, table: dict[str, str]) -> str | None:
    """``key`` with the first prefix of ``table`` it starts with replaced by that prefix's
    value (``"mlp.fc1.weight"``, ``{"mlp.fc1.": "intermediate.dense."}`` ->
    ``"intermediate.dense.weight"``); None when no prefix fits."""
    for src, dst in table.items():
        if key.startswith(src):
            return dst + key[len(src) :]
    return None
