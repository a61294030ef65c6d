"""Removal of small predicted PVS: 26-connected components of the binary mask below a size in voxels or in mm³.

``min_pvs_voxels`` is a count of voxels; ``min_pvs_mm3`` a volume, the same at every resolution (the voxel size is
read from the mask's affine), chosen on validation and stored with the model (:mod:`scripts.training.size_rule`). A
component is removed when it is below either.

Applied after the threshold, in the grid where the mask is binarised (the input's own grid, after ``Invertd``), so
the mask written, the burden and census tables and every evaluation metric see the same cleaned mask. Components
are those VALDO counts (:func:`scripts.masks.label_components`, full 3D connectivity).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type, convert_to_numpy

from scripts.masks import label_components


def check_min_voxels(min_pvs_voxels: Any) -> int:
    """Return ``min_pvs_voxels`` as an int.

    Raises:
        ValueError: if it is not an integer >= 0.
    """
    if isinstance(min_pvs_voxels, bool) or not isinstance(min_pvs_voxels, int | np.integer) or min_pvs_voxels < 0:
        raise ValueError(f"min_pvs_voxels must be an integer >= 0 (0: keep every component), not {min_pvs_voxels!r}.")
    return int(min_pvs_voxels)


def check_min_mm3(min_pvs_mm3: Any) -> float:
    """Return ``min_pvs_mm3`` as a float.

    Raises:
        ValueError: if it is not a number >= 0.
    """
    if isinstance(min_pvs_mm3, bool) or not isinstance(min_pvs_mm3, int | float | np.number) or not min_pvs_mm3 >= 0:
        raise ValueError(f"min_pvs_mm3 must be a number >= 0 (0: keep every component), not {min_pvs_mm3!r}.")
    return float(min_pvs_mm3)


def voxel_mm3(image: Any) -> float:
    """The voxel volume in mm³ of a MetaTensor (from its affine), 1 for an array without one."""
    affine = getattr(image, "affine", None)
    if affine is None:
        return 1.0
    matrix = np.asarray(convert_to_numpy(affine), dtype=np.float64).reshape(-1, 4, 4)[0]
    return float(abs(np.linalg.det(matrix[:3, :3])))


class RemoveSmallComponentsd(MapTransform):
    """Remove the 26-connected components below ``min_pvs_voxels`` voxels or ``min_pvs_mm3`` from binary masks.

    Args:
        keys: keys of the ``[channel, x, y, z]`` masks (voxels >= 0.5 are foreground); dtype and metadata are kept.
        min_pvs_voxels: components with fewer voxels are removed; 0 or 1 keeps every component.
        allow_missing_keys: don't raise for a missing key.
        min_pvs_mm3: components of smaller volume are removed (the voxel size from the mask's affine); 0 keeps all.

    Raises:
        ValueError: if ``min_pvs_voxels`` is not an integer >= 0 or ``min_pvs_mm3`` not a number >= 0.
    """

    def __init__(
        self,
        keys: KeysCollection,
        min_pvs_voxels: int = 0,
        allow_missing_keys: bool = False,
        min_pvs_mm3: float = 0.0,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.min_pvs_voxels = check_min_voxels(min_pvs_voxels)
        self.min_pvs_mm3 = check_min_mm3(min_pvs_mm3)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with small components removed from the masks under ``keys``."""
        d = dict(data)
        if self.min_pvs_voxels <= 1 and self.min_pvs_mm3 <= 0:
            return d
        for key in self.key_iterator(d):
            mask = convert_to_numpy(d[key])
            by_volume = math.ceil(self.min_pvs_mm3 / voxel_mm3(d[key]) - 1e-9) if self.min_pvs_mm3 > 0 else 0
            min_size = max(self.min_pvs_voxels, by_volume)
            if min_size <= 1:
                continue
            kept = np.stack([label_components(channel, min_size)[0] > 0 for channel in mask])
            d[key] = convert_to_dst_type(kept.astype(mask.dtype), d[key])[0]
        return d
