"""PVS-level detection of one case, scored by the rules of the VALDO 2021 evaluation code (Task 1, PVS).

The rules, as ``evaluation_comparison/pairwise_measures.py`` of github WhereIsValdo/valdo-eval-2021 runs them
for the task ``epvs`` with its defaults (connectivity 3, threshold 0.5, IoU 0.1), all counted in voxels:

1. Foreground: prediction >= 0.5; reference non-zero after rounding to one decimal
   (:mod:`scripts.masks`).
2. PVS are the connected components of each mask, with full 3D connectivity (26 neighbours,
   ``scipy.ndimage.generate_binary_structure(3, 3)``). VALDO applies no size filter; ``min_size`` (default 0)
   optionally drops components smaller than that many voxels from both masks first.
3. Each predicted component is assigned to ONE reference component: the one it shares the most voxels with
   (ties: the lowest label, labels numbered in ``scipy.ndimage.label``'s scan order). Its IoU is computed with
   that reference component only. A predicted component that overlaps no reference is a false positive.
4. Among the predicted components assigned to one reference component, those whose IoU equals the group's
   maximum (ties: all of them) and is strictly greater than ``iou_threshold`` (0.1) are true positives; the
   others are false positives. A PVS split in two unequal pieces is 1 TP + 1 FP; a prediction that merges two
   PVS is assigned to one of them.
5. False negatives are the reference components to which no predicted component is assigned. A reference
   component touched only by predictions whose IoU is <= 0.1 is neither TP nor FN (its predictions are FP).
6. ``det_f1`` = 2 TP / (2 TP + FP + FN). Empty reference: NaN (undefined; summaries leave it out of the means
   and count it in ``n_nan``). Empty prediction with a non-empty reference: 0. Both non-empty but nothing
   overlaps: every predicted component is FP and every reference component FN (the unmodified VALDO code
   crashes there).

VALDO weights a TP or FN by the largest reference value in its component (0.5 for a PVS marked by one of two
raters); the references scored here are binary masks, so every weight is 1 and the formula above is VALDO's.

VALDO reports no detection precision or recall; here ``det_precision`` = TP / (TP + FP) and ``det_recall`` =
TP / (TP + FN), so that ``det_f1`` is their harmonic mean. Each is NaN when its denominator is 0 (no predicted
component; or no TP and no FN, e.g. an empty reference).

``det_matched_dice`` is VALDO's "mean Dice when overlap" (``mean_diceover``, used in its ranking): for each
reference component with at least one TP, the Dice between it and the union of ALL predicted components
assigned to it (TPs and FPs, whole components), averaged over those reference components. Empty reference:
NaN; empty prediction: 0; no reference component with a TP: 0.

Counts: ``pred_count``, ``ref_count`` and ``count_abs_diff`` = |pred_count - ref_count|, integers, like the
TP, FP and FN counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scripts.masks import label_components, prediction_mask, reference_mask

DEFAULT_IOU_THRESHOLD = 0.1
DETECTION_METRICS: tuple[str, ...] = (
    "det_tp",
    "det_fp",
    "det_fn",
    "det_precision",
    "det_recall",
    "det_f1",
    "det_matched_dice",
    "pred_count",
    "ref_count",
    "count_abs_diff",
)


def assign_components(
    pred_labels: np.ndarray, pred_count: int, ref_labels: np.ndarray, ref_count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Assign each predicted component to the reference component it shares the most voxels with (rule 3).

    Args:
        pred_labels: label volume of the prediction, from :func:`label_components`.
        pred_count: number of predicted components.
        ref_labels: label volume of the reference, same shape.
        ref_count: number of reference components.

    Returns:
        Four arrays indexed by predicted label - 1: the assigned reference label (0: no overlap), the number of
        voxels shared with it, the predicted component's size, and its IoU with the assigned reference (0 when
        there is none).

    Raises:
        ValueError: if the label volumes differ in shape.
    """
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(
            f"pred_labels and ref_labels must have the same shape, not {pred_labels.shape} and {ref_labels.shape}."
        )
    both = (pred_labels > 0) & (ref_labels > 0)
    pair_keys = pred_labels[both].astype(np.int64) * (ref_count + 1) + ref_labels[both].astype(np.int64)
    keys, shared = np.unique(pair_keys, return_counts=True)
    pair_pred, pair_ref = np.divmod(keys, ref_count + 1)
    # per predicted component, the pair with the most shared voxels, then the lowest reference label
    order = np.lexsort((pair_ref, -shared, pair_pred))
    first = order[np.r_[True, pair_pred[order][1:] != pair_pred[order][:-1]]] if order.size else order
    assigned = np.zeros(pred_count, dtype=np.int64)
    intersection = np.zeros(pred_count, dtype=np.int64)
    assigned[pair_pred[first] - 1] = pair_ref[first]
    intersection[pair_pred[first] - 1] = shared[first]
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=pred_count + 1)[1:]
    ref_sizes = np.bincount(ref_labels.ravel(), minlength=ref_count + 1)
    union = pred_sizes + np.where(assigned > 0, ref_sizes[assigned], 0) - intersection
    iou = np.where(assigned > 0, intersection / np.maximum(union, 1), 0.0)
    return assigned, intersection, pred_sizes, iou


