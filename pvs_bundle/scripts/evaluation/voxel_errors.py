"""Where the voxel Dice is lost: every wrong voxel of a case put in one of four kinds, each as its share of Dice.

Dice = 2 TP / (2 TP + FP + FN), so 1 - Dice = (FP + FN) / (2 TP + FP + FN): each wrong voxel takes an equal share of
the Dice lost, and the shares of the four kinds below add up to 1 - Dice exactly. A kind is told by the PVS the voxel
belongs to (26-connected components, as :mod:`scripts.evaluation.detection` forms them):

- ``dice_lost_wide``: false-positive voxels of a predicted PVS that overlaps a reference PVS (a PVS drawn too wide or
  too long, or a piece of one that spills past it);
- ``dice_lost_specks``: false-positive voxels of a predicted PVS that overlaps no reference PVS;
- ``dice_lost_narrow``: false-negative voxels of a reference PVS that some prediction overlaps (drawn too thin or too
  short);
- ``dice_lost_missed``: false-negative voxels of a reference PVS that no prediction overlaps (missed whole).

``wide`` and ``narrow`` are the edges of the PVS that were found: a model whose errors are mostly there draws the
right PVS at the wrong width (a threshold or partial-volume question); ``specks`` and ``missed`` are detection errors.
Both masks empty: every share is 0 (Dice 1). No component is dropped by size: these split the voxel Dice, which
counts every voxel.
"""

from __future__ import annotations

import numpy as np

from scripts.masks import label_components

VOXEL_ERROR_METRICS: tuple[str, ...] = ("dice_lost_wide", "dice_lost_specks", "dice_lost_narrow", "dice_lost_missed")


def _in_touched(mask: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` whose component overlaps ``other`` (both boolean, 3D)."""
    labels, _count = label_components(mask)
    touched = np.unique(labels[mask & other])
    return np.isin(labels, touched[touched > 0])


def voxel_errors(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Split the Dice a case loses into the four kinds of :data:`VOXEL_ERROR_METRICS` (module docstring).

    Args:
        pred: boolean 3D prediction mask.
        ref: boolean 3D reference mask of the same shape.

    Returns:
        A dict kind -> its share of Dice (0 to 1); the four add up to 1 - Dice.

    Raises:
        ValueError: if the masks are not 3D booleans of one shape.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.dtype != bool or ref.dtype != bool or pred.shape != ref.shape or pred.ndim != 3:
        raise ValueError(
            f"pred and ref must be 3D boolean masks of one shape, not {pred.dtype} {pred.shape} and "
            f"{ref.dtype} {ref.shape}."
        )
    false_pos, false_neg = pred & ~ref, ref & ~pred
    denominator = 2 * int(np.count_nonzero(pred & ref)) + int(np.count_nonzero(false_pos | false_neg))
    if denominator == 0:
        return dict.fromkeys(VOXEL_ERROR_METRICS, 0.0)
    pred_touching, ref_touched = _in_touched(pred, ref), _in_touched(ref, pred)
    counts = (
        np.count_nonzero(false_pos & pred_touching),
        np.count_nonzero(false_pos & ~pred_touching),
        np.count_nonzero(false_neg & ref_touched),
        np.count_nonzero(false_neg & ~ref_touched),
    )
    return {name: int(count) / denominator for name, count in zip(VOXEL_ERROR_METRICS, counts, strict=True)}
