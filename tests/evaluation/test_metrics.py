import math

import pytest
import torch

from scripts.evaluation.metrics import OverlapMetric, confusion_counts, overlap_metrics


def _masks():
    # tp = 2, fp = 1, fn = 3 on a non-cubic grid
    pred = torch.zeros(1, 1, 4, 5, 6)
    label = torch.zeros(1, 1, 4, 5, 6)
    pred[0, 0, 0, 0, :3] = 1
    label[0, 0, 0, 0, 1:3] = 1
    label[0, 0, 3, 4, 3:6] = 1
    return pred, label


def test_confusion_counts_match_hand_count():
    pred, label = _masks()
    assert confusion_counts(pred, label).tolist() == [[2.0, 1.0, 3.0]]


def test_overlap_values_against_hand_computed():
    pred, label = _masks()
    values = overlap_metrics(pred, label)
    assert values["dice"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 3))
    assert values["iou"] == pytest.approx(2 / 6)
    assert values["precision"] == pytest.approx(2 / 3)
    assert values["recall"] == pytest.approx(2 / 5)


def test_empty_conventions():
    empty = torch.zeros(3, 4, 5)
    some = torch.zeros(3, 4, 5)
    some[1, 1, 1] = 1
    assert overlap_metrics(empty, empty) == {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0}
    assert overlap_metrics(empty, some) == {"dice": 0.0, "iou": 0.0, "precision": 1.0, "recall": 0.0}
    assert overlap_metrics(some, empty) == {"dice": 0.0, "iou": 0.0, "precision": 0.0, "recall": 1.0}


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        confusion_counts(torch.zeros(1, 1, 2, 3, 4), torch.zeros(1, 1, 4, 3, 2))


def test_metric_averages_per_case_not_pooled_voxels():
    pred, label = _masks()
    perfect = torch.zeros(1, 1, 4, 5, 6)
    perfect[0, 0, 2, 2, 2] = 1
    metric = OverlapMetric("dice")
    metric(y_pred=[pred[0], perfect[0]], y=[label[0], perfect[0]])
    assert metric.aggregate().item() == pytest.approx((0.5 + 1.0) / 2)
    metric.reset()
    with pytest.raises(RuntimeError, match="no case"):
        metric.aggregate()


def test_unknown_metric_name():
    with pytest.raises(ValueError, match="must be one of"):
        OverlapMetric("accuracy")
    assert not math.isnan(overlap_metrics(torch.ones(2, 3, 4), torch.ones(2, 3, 4))["dice"])