@dataclass(frozen=True)
class Matching:
    """The components of a prediction and a reference and VALDO's matching of them (rules 2 to 4).

    Arrays indexed by predicted label - 1: ``assigned`` (reference label, 0: none), ``intersection``,
    ``pred_sizes`` (voxels), ``iou`` and ``true_positive``.
    """

    pred_labels: np.ndarray
    pred_count: int
    ref_labels: np.ndarray
    ref_count: int
    assigned: np.ndarray
    intersection: np.ndarray
    pred_sizes: np.ndarray
    iou: np.ndarray
    true_positive: np.ndarray


def match_components(
    pred: np.ndarray, ref: np.ndarray, iou_threshold: float = DEFAULT_IOU_THRESHOLD, min_size: int = 0
) -> Matching:
    """Label both masks' components and match them by VALDO's rules (see the module docstring).

    Args:
        pred: 3D prediction; voxels >= 0.5 are foreground.
        ref: 3D reference, same shape; non-zero after rounding to one decimal is foreground.
        iou_threshold: IoU a true positive must exceed.
        min_size: minimum component size in voxels, both masks.
    """
    pred_labels, pred_count = label_components(prediction_mask(pred), min_size)
    ref_labels, ref_count = label_components(reference_mask(ref), min_size)
    assigned, intersection, pred_sizes, iou = assign_components(pred_labels, pred_count, ref_labels, ref_count)
    group_max = np.zeros(ref_count + 1)
    np.maximum.at(group_max, assigned, iou)
    true_positive = (assigned > 0) & (iou == group_max[assigned]) & (iou > iou_threshold)
    return Matching(
        pred_labels, pred_count, ref_labels, ref_count, assigned, intersection, pred_sizes, iou, true_positive
    )


def detection_metrics(
    pred: np.ndarray, ref: np.ndarray, iou_threshold: float = DEFAULT_IOU_THRESHOLD, min_size: int = 0
) -> dict[str, float | int]:
    """Component-level detection of one case by VALDO's rules (see the module docstring).

    Args:
        pred: 3D prediction (probabilities or a mask); voxels >= 0.5 are foreground.
        ref: 3D reference with the same shape; voxels non-zero after rounding to one decimal are foreground.
        iou_threshold: a predicted component can be a true positive only when its IoU with its assigned
            reference component is strictly greater than this, in [0, 1).
        min_size: minimum component size in voxels, applied to both masks (0, VALDO's rule, keeps all).

    Returns:
        A dict with the keys of :data:`DETECTION_METRICS`: ``det_tp``, ``det_fp``, ``det_fn``, ``pred_count``,
        ``ref_count`` and ``count_abs_diff`` as ints, the others as floats (NaN where undefined).

    Raises:
        ValueError: if the masks are not 3D, differ in shape, or a parameter is out of range.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref must have the same shape, not {pred.shape} and {ref.shape}.")
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1), not {iou_threshold}.")
    m = match_components(pred, ref, iou_threshold, min_size)
    pred_count, ref_count, assigned, true_positive = m.pred_count, m.ref_count, m.assigned, m.true_positive
    tp = int(true_positive.sum())
    fp = pred_count - tp
    fn = ref_count - np.unique(assigned[assigned > 0]).size
    if ref_count == 0:
        f1 = matched_dice = math.nan
    elif pred_count == 0:
        f1 = matched_dice = 0.0
    else:
        f1 = 2 * tp / (2 * tp + fp + fn)
        matched_dice = _matched_dice(assigned, m.intersection, m.pred_sizes, m.ref_labels, ref_count, true_positive)
    return {
        "det_tp": tp,
        "det_fp": fp,
        "det_fn": fn,
        "det_precision": tp / (tp + fp) if tp + fp else math.nan,
        "det_recall": tp / (tp + fn) if tp + fn else math.nan,
        "det_f1": float(f1),
        "det_matched_dice": float(matched_dice),
        "pred_count": pred_count,
        "ref_count": ref_count,
        "count_abs_diff": abs(pred_count - ref_count),
    }


def _matched_dice(
    assigned: np.ndarray,
    intersection: np.ndarray,
    pred_sizes: np.ndarray,
    ref_labels: np.ndarray,
    ref_count: int,
    true_positive: np.ndarray,
) -> float:
    """VALDO's mean Dice over reference components with a TP, each against all predictions assigned to it."""
    matched = np.unique(assigned[true_positive])
    if matched.size == 0:
        return 0.0
    ref_sizes = np.bincount(ref_labels.ravel(), minlength=ref_count + 1)
    shared = np.bincount(assigned, weights=intersection, minlength=ref_count + 1)
    predicted = np.bincount(assigned, weights=pred_sizes, minlength=ref_count + 1)
    return float(np.mean(2 * shared[matched] / (predicted[matched] + ref_sizes[matched])))
