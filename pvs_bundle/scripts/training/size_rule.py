"""The smallest PVS kept, in mm³, chosen on the validation split and stored with the model (issue 23, item 3).

A fixed cut in voxels means another volume at every resolution, and a cut that helps one generator loses the small
true PVS of another. So the cut is a volume, and validation chooses it: at the threshold the validation chose
(:mod:`scripts.training.threshold`), each cut of :data:`SIZE_CUTS_MM3` removes the predicted components smaller
than it, and VALDO's detection (:func:`scripts.evaluation.detection.match_components`) is pooled over every
validation case; the cut with the best pooled F1 is kept (the smallest on a tie). Below ``min_reference_pvs``
validation PVS nothing is removed (0), as the threshold then keeps 0.5. The record beside it says what each cut
cost: the true PVS no longer detected.

Inference and evaluation apply it with ``min_pvs_mm3: "auto"`` (:func:`scripts.model.model_file.resolve_min_pvs_mm3`,
:class:`scripts.inference.small_components.RemoveSmallComponentsd`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from scripts.evaluation.detection import DEFAULT_IOU_THRESHOLD, match_components

SIZE_CUTS_MM3: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0)
"""Cuts tried (mm³; 2 mm³ is 4 voxels at 0.8 mm, the smallest bin of the size-stratified evaluation)."""


def detection_by_cut(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    cuts: Sequence[float] = SIZE_CUTS_MM3,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
) -> np.ndarray:
    """VALDO's true positives, false positives and false negatives of one case after each cut, from one matching.

    A cut removes the predicted components of volume below it; the reference is never cut. Each row equals
    :func:`~scripts.evaluation.detection.detection_metrics` of the cut prediction (tested).

    Args:
        pred: 3D binary prediction.
        ref: 3D reference, same shape.
        spacing: voxel size in mm.
        cuts: volumes in mm³.
        iou_threshold: VALDO's IoU a true positive must exceed.

    Returns:
        int64 array of shape ``(len(cuts), 3)``: TP, FP, FN per cut.
    """
    m = match_components(pred, ref, iou_threshold)
    volumes = m.pred_sizes * math.prod(float(s) for s in spacing)
    counts = np.zeros((len(cuts), 3), dtype=np.int64)
    for i, cut in enumerate(cuts):
        kept = volumes >= cut
        group_max = np.zeros(m.ref_count + 1)
        np.maximum.at(group_max, m.assigned[kept], m.iou[kept])
        tp = kept & (m.assigned > 0) & (m.iou == group_max[m.assigned]) & (m.iou > iou_threshold)
        matched = np.unique(m.assigned[kept & (m.assigned > 0)]).size
        counts[i] = int(tp.sum()), int(kept.sum() - tp.sum()), m.ref_count - matched
    return counts


def pooled_f1(counts: np.ndarray) -> np.ndarray:
    """Detection F1 of summed TP, FP, FN rows (1 where there is nothing to find and nothing found)."""
    tp, fp, fn = (np.asarray(counts, dtype=np.float64)[:, k] for k in range(3))
    total = 2 * tp + fp + fn
    return np.where(total > 0, 2 * tp / np.maximum(total, 1.0), 1.0)


def choose_min_size(
    cuts: Sequence[float], counts: np.ndarray, reference_pvs: int, min_reference_pvs: int
) -> dict[str, Any]:
    """The cut to store, the rule that chose it, and what each cut did on validation.

    Args:
        cuts: the cuts tried (mm³), the first 0.
        counts: pooled TP, FP, FN per cut (:func:`detection_by_cut`, summed over cases).
        reference_pvs: PVS in the validation references.
        min_reference_pvs: below this, 0 is kept.

    Returns:
        ``{"min_pvs_mm3", "rule", "cuts", "det_f1", "true_pvs_lost", "false_pvs_removed"}``.

    Raises:
        ValueError: if ``cuts`` does not start at 0 or ``counts`` does not hold one row per cut.
    """
    counts = np.asarray(counts)
    if not len(cuts) or cuts[0] != 0 or counts.shape != (len(cuts), 3):
        raise ValueError(f"cuts must start at 0 with one TP, FP, FN row each, not {list(cuts)} and {counts.shape}.")
    f1 = pooled_f1(counts)
    if reference_pvs < min_reference_pvs:
        index, rule = 0, f"{reference_pvs} validation PVS < {min_reference_pvs}: kept every PVS"
    else:
        index, rule = int(np.argmax(f1)), f"best pooled detection F1 ({reference_pvs} validation PVS)"
    return {
        "min_pvs_mm3": float(cuts[index]),
        "rule": rule,
        "cuts": [float(c) for c in cuts],
        "det_f1": [round(float(v), 6) for v in f1],
        "true_pvs_lost": [int(v) for v in counts[:, 2] - counts[0, 2]],
        "false_pvs_removed": [int(v) for v in counts[0, 1] - counts[:, 1]],
    }
