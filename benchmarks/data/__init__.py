"""Data benchmarks (``python -m benchmarks.data``): clip decoding against decord
(:mod:`~benchmarks.data.decode`), the training loader per core (:mod:`~benchmarks.data.pipeline`,
:mod:`~benchmarks.data.remote`), synthetic-set probes (:mod:`~benchmarks.data.probes`); the
command line and the report in :mod:`~benchmarks.data.report`."""

from benchmarks.data.decode import write_test_video
from benchmarks.data.pipeline import PIPE_ROWS
from benchmarks.data.probes import linear_probe, motion_features
from benchmarks.data.report import collect, main, run_default, update_markdown

__all__ = [
    "PIPE_ROWS",
    "collect",
    "linear_probe",
    "main",
    "motion_features",
    "run_default",
    "update_markdown",
    "write_test_video",
]
