"""Evaluation reports fit the data: top-5 only with more than 5 classes, and ``predictions.csv``
names each video's path, label, prediction and every class's score."""

from __future__ import annotations

import csv

import pytest
import torch

from maskagain.engine.evaluation import aggregate_views, save_report


def _result(num_classes: int, videos: int = 4):
    labels = torch.arange(videos) % num_classes
    logits = torch.randn(videos, num_classes)
    index = torch.arange(videos)
    return aggregate_views(index, index, labels, logits.softmax(-1), num_classes), logits


@pytest.mark.parametrize("num_classes", [3, 5])
def test_top5_is_left_out_for_five_classes_or_fewer(num_classes):
    result, _ = _result(num_classes)
    assert result.top5 is None and result.metrics()["top5"] is None


def test_top5_is_reported_for_more_than_five_classes():
    result, logits = _result(7, videos=14)
    ranked = logits.topk(5, dim=1).indices
    expected = float((ranked == (torch.arange(14) % 7)[:, None]).any(1).float().mean() * 100)
    assert result.top5 == pytest.approx(expected)


def test_predictions_csv_has_paths_names_and_scores(tmp_path):
    result, logits = _result(3)
    names = ["jump", "run", "swim"]
    paths = [f"/data/{names[i % 3]}/v{i}.mp4" for i in range(4)]
    save_report(result, tmp_path, names, paths)
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    probs = logits.softmax(-1)
    assert [r["path"] for r in rows] == paths
    for i, row in enumerate(rows):
        pred = int(probs[i].argmax())
        assert row["label_name"] == names[i % 3] and row["prediction_name"] == names[pred]
        scores = [float(row[f"score_{n}"]) for n in names]
        assert scores == pytest.approx(probs[i].tolist(), abs=1e-6)
        assert float(row["score"]) == pytest.approx(scores[pred])
    save_report(result, tmp_path / "no_paths", names)
    rows = list(csv.DictReader(open(tmp_path / "no_paths" / "predictions.csv")))
    assert all(r["path"] == "" for r in rows)
