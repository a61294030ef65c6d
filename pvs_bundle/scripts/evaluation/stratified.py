"""PVS detection by size and the kinds of error behind a count: what a per-case F1 does not show.

Components, their assignment and true positives follow VALDO's rules exactly as :mod:`scripts.evaluation.detection`
scores them (26-connectivity, one reference per prediction, IoU > 0.1, the best per reference). On top:

- **By size**: each reference PVS falls in a size bin by its own volume in mm³ (voxels x voxel volume of the grid
  scored), each predicted PVS by its own. Bins (:data:`SIZE_EDGES_MM3`): < 2 mm³ (about 4 voxels of 0.8 mm), 2-5,
  5-10, 10-50, >= 50. Per case, the counts ``ref_n_<bin>`` (reference PVS), ``ref_found_<bin>`` (those with a true
  positive), ``pred_n_<bin>`` (predicted PVS) and ``pred_tp_<bin>`` (those that are true positives). Rates are
  pooled over cases (:func:`pooled_by_size`): recall = found / reference PVS of the bin, precision = true positives /
  predicted PVS of the bin, F1 their harmonic mean; a bin with no PVS gets NaN. Pooled, because a case holds a
  handful of PVS per bin and a mean of per-case ratios would weigh a case with one small PVS like one with fifty.
- **What the false positives are**: ``det_fragments``, predicted components that overlap a reference PVS but are
  not its true positive (a PVS found in pieces, or a piece too small for IoU > 0.1), and ``det_specks``, predicted
  components that overlap no reference PVS; the two add up to ``det_fp``.
- **Fragmentation**: ``det_fragmentation``, predicted components per reference PVS among the reference PVS that any
  prediction overlaps (1.0: each found whole; NaN when no reference PVS is overlapped).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scripts.evaluation.detection import DEFAULT_IOU_THRESHOLD, match_components

SIZE_EDGES_MM3: tuple[float, ...] = (2.0, 5.0, 10.0, 50.0)
ERROR_METRICS: tuple[str, ...] = ("det_fragments", "det_specks", "det_fragmentation")
_COUNTS = ("ref_n", "ref_found", "pred_n", "pred_tp")


def size_bins(edges: Sequence[float] = SIZE_EDGES_MM3) -> list[str]:
    """Names of the bins the edges make: ``lt2mm3``, ``2to5mm3``, …, ``ge50mm3``."""
    edges = [float(e) for e in edges]
    if not edges or any(b <= a for a, b in itertools.pairwise(edges)) or edges[0] <= 0:
        raise ValueError(f"size edges must be positive and increasing, not {edges}.")
    text = [f"{e:g}".replace(".", "p") for e in edges]
    middle = [f"{a}to{b}mm3" for a, b in itertools.pairwise(text)]
    return [f"lt{text[0]}mm3", *middle, f"ge{text[-1]}mm3"]


def stratified_metric_names(edges: Sequence[float] = SIZE_EDGES_MM3) -> tuple[str, ...]:
    """The per-case columns :func:`stratified_detection` writes, in order."""
    return (*ERROR_METRICS, *(f"{count}_{name}" for name in size_bins(edges) for count in _COUNTS))


def stratified_detection(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    min_size: int = 0,
    edges: Sequence[float] = SIZE_EDGES_MM3,
) -> dict[str, float | int]:
    """Per-case counts by PVS size, false positives split into fragments and specks, and fragmentation.

    Args:
        pred: 3D prediction (voxels >= 0.5 are foreground).
        ref: 3D reference, same shape (non-zero after rounding to one decimal).
        spacing: voxel spacing in mm of the grid both live in.
        iou_threshold: VALDO's IoU threshold for a true positive.
        min_size: minimum component size in voxels, both masks (as the detection metrics).
        edges: bin edges in mm³.

    Returns:
        The keys of :func:`stratified_metric_names`: ints, and ``det_fragmentation`` a float.
    """
    names = size_bins(edges)
    m = match_components(pred, ref, iou_threshold, min_size)
    ref_count, assigned, true_positive = m.ref_count, m.assigned, m.true_positive
    voxel_mm3 = float(np.prod(spacing))
    ref_sizes = np.bincount(m.ref_labels.ravel(), minlength=ref_count + 1)[1:] * voxel_mm3
    found = np.zeros(ref_count + 1, dtype=bool)
    found[assigned[true_positive]] = True
    ref_bin = np.digitize(ref_sizes, edges)
    pred_bin = np.digitize(m.pred_sizes * voxel_mm3, edges)
    per_reference = np.bincount(assigned[assigned > 0], minlength=ref_count + 1)[1:]
    overlapped = per_reference > 0
    row: dict[str, float | int] = {
        "det_fragments": int(((assigned > 0) & ~true_positive).sum()),
        "det_specks": int((assigned == 0).sum()),
        "det_fragmentation": float(per_reference[overlapped].mean()) if overlapped.any() else math.nan,
    }
    for k, name in enumerate(names):
        row[f"ref_n_{name}"] = int((ref_bin == k).sum())
        row[f"ref_found_{name}"] = int(found[1:][ref_bin == k].sum())
        row[f"pred_n_{name}"] = int((pred_bin == k).sum())
        row[f"pred_tp_{name}"] = int(true_positive[pred_bin == k].sum())
    return row


def pooled_by_size(
    rows: Sequence[Mapping[str, Any]], edges: Sequence[float] = SIZE_EDGES_MM3
) -> dict[str, dict[str, float | int]]:
    """Detection recall, precision and F1 per size bin, pooled over the cases' counts.

    Args:
        rows: per-case rows holding :func:`stratified_detection`'s counts.
        edges: the bin edges the rows were counted with.

    Returns:
        bin name -> ``{"reference_pvs", "found", "predicted_pvs", "true_positives", "recall", "precision", "f1"}``
        (NaN where a denominator is 0), plus ``"edges_mm3"``.
    """
    out: dict[str, Any] = {"edges_mm3": [float(e) for e in edges]}
    for name in size_bins(edges):
        ref_n, found, pred_n, tp = (sum(int(row[f"{c}_{name}"]) for row in rows) for c in _COUNTS)
        recall = found / ref_n if ref_n else math.nan
        precision = tp / pred_n if pred_n else math.nan
        if math.isnan(recall) or math.isnan(precision):
            f1 = math.nan
        else:
            f1 = 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0
        out[name] = {
            "reference_pvs": ref_n,
            "found": found,
            "predicted_pvs": pred_n,
            "true_positives": tp,
            "recall": recall,
            "precision": precision,
            "f1": f1,
        }
    return out
