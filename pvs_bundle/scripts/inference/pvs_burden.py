"""PVS burden of one predicted mask: count, total and largest volume, and fraction of the brain (intracranial) volume.

All figures are computed in the input's own grid (the grid the mask is written in), with its voxel volume:

- ``pvs_count``: connected components of the mask with full 3D connectivity (26 neighbours), as VALDO counts
  PVS (:func:`scripts.evaluation.detection.label_components`); no minimum size.
- ``pvs_volume_mm3``: mask voxels x voxel volume.
- ``largest_pvs_mm3``: volume of the largest component (0 when there is none).
- ``brain_volume_mm3``: volume of the intracranial (brain) mask: every non-zero label of the case's parcellation
  when there is one (:mod:`scripts.measurement.regions`), else the estimate of
  :func:`scripts.measurement.regions.estimate_brain_mask` from the preprocessing's head mask.
- ``pvs_volume_fraction``: ``pvs_volume_mm3 / brain_volume_mm3``, a fraction (not a percentage; NaN when the brain
  mask is empty).
"""

from __future__ import annotations

import math

import numpy as np

from scripts.evaluation.detection import label_components
from scripts.evaluation.masks import prediction_mask

BURDEN_COLUMNS: tuple[str, ...] = (
    "pvs_count",
    "pvs_volume_mm3",
    "largest_pvs_mm3",
    "brain_volume_mm3",
    "pvs_volume_fraction",
)


def voxel_volume_mm3(affine: np.ndarray) -> float:
    """Return the volume of one voxel in mm³ from a 4 x 4 voxel-to-world affine.

    Raises:
        ValueError: if the affine is not 4 x 4 or its voxels have no volume.
    """
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise ValueError(f"affine must be a 4 x 4 matrix, not of shape {matrix.shape}.")
    volume = abs(float(np.linalg.det(matrix[:3, :3])))
    if not (math.isfinite(volume) and volume > 0):
        raise ValueError(f"affine must give voxels a positive finite volume, not {volume} mm³.")
    return volume


def pvs_burden(mask: np.ndarray, brain: np.ndarray, voxel_mm3: float) -> dict[str, float]:
    """Compute the PVS burden of one case (see the module docstring).

    Args:
        mask: 3D PVS mask or probabilities (voxels >= 0.5 are PVS, :mod:`scripts.evaluation.masks`).
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
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    pvs_mm3 = int(sizes.sum()) * voxel_mm3
    brain_mm3 = int(np.count_nonzero(brain)) * voxel_mm3
    return {
        "pvs_count": count,
        "pvs_volume_mm3": pvs_mm3,
        "largest_pvs_mm3": int(sizes.max(initial=0)) * voxel_mm3,
        "brain_volume_mm3": brain_mm3,
        "pvs_volume_fraction": pvs_mm3 / brain_mm3 if brain_mm3 > 0 else math.nan,
    }
