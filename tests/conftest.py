"""Shared fixtures: tiny models and deterministic settings for CPU tests; the test tiers.

Tiers: ``make test`` runs everything; ``make check`` (``pytest -m "not slow"``) leaves out the
tests marked ``slow``, ``subprocess``, ``torchrun`` or ``e2e`` (the last three imply ``slow``).
A test that starts a Python child process without one of those three markers fails, so the fast
tier stays fast and every process-starting test says so.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from _s3 import s3_server  # noqa: F401  (a real S3 API on localhost, session-wide)

_PROCESS_MARKERS = ("subprocess", "torchrun", "e2e")

torch.set_num_threads(2)


@pytest.fixture
def tiny_kwargs() -> dict:
    """Overrides that make a registered model tiny: 4 frames of 32x32, patch 8 -> grid (2, 4, 4)."""
    return dict(img_size=32, num_frames=4, patch_size=8, tubelet_size=2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked subprocess, torchrun or e2e are slow too."""
    for item in items:
        if any(item.get_closest_marker(m) for m in _PROCESS_MARKERS):
            item.add_marker(pytest.mark.slow)


def _starts_python(args) -> bool:
    """Whether a ``Popen`` argument list starts a Python interpreter, the CLI or torchrun."""
    argv = [args] if isinstance(args, (str, bytes)) else list(args)
    first = str(argv[0]) if argv else ""
    return first == sys.executable or any(
        name in first.rsplit("/", 1)[-1] for name in ("python", "torchrun", "maskagain")
    )


@pytest.fixture(autouse=True)
def _process_starts_are_marked(request: pytest.FixtureRequest, monkeypatch) -> None:
    """Fail a test that starts a Python child process but is not marked as one that does."""
    if any(request.node.get_closest_marker(m) for m in _PROCESS_MARKERS):
        return
    original = subprocess.Popen.__init__
    nodeid = request.node.nodeid

    def guarded(self, args, *rest, **kwargs):
        if _starts_python(args):
            raise AssertionError(
                f"{nodeid} starts a Python process ({str(args)[:100]}); mark it "
                "@pytest.mark.subprocess (or torchrun / e2e) so `make check` leaves it out"
            )
        original(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
