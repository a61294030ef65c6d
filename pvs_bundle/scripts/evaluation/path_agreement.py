"""Agreement of two PVS masks of one volume (voxel Dice, PVS counts): a faster inference path against fp32 eager."""

from __future__ import annotations

import numpy as np
import torch

from scripts.evaluation.metrics import overlap_metrics
from scripts.masks import label_components, prediction_mask


def mask_agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Voxel Dice of ``other`` against ``reference`` and their PVS counts (26-connected components).

    Args:
        reference: binary 3D mask of the reference path (fp32 eager).
        other: binary 3D mask of the path checked, same shape.

    Returns:
        ``dice``, ``count_reference``, ``count_other`` and ``count_change`` (relative, 0.01 = 1 %).

    Raises:
        ValueError: when the shapes differ or the masks are not 3D.
    """
    reference, other = prediction_mask(reference), prediction_mask(other)
    if reference.shape != other.shape:
        raise ValueError(f"masks must have the same shape, not {reference.shape} and {other.shape}.")
    dice = overlap_metrics(torch.from_numpy(other), torch.from_numpy(reference), names=("dice",))["dice"]
    count_reference, count_other = label_components(reference)[1], label_components(other)[1]
    change = abs(count_other - count_reference) / max(count_reference, 1)
    return {"dice": dice, "count_reference": count_reference, "count_other": count_other, "count_change": change}
