"""Benchmarks of the training step and the data pipeline (not part of the library)."""
