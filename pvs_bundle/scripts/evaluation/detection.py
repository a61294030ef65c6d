"""PVS-level detection metrics on connected components, as VALDO 2021 (Task 1) defines them.

Both masks are binarised at 0.5 and split into connected components with full 3D connectivity
(26 neighbours, ``scipy.ndimage.generate_binary_structure(3, 3)``). Components smaller than ``min_size``
voxels are dropped from both masks first (``min_size=0``, the default, keeps every component).

A predicted component is a true positive when its IoU with some reference component is strictly greater
than ``iou_threshold`` (0.1 in VALDO). The IoU of every overlapping (predicted, reference) pair is computed
in one pass over the voxels where both masks are set.

- Detection precision = true-positive predicted components / predicted components.
- Detection recall = reference components matched by at least one predicted component with IoU above the
  threshold / reference components.
- Detection F1 = harmonic mean of detection precision and recall (0 when both are 0).

Conventions for empty masks (after ``min_size`` filtering):

- Both empty: precision = recall = F1 = 1 (nothing to find, nothing falsely found).
- Prediction empty, reference not: precision = 1, recall = 0, F1 = 0.
- Reference empty, prediction not: precision = 0, recall = 1, F1 = 0.

Counts are reported too: ``pred_count``, ``ref_count`` and ``count_abs_diff`` = |pred_count - ref_count|.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CONNECTIVITY: np.ndarray = ndimage.generate_binary_structure(3, 3)
DETECTION_METRICS: tuple[str, ...] = (
    "det_precision",
    "det_recall",
    "det_f1",
    "pred_count",
    "ref_count",
    "count_abs_diff",
)


def label_components(mask: np.ndarray, min_size: int = 0) -> tuple[np.ndarray, int]:
    """Label the 26-connected components of a binary mask, dropping those smaller than ``min_size``.

    Args:
        mask: 3D array; voxels > 0.5 are foreground.
        min_size: minimum component size in voxels; smaller components are removed (0 keeps all).

    Returns:
        The label volume (0 = background, components numbered 1..count consecutively) and the count.

    Raises:
        ValueError: if ``mask`` is not 3D or ``min_size`` is negative.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be a 3D array, not an array of shape {mask.shape}.")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, not {min_size}.")
    labels, count = ndimage.label(mask > 0.5, structure=CONNECTIVITY)
    if min_size <= 1 or count == 0:
        return labels, int(count)
    keep = np.bincount(labels.ravel(), minlength=count + 1) >= min_size
    keep[0] = False
    new_ids = np.zeros(count + 1, dtype=labels.dtype)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1, dtype=labels.dtype)
    return new_ids[labels], int(keep.sum())


def pairwise_iou(
    pred_labels: np.ndarray, pred_count: int, ref_labels: np.ndarray, ref_count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every overlapping pair of predicted and reference components.

    Args:
        pred_labels: label volume of the prediction, from :func:`label_components`.
        pred_count: number of predicted components.
        ref_labels: label volume of the reference, same shape.
        ref_count: number of reference components.

    Returns:
        Three 1D arrays of equal length, one entry per overlapping pair: predicted label, reference label, IoU.
        Pairs that do not overlap (IoU 0) are not listed.

    Raises:
        ValueError: if the label volumes differ in shape.
    """
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(
            f"pred_labels and ref_labels must have the same shape, not {pred_labels.shape} and {ref_labels.shape}."
        )
    both = (pred_labels > 0) & (ref_labels > 0)
    pair_keys = pred_labels[both].astype(np.int64) * (ref_count + 1) + ref_labels[both].astype(np.int64)
    keys, intersection = np.unique(pair_keys, return_counts=True)
    pred_ids, ref_ids = np.divmod(keys, ref_count + 1)
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=pred_count + 1)
    ref_sizes = np.bincount(ref_labels.ravel(), minlength=ref_count + 1)
    union = pred_sizes[pred_ids] + ref_sizes[ref_ids] - intersection
    return pred_ids, ref_ids, intersection / union


def detection_metrics(
    pred: np.ndarray, ref: np.ndarray, iou_threshold: float = 0.1, min_size: int = 0
) -> dict[str, float]:
    """Component-level detection precision, recall, F1 and counts of one case (see the module docstring).

    Args:
        pred: 3D prediction; voxels > 0.5 are foreground.
        ref: 3D reference with the same shape.
        iou_threshold: a predicted component is a true positive when its IoU with a reference component is
            strictly greater than this, in [0, 1).
        min_size: minimum component size in voxels, applied to both masks (0 keeps all).

    Returns:
        A dict with ``det_precision``, ``det_recall``, ``det_f1``, ``pred_count``, ``ref_count`` and
        ``count_abs_diff``, all floats.

    Raises:
        ValueError: if the masks are not 3D, differ in shape, or a parameter is out of range.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref must have the same shape, not {pred.shape} and {ref.shape}.")
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1), not {iou_threshold}.")
    pred_labels, pred_count = label_components(pred, min_size)
    ref_labels, ref_count = label_components(ref, min_size)
    pred_ids, ref_ids, iou = pairwise_iou(pred_labels, pred_count, ref_labels, ref_count)
    hit = iou > iou_threshold
    true_positives = np.unique(pred_ids[hit]).size
    matched_refs = np.unique(ref_ids[hit]).size
    precision = true_positives / pred_count if pred_count else 1.0
    recall = matched_refs / ref_count if ref_count else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "det_precision": float(precision),
        "det_recall": float(recall),
        "det_f1": float(f1),
        "pred_count": float(pred_count),
        "ref_count": float(ref_count),
        "count_abs_diff": float(abs(pred_count - ref_count)),
    }
