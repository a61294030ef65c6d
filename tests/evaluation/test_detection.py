"""VALDO 2021 PVS detection rules, each case worked out by hand in the comment beside it.

Masks are (10, 20, 30) with PVS drawn as lines along the last axis at x = 2, y = 2 unless said otherwise, so that
components are separated by one background voxel (26-connectivity joins anything closer).
"""

import math

import numpy as np
import pytest

from scripts.evaluation.case_metrics import case_metrics
from scripts.evaluation.detection import DETECTION_METRICS, detection_metrics
from scripts.masks import label_components

SHAPE = (10, 20, 30)


def line(z_start: int, z_stop: int, x: int = 2, y: int = 2) -> np.ndarray:
    """Voxels (x, y, z_start..z_stop - 1)."""
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[x, y, z_start:z_stop] = 1
    return mask


def block() -> np.ndarray:
    """A 5 x 5 x 4 = 100-voxel block at x 2..6, y 2..6, z 2..5."""
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[2:7, 2:7, 2:6] = 1
    return mask


def inside_block(n_voxels: int) -> np.ndarray:
    """The first ``n_voxels`` of :func:`block` in scan order: a connected prediction with IoU n / 100."""
    pred = np.zeros(SHAPE, dtype=np.uint8)
    pred[tuple(np.argwhere(block())[:n_voxels].T)] = 1
    return pred


def counts(result: dict) -> tuple[int, int, int]:
    return result["det_tp"], result["det_fp"], result["det_fn"]


def test_returns_every_metric_with_integer_counts():
    result = detection_metrics(line(2, 5), line(2, 5))
    assert tuple(result) == DETECTION_METRICS
    for name in ("det_tp", "det_fp", "det_fn", "pred_count", "ref_count", "count_abs_diff"):
        assert type(result[name]) is int


def test_pvs_split_in_two_unequal_pieces_is_one_tp_and_one_fp():
    # ref: z 2..11 (10 voxels); pred: z 2..7 (6) and z 9..11 (3), both assigned to the reference.
    # IoU 6/10 = 0.6 and 3/10 = 0.3: only the group maximum is TP -> TP 1, FP 1, FN 0.
    # F1 = 2*1 / (2*1 + 1 + 0) = 2/3; precision 1/2, recall 1/1.
    # matched Dice: both pieces (9 voxels, all inside) against the reference: 2*9 / (9 + 10) = 18/19.
    result = detection_metrics(line(2, 8) | line(9, 12), line(2, 12))
    assert counts(result) == (1, 1, 0)
    assert result["det_f1"] == pytest.approx(2 / 3)
    assert (result["det_precision"], result["det_recall"]) == (0.5, 1.0)
    assert result["det_matched_dice"] == pytest.approx(18 / 19)
    assert (result["pred_count"], result["ref_count"], result["count_abs_diff"]) == (2, 1, 1)


def test_pvs_split_in_two_equal_pieces_gives_two_tied_tps():
    # ref: z 2..10 (9 voxels); pred: z 2..5 (4) and z 7..10 (4): IoU 4/9 each, a tie -> both TP.
    # TP 2, FP 0, FN 0 -> F1 = 4 / 4 = 1; matched Dice 2*8 / (8 + 9) = 16/17.
    result = detection_metrics(line(2, 6) | line(7, 11), line(2, 11))
    assert counts(result) == (2, 0, 0)
    assert result["det_f1"] == 1.0
    assert result["det_matched_dice"] == pytest.approx(16 / 17)


def test_prediction_merging_two_pvs_matches_one():
    # ref: R1 z 2..5 (4 voxels), R2 z 7..9 (3); pred z 2..9 (8) shares 4 with R1 and 3 with R2 -> assigned R1,
    # IoU 4 / (8 + 4 - 4) = 0.5 -> TP; R2 has no prediction assigned -> FN.
    # TP 1, FP 0, FN 1 -> F1 = 2 / 3; precision 1, recall 1/2; matched Dice (R1) 2*4 / (8 + 4) = 2/3.
    result = detection_metrics(line(2, 10), line(2, 6) | line(7, 10))
    assert counts(result) == (1, 0, 1)
    assert result["det_f1"] == pytest.approx(2 / 3)
    assert (result["det_precision"], result["det_recall"]) == (1.0, 0.5)
    assert result["det_matched_dice"] == pytest.approx(2 / 3)


