"""Voxel-level overlap metrics for binary PVS masks, and their MONAI metric wrapper.

Foreground: prediction >= 0.5, reference non-zero after rounding to one decimal (:mod:`scripts.masks`).

Conventions for empty masks (documented in docs/outputs.md):

- Dice, IoU: 1.0 when prediction and reference are both empty, else 0.0 if either is empty.
- Precision: 1.0 when the prediction is empty (no false positives), whatever the reference.
- Recall: 1.0 when the reference is empty (nothing to find), whatever the prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.metrics import CumulativeIterationMetric

from scripts.masks import prediction_mask, reference_mask

OVERLAP_METRICS: tuple[str, ...] = ("dice", "iou", "precision", "recall")


def confusion_counts(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Count true positives, false positives and false negatives per batch item.

    Args:
        pred: prediction, shape (B, 1, ...) or (B, ...); values >= 0.5 are foreground.
        label: reference with the same shape as ``pred``; values non-zero after rounding to one decimal are
            foreground.

    Returns:
        A float64 tensor of shape (B, 3) holding (tp, fp, fn) for each item.

    Raises:
        ValueError: if the shapes differ.
    """
    if pred.shape != label.shape:
        raise ValueError(f"pred and label must have the same shape, not {tuple(pred.shape)} and {tuple(label.shape)}.")
    p = prediction_mask(pred).flatten(1)
    g = reference_mask(label).flatten(1)
    tp = (p & g).sum(1)
    fp = (p & ~g).sum(1)
    fn = (~p & g).sum(1)
    return torch.stack([tp, fp, fn], dim=1).double()


def overlap_from_counts(counts: torch.Tensor, name: str) -> torch.Tensor:
    """Turn (tp, fp, fn) counts into one overlap metric per item, with the module's empty-mask conventions.

    Args:
        counts: tensor of shape (B, 3) from :func:`confusion_counts`.
        name: one of ``dice``, ``iou``, ``precision``, ``recall``.

    Returns:
        A float64 tensor of shape (B,).

    Raises:
        ValueError: if ``name`` is not a known metric.
    """
    tp, fp, fn = counts.unbind(1)
    if name == "dice":
        num, den, empty_value = 2 * tp, 2 * tp + fp + fn, 1.0
    elif name == "iou":
        num, den, empty_value = tp, tp + fp + fn, 1.0
    elif name == "precision":
        num, den, empty_value = tp, tp + fp, 1.0
    elif name == "recall":
        num, den, empty_value = tp, tp + fn, 1.0
    else:
        raise ValueError(f"metric name must be one of {OVERLAP_METRICS}, not {name!r}.")
    return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, empty_value))


class OverlapMetric(CumulativeIterationMetric):
    """Per-case Dice, IoU, precision or recall of binary masks, averaged over cases.

    Counts are accumulated per case, so the mean is a mean over subjects (as papers report it), not a
    pooled voxel count.

    Args:
        name: one of ``dice``, ``iou``, ``precision``, ``recall``.

    Raises:
        ValueError: if ``name`` is not a known metric.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in OVERLAP_METRICS:
            raise ValueError(f"metric name must be one of {OVERLAP_METRICS}, not {name!r}.")
        self.name = name

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if y_pred.ndim < 3:
            raise ValueError(f"y_pred must have a batch and a channel dimension, not shape {tuple(y_pred.shape)}.")
        return confusion_counts(y_pred, y)

    def aggregate(self) -> torch.Tensor:
        """Return the mean of the per-case metric over every case seen since the last reset."""
        counts = self.get_buffer()
        if not isinstance(counts, torch.Tensor) or counts.numel() == 0:
            raise RuntimeError(f"{self.name}: no case was accumulated before aggregate().")
        return overlap_from_counts(counts.reshape(-1, 3), self.name).mean()


def overlap_metrics(
    pred: torch.Tensor, label: torch.Tensor, names: Sequence[str] = OVERLAP_METRICS
) -> dict[str, float]:
    """Compute overlap metrics for one case.

    Args:
        pred: binary prediction of one case, any shape.
        label: binary reference with the same shape.
        names: metric names to compute.

    Returns:
        A dict metric name -> value.
    """
    counts = confusion_counts(pred.reshape(1, -1), label.reshape(1, -1))
    return {name: float(overlap_from_counts(counts, name)[0]) for name in names}
