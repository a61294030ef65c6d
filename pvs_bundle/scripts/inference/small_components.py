"""Removal of small predicted PVS: 26-connected components of the binary mask with fewer voxels than a minimum.

Applied after the threshold, in the grid where the mask is binarised (the input's own grid, after ``Invertd``), so
the mask written, the burden and census tables and every evaluation metric see the same cleaned mask. Components
are those VALDO counts (:func:`scripts.masks.label_components`, full 3D connectivity).
"""

from __future__ import annotations

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


class RemoveSmallComponentsd(MapTransform):
    """Remove the 26-connected components smaller than ``min_pvs_voxels`` voxels from binary masks, per channel.

    Args:
        keys: keys of the ``[channel, x, y, z]`` masks (voxels >= 0.5 are foreground); dtype and metadata are kept.
        min_pvs_voxels: components with fewer voxels are removed; 0 or 1 keeps every component.
        allow_missing_keys: don't raise for a missing key.

    Raises:
        ValueError: if ``min_pvs_voxels`` is not an integer >= 0.
    """

    def __init__(self, keys: KeysCollection, min_pvs_voxels: int = 0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.min_pvs_voxels = check_min_voxels(min_pvs_voxels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with small components removed from the masks under ``keys``."""
        d = dict(data)
        if self.min_pvs_voxels <= 1:
            return d
        for key in self.key_iterator(d):
            mask = convert_to_numpy(d[key])
            kept = np.stack([label_components(channel, self.min_pvs_voxels)[0] > 0 for channel in mask])
            d[key] = convert_to_dst_type(kept.astype(mask.dtype), d[key])[0]
        return d
