import numpy as np
import pytest

from scripts.evaluation.detection import DETECTION_METRICS, detection_metrics, label_components, pairwise_iou

SHAPE = (10, 20, 30)


def block(slices: tuple[slice, ...]) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[slices] = 1
    return mask


def reference_block_with_inner_prediction(n_inside: int) -> tuple[np.ndarray, np.ndarray]:
    """A 100-voxel reference block and a connected prediction of ``n_inside`` of its voxels: IoU = n / 100."""
    ref = block((slice(2, 7), slice(2, 7), slice(5, 9)))
    pred = np.zeros(SHAPE, dtype=np.uint8)
    pred[tuple(np.argwhere(ref)[:n_inside].T)] = 1
    return pred, ref


def test_returns_every_detection_metric():
    assert tuple(detection_metrics(block((0, 0, 0)), block((0, 0, 0)))) == DETECTION_METRICS


def test_corner_touching_voxels_are_one_component():
    mask = np.zeros(SHAPE)
    mask[1, 1, 1] = mask[2, 2, 2] = 1
    _, count = label_components(mask)
    assert count == 1


def test_min_size_drops_small_components_and_relabels():
    mask = block((slice(0, 2), slice(0, 2), slice(0, 2)))
    mask[8, 18, 28] = 1
    labels, count = label_components(mask, min_size=2)
    assert count == 1
    assert set(np.unique(labels)) == {0, 1}
    assert labels[8, 18, 28] == 0


def test_label_components_rejects_2d():
    with pytest.raises(ValueError, match="3D"):
        label_components(np.zeros((10, 20)))


def test_label_components_rejects_negative_min_size():
    with pytest.raises(ValueError, match="min_size"):
        label_components(np.zeros(SHAPE), min_size=-1)


def test_single_voxel_components_all_detected():
    mask = np.zeros(SHAPE)
    mask[1, 1, 1] = mask[5, 10, 15] = mask[8, 18, 28] = 1
    result = detection_metrics(mask, mask)
    assert result["det_precision"] == result["det_recall"] == result["det_f1"] == 1.0
    assert result["pred_count"] == result["ref_count"] == 3.0


def test_both_empty():
    result = detection_metrics(np.zeros(SHAPE), np.zeros(SHAPE))
    assert (result["det_precision"], result["det_recall"], result["det_f1"]) == (1.0, 1.0, 1.0)
    assert result["count_abs_diff"] == 0.0


def test_empty_prediction():
    result = detection_metrics(np.zeros(SHAPE), block((1, 1, 1)))
    assert (result["det_precision"], result["det_recall"], result["det_f1"]) == (1.0, 0.0, 0.0)
    assert result["count_abs_diff"] == 1.0


def test_empty_reference():
    result = detection_metrics(block((1, 1, 1)), np.zeros(SHAPE))
    assert (result["det_precision"], result["det_recall"], result["det_f1"]) == (0.0, 1.0, 0.0)


def test_iou_just_above_threshold_is_a_detection():
    pred, ref = reference_block_with_inner_prediction(11)
    assert detection_metrics(pred, ref)["det_f1"] == 1.0


def test_iou_just_below_threshold_is_a_miss():
    pred, ref = reference_block_with_inner_prediction(9)
    result = detection_metrics(pred, ref)
    assert (result["det_precision"], result["det_recall"]) == (0.0, 0.0)


def test_iou_equal_to_threshold_is_a_miss():
    pred, ref = reference_block_with_inner_prediction(10)
    assert detection_metrics(pred, ref)["det_precision"] == 0.0


def test_pairwise_iou_of_one_prediction_over_two_references():
    ref = block((slice(0, 2), 0, 0)) + block((slice(5, 7), 0, 0))
    pred = block((slice(0, 7), 0, 0))
    pred_labels, pred_count = label_components(pred)
    ref_labels, ref_count = label_components(ref)
    pred_ids, ref_ids, iou = pairwise_iou(pred_labels, pred_count, ref_labels, ref_count)
    assert pred_ids.tolist() == [1, 1]
    assert ref_ids.tolist() == [1, 2]
    np.testing.assert_allclose(iou, [2 / 7, 2 / 7])


def test_partial_detection_gives_recall_one_half():
    ref = block((slice(0, 2), 0, 0)) + block((slice(5, 7), 0, 0))
    pred = block((slice(0, 2), 0, 0))
    result = detection_metrics(pred, ref)
    assert (result["det_precision"], result["det_recall"]) == (1.0, 0.5)
    assert result["det_f1"] == pytest.approx(2 / 3)


def test_min_size_applies_to_the_reference():
    ref = block((slice(0, 2), slice(0, 2), slice(0, 2)))
    ref[8, 18, 28] = 1
    pred = block((slice(0, 2), slice(0, 2), slice(0, 2)))
    assert detection_metrics(pred, ref)["det_recall"] == 0.5
    assert detection_metrics(pred, ref, min_size=2)["det_recall"] == 1.0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        detection_metrics(np.zeros(SHAPE), np.zeros((10, 20, 31)))


def test_iou_threshold_out_of_range_raises():
    with pytest.raises(ValueError, match="iou_threshold"):
        detection_metrics(np.zeros(SHAPE), np.zeros(SHAPE), iou_threshold=1.0)
