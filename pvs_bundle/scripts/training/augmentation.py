"""Training's random transforms: PVS-centred patch sampling, then augmentation that one switch turns off.

``configs/train.json`` builds ``train#random_transforms`` with :func:`random_transforms` from its settings
(``patch_size``, ``num_samples``, ``augment`` and the ``augmentation`` dict). The list, in order:

1. the label cast to uint8, the volume padded to at least one patch, the PVS/background voxel indices listed (all
   deterministic, so a dataset caches their result);
2. ``num_samples`` patches cropped around PVS and background voxels in the ratio ``pos`` : ``neg`` (PVS centres
   drawn by voxel or, with ``pvs_sampling`` ``"component"``, each PVS equally often:
   :mod:`scripts.training.crop_centres`), the label cast back to float32;
3. the augmentations: affine, elastic (``OneOf`` elastic or identity), a flip per axis, bias field, contrast and
   noise, each with its probability under ``augmentation``.

``augment false`` sets every augmentation's probability to 0 and keeps the transforms in place, so the random
streams of the patch sampling stay as they are with augmentation on (``configs/synthetic.json`` also slices this
list: ``[:3]`` is the cached part and ``[3:]`` the random part).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any, TypedDict

import torch
from monai.transforms import (
    CastToTyped,
    Identityd,
    OneOf,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    SpatialPadd,
    Transform,
)

from scripts.settings import as_bool
from scripts.training.crop_centres import PVSCropCentresd
from scripts.training.losses import JoinSkeletond

KEYS: list[str] = ["image", "label"]  # the spatial transforms move the image and its label together
MODES: list[str] = ["bilinear", "nearest"]  # image interpolated, label kept binary
SKELETON_KEY = "skeleton"  # the label's skeleton, when the loss reads it (scripts.training.losses.LabelSkeletond)


def _keys(skeleton: bool) -> tuple[list[str], list[str]]:
    """The keys the spatial transforms move, and their interpolation modes (the skeleton, like the label, nearest)."""
    return ([*KEYS, SKELETON_KEY], [*MODES, "nearest"]) if skeleton else (KEYS, MODES)


class AffineSettings(TypedDict):
    """Random rotation (radians) and scaling (fraction) per axis."""

    prob: float
    rotate_range: Sequence[float]
    scale_range: Sequence[float]


class ElasticSettings(TypedDict):
    """Random elastic deformation: smoothing sigma and magnitude ranges in voxels."""

    prob: float
    sigma_range: Sequence[float]
    magnitude_range: Sequence[float]


class BiasFieldSettings(TypedDict):
    """Random smooth multiplicative bias field (coefficient range)."""

    prob: float
    coeff_range: Sequence[float]


class ContrastSettings(TypedDict):
    """Random gamma contrast change (gamma range)."""

    prob: float
    gamma: Sequence[float]


class NoiseSettings(TypedDict):
    """Random Gaussian noise (standard deviation on the normalised image)."""

    prob: float
    std: float


class AugmentationSettings(TypedDict):
    """train.json's ``augmentation``: patch sampling (``pos``, ``neg``, ``max_crop_centres``) and augmentation."""

    pos: float
    neg: float
    max_crop_centres: int
    affine: AffineSettings
    elastic: ElasticSettings
    flip_prob: float
    bias_field: BiasFieldSettings
    contrast: ContrastSettings
    noise: NoiseSettings


def check_probability(value: Any, name: str) -> float:
    """Return ``value`` as a float in [0, 1].

    Raises:
        ValueError: if ``value`` is not a number in [0, 1].
    """
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], not {value!r}.")
    return float(value)


def _setting(settings: Mapping[str, Any], name: str) -> Any:
    """``settings[name]``, or an error naming the missing key of ``augmentation``."""
    if name not in settings:
        raise KeyError(f"augmentation#{name} is missing: train.json's augmentation must set it.")
    return settings[name]


def patch_sampling(
    patch_size: Sequence[int],
    num_samples: int,
    pos: float,
    neg: float,
    max_crop_centres: int,
    skeleton: bool = False,
    pvs_sampling: str = "voxel",
) -> list[Transform]:
    """The patch sampling: label as uint8, pad to one patch, list voxel indices, crop PVS/background patches.

    Args:
        patch_size: the training patch (voxels per axis).
        num_samples: patches cropped from each volume.
        pos: weight of patches centred on a PVS voxel.
        neg: weight of patches centred on a background voxel inside the head.
        max_crop_centres: at most this many candidate centres listed per class (bounds the cache's size).
        skeleton: crop the label's skeleton (``skeleton``) with it too (missing keys allowed).
        pvs_sampling: PVS centres by ``"voxel"`` or by ``"component"`` (:class:`PVSCropCentresd`).

    Returns:
        Five transforms; the first three are deterministic (a dataset caches their output).
    """
    keys, _ = _keys(skeleton)
    return [
        CastToTyped(keys="label", dtype=torch.uint8),
        SpatialPadd(keys=keys, spatial_size=patch_size, allow_missing_keys=skeleton),
        PVSCropCentresd(
            keys="label",
            pvs_sampling=pvs_sampling,
            image_key="image",
            image_threshold=0,
            max_samples_per_class=max_crop_centres,
        ),
        RandCropByLabelClassesd(
            keys=keys,
            allow_missing_keys=skeleton,
            label_key="label",
            spatial_size=patch_size,
            ratios=[neg, pos],
            num_classes=2,
            num_samples=num_samples,
            indices_key="label_cls_indices",
        ),
        CastToTyped(keys="label", dtype=torch.float32),
    ]


