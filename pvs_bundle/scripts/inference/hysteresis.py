"""Hysteresis thresholding of PVS probabilities: seed at the threshold, grow down to a lower one.

A thin PVS the network sees with uneven confidence comes out of one threshold in pieces (each piece a "PVS" in the
counts) or loses its faint end. With hysteresis, a voxel is PVS when its probability is at least ``low`` and it is
26-connected, through voxels at least ``low``, to a voxel at least ``high`` (the stored threshold). Pieces joined by
a faint bridge become one PVS; a faint blob with no confident voxel stays out, so specks do not grow. ``low`` at or
above ``high`` (or ``None``) is the plain threshold.

Applied where the plain threshold is (the input's own grid, after ``Invertd``), before the small-component removal.
Components are those VALDO counts (full 3D connectivity, :data:`scripts.masks.CONNECTIVITY`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type, convert_to_numpy
from scipy import ndimage

from scripts.masks import CONNECTIVITY


def hysteresis_mask(probability: np.ndarray, high: float, low: float | None) -> np.ndarray:
    """Binary mask of a 3D probability map by hysteresis (see the module docstring).

    Args:
        probability: 3D probabilities.
        high: the seed threshold (a voxel at or above it is PVS).
        low: the growth threshold, in (0, high); ``None`` or ``>= high``: the plain threshold ``high``.

    Returns:
        A boolean mask of the input's shape.

    Raises:
        ValueError: if ``low`` is not positive.
    """
    probability = np.asarray(probability)
    seeds = probability >= high
    if low is None or low >= high:
        return seeds
    if low <= 0:
        raise ValueError(f"grow_threshold must be above 0 (or null for none), not {low}.")
    grown, count = ndimage.label(probability >= low, structure=CONNECTIVITY)
    if count == 0:
        return seeds
    keep = np.zeros(count + 1, dtype=bool)
    keep[np.unique(grown[seeds])] = True
    keep[0] = False
    return keep[grown]


class HysteresisThresholdd(MapTransform):
    """Binarise ``[channel, x, y, z]`` probability maps by hysteresis, per channel (float 0/1, metadata kept).

    Args:
        keys: keys of the probability maps.
        threshold: the seed threshold (the model's stored threshold).
        grow_threshold: the growth threshold; ``None`` for the plain threshold.
        allow_missing_keys: don't raise for a missing key.
    """

    def __init__(
        self,
        keys: KeysCollection,
        threshold: float,
        grow_threshold: float | str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.threshold = float(threshold)
        off = grow_threshold is None or (isinstance(grow_threshold, str) and grow_threshold.lower() in ("null", "none"))
        self.grow_threshold = None if off else float(grow_threshold)  # the command line spells None "null"
        if self.grow_threshold is not None and self.grow_threshold <= 0:
            raise ValueError(f"grow_threshold must be above 0 (or null for none), not {grow_threshold!r}.")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with the maps under ``keys`` binarised."""
        d = dict(data)
        for key in self.key_iterator(d):
            probability = convert_to_numpy(d[key])
            mask = np.stack([hysteresis_mask(c, self.threshold, self.grow_threshold) for c in probability])
            d[key] = convert_to_dst_type(mask.astype(np.float32), d[key])[0]
        return d
