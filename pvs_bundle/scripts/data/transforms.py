"""The deterministic preprocessing shared by training, evaluation and inference (one definition), and Aliasd.

The preprocessing keeps one volume of 4D inputs when given ``volume_index`` (:class:`SelectVolumed`).
"""

from __future__ import annotations

import operator
from collections.abc import Hashable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
from monai.transforms import (
    AsDiscreted,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Orientationd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
)
from monai.utils import ensure_tuple

from scripts.masks import LABEL_THRESHOLD
from scripts.settings import as_volume_index

INTENSITY_MODES: tuple[str, ...] = ("percentile", "range", "zscore")


def intensity_transform(image_key: str, intensity: dict[str, Any]) -> MapTransform:
    """Build the intensity normalisation of the image.

    Args:
        image_key: the image key.
        intensity: ``{"mode": "percentile", "lower": 0.5, "upper": 99.5}`` (robust to MRI's arbitrary units;
            the default) or ``{"mode": "range", "a_min": -1000, "a_max": 3000}`` (the seed script's fixed window).
            Both map to [0, 1] and clip. ``{"mode": "zscore", "lower": 0.5, "upper": 99.5}`` starts as
            "percentile" without clipping (the head crop's threshold is in those units); :func:`preprocessing` then
            adds :class:`HeadZScored`.

    Returns:
        The transform.

    Raises:
        ValueError: on an unknown mode.
    """
    mode = intensity.get("mode", "percentile")
    if mode in ("percentile", "zscore"):
        # z-score: no clipping, so the head's z-scores do not depend on how much air the field of view holds
        return ScaleIntensityRangePercentilesd(
            image_key, lower=intensity["lower"], upper=intensity["upper"], b_min=0.0, b_max=1.0, clip=mode != "zscore"
        )
    if mode == "range":
        return ScaleIntensityRanged(
            image_key, a_min=intensity["a_min"], a_max=intensity["a_max"], b_min=0.0, b_max=1.0, clip=True
        )
    raise ValueError(f"intensity mode must be one of {INTENSITY_MODES}, not {mode!r}.")


class HeadZScored(MapTransform):
    """Z-score an image with the mean and standard deviation of its head voxels (nnU-Net's MRI normalisation).

    Applied after the head crop, to an image in [0, 1]: the head is where it exceeds ``threshold`` (the crop's
    foreground rule), so the statistics ignore the air around the head and do not depend on how much of it the
    field of view holds. Every voxel, head or not, is mapped with the head's statistics.

    Args:
        keys: keys of the images.
        threshold: value above which a voxel counts as head.
    """

    def __init__(self, keys: Sequence[Hashable] | Hashable, threshold: float) -> None:
        super().__init__(keys)
        self.threshold = threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Z-score every image with its head's statistics (the whole image's when it has no head voxel)."""
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            head = image[image > self.threshold]
            values = head if head.numel() > 1 else image.reshape(-1)
            mean, std = values.mean(), values.std()
            d[key] = (image - mean) / max(float(std), 1e-6)
        return d


class SelectVolumed(MapTransform):
    """Keep one volume of multi-volume (4D) images, which ``EnsureChannelFirstd`` put on the channel axis.

    Single-volume images pass unchanged.

    Args:
        keys: keys of the images.
        index: the volume to keep.
    """

    def __init__(self, keys: Sequence[Hashable] | Hashable, index: int) -> None:
        super().__init__(keys)
        self.index = index

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Slice the chosen volume out of every multi-volume image."""
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key].shape[0] > 1:
                d[key] = d[key][self.index : self.index + 1]
        return d


def preprocessing(
    pixdim: Sequence[float],
    intensity: dict[str, Any],
    keys: Sequence[str] = ("image", "label"),
    foreground_threshold: float = 0.05,
    foreground_margin: int = 8,
    volume_index: int | str | None = None,
) -> list[MapTransform]:
    """Return the deterministic preprocessing: load, channel first, binarise label, RAS, resample, normalise, crop.

    Every step is invertible, so predictions can be mapped back to each input's native grid with ``Invertd``.

    Args:
        pixdim: target voxel size in mm (the data's native 0.8 mm by default in the configs).
        intensity: intensity normalisation settings, see :func:`intensity_transform`.
        keys: ``("image", "label")`` for training and evaluation, ``("image",)`` for inference.
        foreground_threshold: normalised intensity above which a voxel counts as head for the crop.
        foreground_margin: voxels kept around the head.
        volume_index: the volume to keep of multi-volume (4D) inputs (:class:`SelectVolumed`); None: no selection.

    Returns:
        The list of transforms (to be composed with augmentation or used alone).
    """
    keys = list(keys)
    image_key, label_keys = keys[0], keys[1:]
    modes = ["bilinear"] + ["nearest"] * len(label_keys)
    transforms: list[MapTransform] = [
        LoadImaged(keys, image_only=True),
        EnsureChannelFirstd(keys),
    ]
    index = as_volume_index(volume_index)
    if index is not None:
        transforms.append(SelectVolumed(keys, index))
    if label_keys:
        transforms.append(AsDiscreted(label_keys, threshold=LABEL_THRESHOLD))
    transforms += [
        Orientationd(keys, axcodes="RAS"),
        # float32 resampling: MONAI's default float64 doubles the volume and its sampling grid in memory
        Spacingd(keys, pixdim=list(pixdim), mode=modes, dtype=np.float32),
        intensity_transform(image_key, intensity),
        CropForegroundd(
            keys,
            source_key=image_key,
            select_fn=partial(operator.lt, foreground_threshold),  # x > threshold, picklable
            margin=foreground_margin,
            allow_smaller=True,
        ),
    ]
    if intensity.get("mode") == "zscore":
        transforms.append(HeadZScored(image_key, threshold=foreground_threshold))
    transforms.append(EnsureTyped(keys, track_meta=True))
    return transforms


class Aliasd(MapTransform):
    """Give the values under ``keys`` a second name (``names``), without copying them.

    ``CopyItemsd`` deep-copies, which costs a whole volume per copy. When the transforms that follow replace the
    value under ``keys`` by a new tensor (MONAI's ``Activationsd`` and ``AsDiscreted`` do; a test checks it), the
    alias keeps the value as it was at no memory cost: the logits for the validation loss, the probabilities next
    to the thresholded mask.

    Args:
        keys: the keys to alias.
        names: the new name of each key, in the same order.

    Raises:
        ValueError: when ``names`` and ``keys`` differ in length.
    """

    def __init__(self, keys: Sequence[str] | str, names: Sequence[str] | str) -> None:
        super().__init__(keys)
        self.names = ensure_tuple(names)
        if len(self.names) != len(self.keys):
            raise ValueError(f"Aliasd needs one name per key, not keys {self.keys} and names {self.names}.")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a shallow copy of ``data`` with each key's value also under its new name."""
        d = dict(data)
        for key, name in zip(self.keys, self.names, strict=True):
            d[name] = d[key]
        return d