def augmentations(augment: bool | str, settings: Mapping[str, Any], skeleton: bool = False) -> list[Transform]:
    """The augmentations, in order: affine, elastic or identity, flips on axes 0, 1, 2, bias field, contrast, noise.

    Args:
        augment: the switch; false (or ``"false"`` from the command line) sets every probability to 0 and keeps
            the transforms, so the random streams of what comes before them do not change.
        settings: train.json's ``augmentation`` (:class:`AugmentationSettings`; the patch sampling keys unused).
        skeleton: move the label's skeleton (``skeleton``) with the image and label (missing keys allowed).

    Returns:
        Eight transforms.

    Raises:
        ValueError: if ``augment`` is not a flag or a probability is not a number in [0, 1].
        KeyError: if ``settings`` lacks one of the augmentations.
    """
    on = as_bool(augment, "augment")
    affine, elastic = _setting(settings, "affine"), _setting(settings, "elastic")
    bias_field, contrast, noise = (_setting(settings, name) for name in ("bias_field", "contrast", "noise"))

    def prob(value: Any, name: str) -> float:
        return check_probability(value, f"augmentation#{name}") if on else 0.0

    elastic_prob = prob(elastic["prob"], "elastic#prob")
    flip_prob = prob(_setting(settings, "flip_prob"), "flip_prob")
    keys, modes = _keys(skeleton)
    missing = {"allow_missing_keys": True} if skeleton else {}
    return [
        RandAffined(
            keys=keys,
            prob=prob(affine["prob"], "affine#prob"),
            rotate_range=affine["rotate_range"],
            scale_range=affine["scale_range"],
            mode=modes,
            padding_mode="reflection",
            **missing,
        ),
        OneOf(
            transforms=[
                Rand3DElasticd(
                    keys=keys,
                    prob=1.0,
                    sigma_range=elastic["sigma_range"],
                    magnitude_range=elastic["magnitude_range"],
                    mode=modes,
                    padding_mode="reflection",
                    **missing,
                ),
                Identityd(keys=keys, **missing),
            ],
            weights=[elastic_prob, 1.0 - elastic_prob],
        ),
        *(RandFlipd(keys=keys, prob=flip_prob, spatial_axis=axis, **missing) for axis in range(3)),
        RandBiasFieldd(
            keys="image", prob=prob(bias_field["prob"], "bias_field#prob"), coeff_range=bias_field["coeff_range"]
        ),
        RandAdjustContrastd(keys="image", prob=prob(contrast["prob"], "contrast#prob"), gamma=contrast["gamma"]),
        RandGaussianNoised(keys="image", prob=prob(noise["prob"], "noise#prob"), std=noise["std"]),
    ]


def random_transforms(
    patch_size: Sequence[int],
    num_samples: int,
    augment: bool | str,
    settings: Mapping[str, Any],
    skeleton: bool | str = False,
) -> list[Transform]:
    """Training's random transforms (train.json's ``train#random_transforms``): patch sampling, then augmentation.

    Args:
        patch_size: the training patch (voxels per axis).
        num_samples: patches cropped from each volume.
        augment: the one switch of every augmentation (the patch sampling always runs).
        settings: train.json's ``augmentation`` (:class:`AugmentationSettings`).
        skeleton: the cached label skeleton (``skeleton``, :class:`scripts.training.losses.LabelSkeletond`) is
            cropped and moved with the label, then joined to it as a second channel
            (:class:`scripts.training.losses.JoinSkeletond`).

    Returns:
        Thirteen transforms: :func:`patch_sampling`'s five, then :func:`augmentations`' eight (with ``skeleton``, a
        fourteenth joins the skeleton to the label).

    Raises:
        ValueError: if ``augment`` is not a flag or a probability is not a number in [0, 1].
        KeyError: if ``settings`` lacks a key.
    """
    sampling = [_setting(settings, name) for name in ("pos", "neg", "max_crop_centres")]
    with_skeleton = as_bool(skeleton, "skeleton")
    transforms = [
        *patch_sampling(
            patch_size,
            num_samples,
            *sampling,
            skeleton=with_skeleton,
            pvs_sampling=_setting(settings, "pvs_sampling"),
        ),
        *augmentations(augment, settings, skeleton=with_skeleton),
    ]
    return [*transforms, JoinSkeletond()] if with_skeleton else transforms
