"""PVS burden of one predicted mask: count, total and largest volume, and fraction of the brain (intracranial) volume.

All figures are computed in the input's own grid (the grid the mask is written in), with its voxel volume:

- ``pvs_count``: connected components of the mask with full 3D connectivity (26 neighbours), as VALDO counts
  PVS (:func:`scripts.masks.label_components`); no minimum size.
- ``pvs_volume_mm3``: mask voxels x voxel volume.
- ``largest_pvs_mm3``: volume of the largest component (0 when there is none).
- ``brain_volume_mm3``: volume of the intracranial (brain) mask: every non-zero label of the case's parcellation
  when there is one (:mod:`scripts.regions`), else the estimate of
  :func:`scripts.regions.estimate_brain_mask` from the preprocessing's head mask.
- ``pvs_volume_fraction``: ``pvs_volume_mm3 / brain_volume_mm3``, a fraction (not a percentage; NaN when the brain
  mask is empty).
"""

from __future__ import annotations

import math

import numpy as np

from scripts.masks import label_components, prediction_mask

BURDEN_COLUMNS: tuple[str, ...] = (
    "pvs_count",
    "pvs_volume_mm3",
    "largest_pvs_mm3",
    "brain_volume_mm3",
    "pvs_volume_fraction",
)


def pvs_burden(mask: np.ndarray, brain: np.ndarray, voxel_mm3: float) -> dict[str, float]:
    """Compute the PVS burden of one case (see the module docstring).

    Args:
        mask: 3D PVS mask or probabilities (voxels >= 0.5 are PVS, :mod:`scripts.masks`).
        brain: 3D binary brain (intracranial) mask with the same shape (voxels >= 0.5 are brain).
        voxel_mm3: the volume of one voxel in mm³.

    Returns:
        A dict with the keys of :data:`BURDEN_COLUMNS`.

    Raises:
        ValueError: if the masks are not 3D or differ in shape.
    """
    mask, brain = prediction_mask(mask), prediction_mask(brain)
    if mask.shape != brain.shape:
        raise ValueError(f"mask and brain must have the same shape, not {mask.shape} and {brain.shape}.")
    labels, count = label_components(mask)
    ids = labels.ravel()[np.flatnonzero(labels)]  # the foreground only: no full-volume count per label
    return burden_of_sizes(np.bincount(ids, minlength=count + 1)[1:], int(np.count_nonzero(brain)), voxel_mm3)


def burden_of_sizes(sizes: np.ndarray, brain_voxels: int, voxel_mm3: float) -> dict[str, float]:
    """The burden of PVS of the given sizes (voxels, one per PVS) in a brain of ``brain_voxels`` voxels.

    Args:
        sizes: the voxels of each PVS (26-connected component).
        brain_voxels: the brain mask's voxels.
        voxel_mm3: the volume of one voxel in mm³.

    Returns:
        A dict with the keys of :data:`BURDEN_COLUMNS`.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    pvs_mm3 = int(sizes.sum()) * voxel_mm3
    brain_mm3 = int(brain_voxels) * voxel_mm3
    return {
        "pvs_count": int(sizes.size),
        "pvs_volume_mm3": pvs_mm3,
        "largest_pvs_mm3": int(sizes.max(initial=0)) * voxel_mm3,
        "brain_volume_mm3": brain_mm3,
        "pvs_volume_fraction": pvs_mm3 / brain_mm3 if brain_mm3 > 0 else math.nan,
    }