def test_merge_is_assigned_by_overlap_not_by_iou():
    # R1: the 100-voxel block (z 2..5); R2: x 4, y 4, z 7..9 (3 voxels). pred: x 4, y 4, z 2..9 (8 voxels) shares
    # 4 voxels with R1 and 3 with R2 -> assigned R1 (most shared), IoU 4 / (8 + 100 - 4) = 4/104 <= 0.1 -> FP,
    # although its IoU with R2 would be 3/8. R1 is assigned (not FN), R2 is not (FN).
    # TP 0, FP 1, FN 1 -> F1 = 0 / (0 + 1 + 1) = 0; precision 0; recall 0 / (0 + 1) = 0; matched Dice 0 (no TP).
    result = detection_metrics(line(2, 10, x=4, y=4), block() | line(7, 10, x=4, y=4))
    assert counts(result) == (0, 1, 1)
    assert result["det_f1"] == 0.0
    assert (result["det_precision"], result["det_recall"], result["det_matched_dice"]) == (0.0, 0.0, 0.0)


def test_largest_overlap_tie_goes_to_the_lowest_reference_label():
    # R1 z 2..4, R2 z 6..8 (3 voxels each, R1 first in scan order); pred z 3..7 (5 voxels) shares 2 with each ->
    # assigned R1, IoU 2 / (5 + 3 - 2) = 1/3 -> TP; R2 FN. TP 1, FP 0, FN 1 -> F1 2/3.
    ref = line(2, 5) | line(6, 9)
    ref_labels, _ = label_components(ref)
    assert ref_labels[2, 2, 2] == 1 and ref_labels[2, 2, 6] == 2
    result = detection_metrics(line(3, 8), ref)
    assert counts(result) == (1, 0, 1)
    assert result["det_matched_dice"] == pytest.approx(2 * 2 / (5 + 3))


def test_reference_touched_only_by_a_low_iou_prediction_is_neither_tp_nor_fn():
    # ref: the block (100 voxels) and x 8, y 15, z 20..22 (3 voxels); pred: 5 voxels inside the block
    # (IoU 0.05 -> FP) and the 3-voxel PVS exactly (IoU 1 -> TP). The block has a prediction assigned: not FN.
    # TP 1, FP 1, FN 0 -> F1 = 2 / (2 + 1 + 0) = 2/3; precision 1/2; recall 1 / (1 + 0) = 1; ref_count 2.
    small = line(20, 23, x=8, y=15)
    result = detection_metrics(inside_block(5) | small, block() | small)
    assert counts(result) == (1, 1, 0)
    assert result["det_f1"] == pytest.approx(2 / 3)
    assert (result["det_precision"], result["det_recall"], result["ref_count"]) == (0.5, 1.0, 2)


def test_iou_exactly_0_1_is_not_a_true_positive():
    # 10 voxels inside the 100-voxel block: IoU 10 / 100 = 0.1, not > 0.1 -> FP; the block is assigned -> not FN.
    # TP 0, FP 1, FN 0 -> F1 = 0 / 1 = 0; recall 0 / 0 -> NaN.
    result = detection_metrics(inside_block(10), block())
    assert counts(result) == (0, 1, 0)
    assert result["det_f1"] == 0.0 and math.isnan(result["det_recall"])
    # 11 voxels: IoU 0.11 > 0.1 -> TP 1, FP 0, FN 0 -> F1 1.
    assert counts(detection_metrics(inside_block(11), block())) == (1, 0, 0)


def test_empty_reference_gives_nan():
    # pred one voxel, ref empty: TP 0, FP 1, FN 0; F1 undefined (NaN); precision 0 / 1 = 0; recall 0 / 0 = NaN.
    result = detection_metrics(line(2, 3), np.zeros(SHAPE))
    assert counts(result) == (0, 1, 0)
    assert math.isnan(result["det_f1"]) and math.isnan(result["det_recall"]) and math.isnan(result["det_matched_dice"])
    assert result["det_precision"] == 0.0


