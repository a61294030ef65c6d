"""Where the voxel Dice is lost, on hand-built cases whose shares are counted by hand."""

import numpy as np
import pytest

from scripts.evaluation.case_metrics import case_metrics
from scripts.evaluation.voxel_errors import VOXEL_ERROR_METRICS, voxel_errors


def hand_built() -> tuple[np.ndarray, np.ndarray]:
    """Reference: a 10-voxel PVS and a 5-voxel one. Prediction: the first drawn one row too wide (10 voxels beside it)
    and 2 voxels short, the second missed, and a 3-voxel speck far from both."""
    ref, pred = np.zeros((20, 20, 20), bool), np.zeros((20, 20, 20), bool)
    ref[5, 5, 2:12] = True
    ref[15, 15, 2:7] = True
    pred[5, 5, 2:10] = True  # 8 true positives, 2 voxels short at the end
    pred[6, 5, 2:12] = True  # a row beside it: 10 false positives touching the found PVS
    pred[15, 2, 14:17] = True  # a speck
    return pred, ref


def test_each_kind_counted_by_hand() -> None:
    pred, ref = hand_built()
    shares = voxel_errors(pred, ref)
    denominator = 2 * 8 + 10 + 3 + 2 + 5  # 2 TP + FP + FN
    assert list(shares) == list(VOXEL_ERROR_METRICS)
    assert shares["dice_lost_wide"] == pytest.approx(10 / denominator)
    assert shares["dice_lost_specks"] == pytest.approx(3 / denominator)
    assert shares["dice_lost_narrow"] == pytest.approx(2 / denominator)
    assert shares["dice_lost_missed"] == pytest.approx(5 / denominator)


def test_shares_add_up_to_the_dice_lost_in_the_case_metrics() -> None:
    pred, ref = hand_built()
    row = case_metrics(pred.astype(np.float32), ref.astype(np.float32), (0.8, 0.8, 0.8))
    assert sum(row[name] for name in VOXEL_ERROR_METRICS) == pytest.approx(1.0 - row["dice"])
    assert row["dice"] == pytest.approx(16 / 36)


def test_a_fragment_spilling_past_its_pvs_counts_as_wide_not_as_a_speck() -> None:
    ref, pred = np.zeros((12, 12, 12), bool), np.zeros((12, 12, 12), bool)
    ref[3, 3, 2:6] = True
    pred[3, 3, 2:4] = True
    pred[3, 3, 5:9] = True  # a piece overlapping the PVS's last voxel and running 3 voxels past it
    shares = voxel_errors(pred, ref)
    assert shares["dice_lost_wide"] == pytest.approx(3 / (2 * 3 + 3 + 1))
    assert shares["dice_lost_specks"] == 0.0 and shares["dice_lost_missed"] == 0.0
    assert shares["dice_lost_narrow"] == pytest.approx(1 / 10)


def test_empty_masks_lose_nothing_and_a_speck_alone_loses_all() -> None:
    empty = np.zeros((6, 6, 6), bool)
    assert voxel_errors(empty, empty) == dict.fromkeys(VOXEL_ERROR_METRICS, 0.0)
    speck = empty.copy()
    speck[2, 2, 2] = True
    assert voxel_errors(speck, empty)["dice_lost_specks"] == 1.0
    assert voxel_errors(empty, speck)["dice_lost_missed"] == 1.0


def test_refuses_masks_that_are_not_3d_booleans_of_one_shape() -> None:
    with pytest.raises(ValueError, match="3D boolean"):
        voxel_errors(np.zeros((4, 4, 4)), np.zeros((4, 4, 4), bool))
    with pytest.raises(ValueError, match="3D boolean"):
        voxel_errors(np.zeros((4, 4, 4), bool), np.zeros((4, 4, 5), bool))
