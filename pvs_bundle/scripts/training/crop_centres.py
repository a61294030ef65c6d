"""Where training patches are centred: PVS voxels drawn by voxel, or by component so that small PVS are seen often.

:class:`PVSCropCentresd` lists the candidate centres that ``RandCropByLabelClassesd`` draws from (deterministic, so
the training cache keeps them). With ``pvs_sampling`` ``"voxel"`` (the rule until 0.10.0) the PVS list is every PVS
voxel, as ``ClassesToIndicesd`` gives it: a PVS is drawn in proportion to its volume, so a 2-voxel PVS beside a
300-voxel one is centred once in 150 draws. With ``"component"`` (train.json's default since 0.11.0) each
26-connected PVS (the components VALDO counts, :func:`scripts.masks.label_components`) gets the same number of
entries, spread evenly over its voxels: every PVS, small or large, is centred equally often (issue 23, item 2;
chosen by ``benchmarks/ablation.py``, ``docs/performance.md``). The background list is the same in both.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import ClassesToIndicesd

from scripts.masks import label_components

PVS_SAMPLING: tuple[str, ...] = ("voxel", "component")


def check_pvs_sampling(value: Any) -> str:
    """Return ``value`` if it is one of :data:`PVS_SAMPLING`.

    Raises:
        ValueError: naming ``augmentation#pvs_sampling`` and the choices.
    """
    if value not in PVS_SAMPLING:
        raise ValueError(f"augmentation#pvs_sampling must be one of {list(PVS_SAMPLING)}, not {value!r}.")
    return str(value)


def component_balanced_indices(mask: np.ndarray, max_indices: int | None = None) -> np.ndarray:
    """Flat indices of a mask's foreground in which every 26-connected component has the same number of entries.

    Each component gets ``per = ceil(foreground voxels / components)`` entries (at most ``max_indices //
    components``, at least 1), spread evenly over its voxels in scan order; a component smaller than ``per`` repeats
    its voxels. Drawing uniformly from the result draws each component with the same probability.

    Args:
        mask: 3D boolean (or 0/1) array.
        max_indices: bound on the list's length (the cache's size), None for none; every component keeps one entry.

    Returns:
        int64 flat (C-order) indices into ``mask``, grouped by component; empty without foreground.
    """
    labels, count = label_components(np.asarray(mask, dtype=bool))
    if count == 0:
        return np.empty(0, dtype=np.int64)
    flat = labels.ravel()
    foreground = np.flatnonzero(flat)
    component = flat[foreground]
    order = np.argsort(component, kind="stable")  # voxels grouped by component, scan order within each
    grouped = foreground[order]
    sizes = np.bincount(component, minlength=count + 1)[1:]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    per = math.ceil(foreground.size / count)
    if max_indices:
        per = min(per, max(1, max_indices // count))
    offsets = np.rint(np.linspace(0.0, 1.0, per)[None, :] * (sizes - 1)[:, None]).astype(np.int64)
    return grouped[(starts[:, None] + offsets).ravel()].astype(np.int64)


class PVSCropCentresd(ClassesToIndicesd):
    """``ClassesToIndicesd`` for a binary PVS label, whose PVS centres are drawn by voxel or by component.

    Args:
        keys: the label key(s) (``[1, x, y, z]``, PVS > 0).
        pvs_sampling: ``"voxel"`` (every PVS voxel once) or ``"component"`` (:func:`component_balanced_indices`).
        image_key: centres only where this image is above ``image_threshold`` (in any channel).
        image_threshold: see ``image_key``.
        max_samples_per_class: bound on each list's length.

    Raises:
        ValueError: for an unknown ``pvs_sampling``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        pvs_sampling: str = "voxel",
        image_key: str | None = "image",
        image_threshold: float = 0.0,
        max_samples_per_class: int | None = None,
    ) -> None:
        super().__init__(
            keys,
            num_classes=2,
            image_key=image_key,
            image_threshold=image_threshold,
            max_samples_per_class=max_samples_per_class,
        )
        self.pvs_sampling = check_pvs_sampling(pvs_sampling)
        self.image_threshold = image_threshold
        self.max_samples_per_class = max_samples_per_class

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Add ``<key>_cls_indices``: the background centres, then the PVS centres by voxel or by component."""
        d = super().__call__(data)
        if self.pvs_sampling == "voxel":
            return d
        for key in self.key_iterator(d):
            label = np.asarray(d[key])
            mask = label[0] > 0
            if self.image_key:
                mask &= (np.asarray(d[self.image_key]) > self.image_threshold).any(0)
            balanced = component_balanced_indices(mask, self.max_samples_per_class)
            background = d[str(key) + self.indices_postfix][0]
            as_type = torch.as_tensor if isinstance(background, torch.Tensor) else np.asarray
            d[str(key) + self.indices_postfix] = [background, as_type(balanced)]
        return d