def test_empty_prediction_gives_zero():
    # ref one PVS, pred empty: TP 0, FP 0, FN 1; F1 0 (VALDO); precision 0 / 0 = NaN; recall 0 / 1 = 0.
    result = detection_metrics(np.zeros(SHAPE), line(2, 4))
    assert counts(result) == (0, 0, 1)
    assert (result["det_f1"], result["det_recall"], result["det_matched_dice"]) == (0.0, 0.0, 0.0)
    assert math.isnan(result["det_precision"])
    assert result["count_abs_diff"] == 1


def test_both_empty_gives_nan():
    result = detection_metrics(np.zeros(SHAPE), np.zeros(SHAPE))
    assert counts(result) == (0, 0, 0)
    assert all(math.isnan(result[name]) for name in ("det_precision", "det_recall", "det_f1", "det_matched_dice"))


def test_nothing_overlaps_is_all_fp_and_all_fn():
    # pred: two PVS at x 2 and x 5; ref: one PVS at x 8, none touching -> TP 0, FP 2, FN 1; F1 = 0 / 3 = 0.
    result = detection_metrics(line(2, 5) | line(2, 5, x=5), line(10, 14, x=8))
    assert counts(result) == (0, 2, 1)
    assert (result["det_f1"], result["det_precision"], result["det_recall"]) == (0.0, 0.0, 0.0)


def test_binarisation_rules_prediction_at_0_5_reference_after_rounding():
    # pred 0.5 counts (>= 0.5), 0.49 does not; ref 0.5 (one of two raters) counts, 0.04 rounds to 0.0 and does not.
    pred, ref = np.zeros(SHAPE), np.zeros(SHAPE)
    pred[2, 2, 2], pred[8, 15, 20] = 0.5, 0.49
    ref[2, 2, 2], ref[8, 15, 25] = 0.5, 0.04
    result = detection_metrics(pred, ref)
    assert (result["pred_count"], result["ref_count"], *counts(result)) == (1, 1, 1, 0, 0)


def test_anisotropic_voxels_detection_in_voxels_volumes_in_mm3():
    # The unequal split on 0.5 x 2 x 3 mm voxels (3 mm³ each): detection unchanged (TP 1, FP 1, F1 2/3);
    # V_pred = 9 * 3 = 27 mm³, V_ref = 10 * 3 = 30 mm³, signed difference -3, absolute 3.
    result = case_metrics(line(2, 8) | line(9, 12), line(2, 12), spacing=(0.5, 2.0, 3.0))
    assert counts(result) == (1, 1, 0) and result["det_f1"] == pytest.approx(2 / 3)
    assert result["pred_volume_mm3"] == pytest.approx(27.0) and result["ref_volume_mm3"] == pytest.approx(30.0)
    assert result["volume_diff_mm3"] == pytest.approx(-3.0) and result["abs_volume_diff_mm3"] == pytest.approx(3.0)


def test_corner_touching_voxels_are_one_component():
    mask = np.zeros(SHAPE)
    mask[1, 1, 1] = mask[2, 2, 2] = 1
    assert label_components(mask)[1] == 1


def test_min_size_drops_small_components_from_both_masks():
    # ref: a 3-voxel PVS and a single voxel; pred: the 3-voxel PVS. min_size 0: TP 1, FN 1; min_size 2: TP 1, FN 0.
    ref = line(2, 5) | line(20, 21, x=8, y=15)
    assert counts(detection_metrics(line(2, 5), ref)) == (1, 0, 1)
    assert counts(detection_metrics(line(2, 5), ref, min_size=2)) == (1, 0, 0)
    labels, count = label_components(ref, min_size=2)
    assert count == 1 and set(np.unique(labels)) == {0, 1}


def test_bad_input_raises():
    with pytest.raises(ValueError, match="same shape"):
        detection_metrics(np.zeros(SHAPE), np.zeros((10, 20, 31)))
    with pytest.raises(ValueError, match="iou_threshold"):
        detection_metrics(np.zeros(SHAPE), np.zeros(SHAPE), iou_threshold=1.0)
    with pytest.raises(ValueError, match="3D"):
        label_components(np.zeros((10, 20)))
    with pytest.raises(ValueError, match="min_size"):
        label_components(np.zeros(SHAPE), min_size=-1)
