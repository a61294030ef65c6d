"""Masks: the bundle's binarisation rules (those of the VALDO 2021 evaluation code, Task 1, PVS) and PVS components.

- A **prediction** voxel is foreground when its value (a sigmoid probability, or 0/1) is **>= 0.5**. This is
  also what MONAI's ``AsDiscreted(threshold=0.5)`` in the configs does (``img >= threshold``), so the masks the
  bundle writes, scores and measures are one and the same. Evaluation and inference binarise the probabilities once,
  at their ``threshold`` setting (0.5 unless the model stores another:
  :func:`scripts.model.model_file.resolve_threshold`), and this rule then reads that 0/1 mask.
- A **reference** voxel is foreground when its value is **non-zero after rounding to one decimal**: 0/1 and
  0/255 masks as expected, and a voxel marked by one of two raters (0.5) counts; values below 0.05 (resampling
  or compression noise) do not.

For 0/1 masks the two rules agree. Training targets are binarised by ``AsDiscreted(threshold=0.5)`` in the
preprocessing (``>= 0.5``); only the scoring reads references with the reference rule. A training label voxel is
PVS when its value exceeds :data:`LABEL_THRESHOLD` (0.5), so 0/1 and 0/255 masks binarise alike.

A **PVS** is a connected component of a mask with full 3D connectivity (26 neighbours, :data:`CONNECTIVITY`), as
VALDO counts them: :func:`label_components`.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from scipy import ndimage

PREDICTION_THRESHOLD = 0.5
REFERENCE_DECIMALS = 1
LABEL_THRESHOLD = 0.5  # a training label voxel is PVS when its value exceeds this
CONNECTIVITY: np.ndarray = ndimage.generate_binary_structure(3, 3)

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def prediction_mask(values: ArrayT) -> ArrayT:
    """Binarise a prediction: ``values >= 0.5``.

    Args:
        values: probabilities or a 0/1 mask, numpy array (or array-like) or torch tensor.

    Returns:
        A boolean array (or tensor) of the same shape.
    """
    if isinstance(values, torch.Tensor):
        return values >= PREDICTION_THRESHOLD
    return np.asarray(values) >= PREDICTION_THRESHOLD


def reference_mask(values: ArrayT) -> ArrayT:
    """Binarise a reference: non-zero after rounding to one decimal.

    Args:
        values: a reference mask (0/1, 0/255, or rater-agreement fractions), numpy array or torch tensor.

    Returns:
        A boolean array (or tensor) of the same shape.
    """
    if isinstance(values, torch.Tensor):
        return torch.round(values.double(), decimals=REFERENCE_DECIMALS) != 0
    return np.round(np.asarray(values, dtype=np.float64), REFERENCE_DECIMALS) != 0


def label_components(mask: np.ndarray, min_size: int = 0) -> tuple[np.ndarray, int]:
    """Label the 26-connected components of a mask, dropping those smaller than ``min_size``.

    Args:
        mask: 3D array; voxels >= 0.5 are foreground (pass a boolean mask to apply another rule).
        min_size: minimum component size in voxels; smaller components are removed (0 keeps all).

    Returns:
        The label volume (0 = background, components numbered 1..count consecutively in scan order) and the count.

    Raises:
        ValueError: if ``mask`` is not 3D or ``min_size`` is negative.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be a 3D array, not an array of shape {mask.shape}.")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, not {min_size}.")
    labels, count = ndimage.label(prediction_mask(mask), structure=CONNECTIVITY)
    if min_size <= 1 or count == 0:
        return labels, int(count)
    keep = np.bincount(labels.ravel(), minlength=count + 1) >= min_size
    keep[0] = False
    new_ids = np.zeros(count + 1, dtype=labels.dtype)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1, dtype=labels.dtype)
    return new_ids[labels], int(keep.sum())


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """Slices of a non-empty mask's bounding box, grown by ``margin`` voxels and kept inside the array.

    Raises:
        ValueError: if the mask is empty (it has no bounding box).
    """
    mask = np.asarray(mask)
    if not mask.any():
        raise ValueError("an empty mask has no bounding box.")
    box = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other_axes))
        box.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)
