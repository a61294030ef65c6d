"""Every per-case evaluation metric in one call.

Per case (prediction >= 0.5, reference non-zero after rounding to one decimal, as :mod:`scripts.masks`
states; scored in the label's own grid with its voxel spacing in mm):

- ``dice``, ``iou``, ``precision``, ``recall``: voxel overlap, from :mod:`scripts.evaluation.metrics` (empty-mask
  conventions documented there).
- ``pred_volume_mm3``, ``ref_volume_mm3``: foreground voxels x voxel volume; ``volume_diff_mm3`` = V_pred - V_ref
  (signed: positive when the prediction is larger) and ``abs_volume_diff_mm3`` = |V_pred - V_ref|.
- ``hd95_mm``: 95th-percentile symmetric Hausdorff distance in mm between the mask surfaces, as MONAI's
  ``compute_hausdorff_distance(..., percentile=95)`` defines it: the larger of the two directed 95th
  percentiles. Both masks empty: 0.0. Exactly one empty: NaN (undefined).
- ``det_tp``, ``det_fp``, ``det_fn``, ``det_precision``, ``det_recall``, ``det_f1``, ``det_matched_dice``,
  ``pred_count``, ``ref_count``, ``count_abs_diff``: PVS detection by VALDO's rules, from
  :mod:`scripts.evaluation.detection` (conventions documented there).
- PVS detection by size and the kinds of false PVS, from :mod:`scripts.evaluation.stratified`.
- ``dice_lost_wide``, ``dice_lost_specks``, ``dice_lost_narrow``, ``dice_lost_missed``: where the voxel Dice is
  lost, from :mod:`scripts.evaluation.voxel_errors` (they add up to 1 - ``dice``).

Their summary over cases and the files an evaluation writes: :mod:`scripts.evaluation.summary`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

from scripts.evaluation.detection import DEFAULT_IOU_THRESHOLD, DETECTION_METRICS, detection_metrics
from scripts.evaluation.metrics import OVERLAP_METRICS, overlap_metrics
from scripts.evaluation.stratified import stratified_detection, stratified_metric_names
from scripts.evaluation.voxel_errors import VOXEL_ERROR_METRICS, voxel_errors
from scripts.masks import prediction_mask, reference_mask
from scripts.nifti import check_spacing

VOLUME_METRICS: tuple[str, ...] = ("pred_volume_mm3", "ref_volume_mm3", "volume_diff_mm3", "abs_volume_diff_mm3")
CASE_METRICS: tuple[str, ...] = (
    *OVERLAP_METRICS,
    *VOLUME_METRICS,
    "hd95_mm",
    *DETECTION_METRICS,
    *stratified_metric_names(),
    *VOXEL_ERROR_METRICS,
)


def volume_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Foreground volumes of a prediction and its reference, and their signed and absolute difference, in mm³.

    Args:
        pred: boolean prediction mask.
        ref: boolean reference mask.
        spacing: voxel spacing in mm, one value per axis.

    Returns:
        A dict with the keys of :data:`VOLUME_METRICS`; ``volume_diff_mm3`` is V_pred - V_ref.

    Raises:
        ValueError: if the spacing is invalid.
    """
    voxel_mm3 = math.prod(check_spacing(spacing, np.ndim(pred)))
    pred_mm3 = int(np.count_nonzero(pred)) * voxel_mm3
    ref_mm3 = int(np.count_nonzero(ref)) * voxel_mm3
    return {
        "pred_volume_mm3": pred_mm3,
        "ref_volume_mm3": ref_mm3,
        "volume_diff_mm3": pred_mm3 - ref_mm3,
        "abs_volume_diff_mm3": abs(pred_mm3 - ref_mm3),
    }


def hausdorff95_mm(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (0.0 if both masks are empty, NaN if one is).

    Args:
        pred: boolean prediction mask.
        ref: boolean reference mask with the same shape.
        spacing: voxel spacing in mm, one value per axis.

    Returns:
        The larger of the two directed 95th-percentile surface distances, in mm.

    Raises:
        ValueError: if the shapes differ or the spacing is invalid.
    """
    pred_mask, ref_mask = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"pred and ref must have the same shape, not {pred_mask.shape} and {ref_mask.shape}.")
    spacing = check_spacing(spacing, pred_mask.ndim)
    pred_any, ref_any = bool(pred_mask.any()), bool(ref_mask.any())
    if not pred_any and not ref_any:
        return 0.0
    if not pred_any or not ref_any:
        return float("nan")
    distance = compute_hausdorff_distance(
        torch.from_numpy(pred_mask[None, None]),
        torch.from_numpy(ref_mask[None, None]),
        include_background=True,
        percentile=95,
        spacing=list(spacing),
    )
    return float(distance[0, 0])


def case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    min_size: int = 0,
) -> dict[str, float | int]:
    """Compute every per-case metric of :data:`CASE_METRICS` for one case.

    Args:
        pred: 3D prediction (a mask, or probabilities): voxels >= 0.5 are foreground.
        ref: 3D reference with the same shape: voxels non-zero after rounding to one decimal are foreground.
        spacing: voxel spacing in mm of the grid both masks live in.
        iou_threshold: component IoU above which a predicted PVS can be a true positive (VALDO: 0.1).
        min_size: minimum component size in voxels for the detection metrics (0 keeps all).

    Returns:
        A dict metric name -> value, keys in the order of :data:`CASE_METRICS`.

    Raises:
        ValueError: if the masks are not 3D, differ in shape, or the spacing is invalid.
    """
    pred_mask, ref_mask = prediction_mask(pred), reference_mask(ref)
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"pred and ref must have the same shape, not {pred_mask.shape} and {ref_mask.shape}.")
    if pred_mask.ndim != 3:
        raise ValueError(f"pred and ref must be 3D, not of shape {pred_mask.shape}.")
    spacing = check_spacing(spacing)
    row: dict[str, float | int] = dict(overlap_metrics(torch.from_numpy(pred_mask), torch.from_numpy(ref_mask)))
    row.update(volume_metrics(pred_mask, ref_mask, spacing))
    row["hd95_mm"] = hausdorff95_mm(pred_mask, ref_mask, spacing)
    row.update(detection_metrics(pred_mask, ref_mask, iou_threshold=iou_threshold, min_size=min_size))
    row.update(stratified_detection(pred_mask, ref_mask, spacing, iou_threshold=iou_threshold, min_size=min_size))
    row.update(voxel_errors(pred_mask, ref_mask))
    return row
