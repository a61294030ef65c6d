"""Render synthetic label maps into MR-like images with SynthSeg-style domain randomisation.

Every rendering draws a new scanner and contrast (:func:`draw_scan`):

- a contrast family: ``T2w`` (CSF and PVS bright), ``T1w`` (CSF and PVS dark, white matter bright), ``FLAIR`` (CSF
  nulled, PVS dark, lesions bright) or ``random`` (every class's mean drawn at random, PVS following CSF either way);
  each class gets a random mean and spread around its family's, and the PVS a mean near CSF's, sometimes pulled
  toward white matter's (PVS that are narrow or poorly filled);
- an acquisition voxel size from 0.6 to 1.5 mm per axis, isotropic or (one in three) with one thick axis: the image is
  blurred by the voxel's point-spread function, sampled on that grid, given Rician noise there and interpolated back
  to the 0.8 mm grid linearly, as the bundle's preprocessing does with a real scan. The label follows the PVS
  fraction on the acquired grid, by one of two rules (``label_rule``): 1 (the default; the shipped model's) the
  acquired voxels at least half filled with PVS, brought back by nearest neighbour (the acquired grid's blocks); 2
  the PVS's own extent on the 0.8 mm grid (partial volume at least one half) within one 0.8 mm voxel of such an
  acquired voxel (a PVS too thin for the acquisition is not labelled; one it sees is labelled at its true width).
  Voxels finer than 0.8 mm are rendered at 0.8 mm (the label maps' grid), unblurred, where both rules agree.
  ``fine_fraction`` (default 0) renders that share of label maps at an isotropic voxel of 0.6–0.9 mm instead;
- the label map's CSF fraction (generator version 3) mixed into each voxel's tissue: a voxel of class ``k`` and CSF
  fraction ``c`` has mean ``(1 - c) * mean[k] + c * mean[csf]`` (a CSF voxel mixes with cortex), so CSF thinner than
  a voxel shows in cortex; without a fraction (``csf`` None) every voxel is its class;
- a smooth multiplicative bias field, a gamma curve, now and then a faint shifted replica (ghosting/motion), and one
  time in four a skull-stripped head (air, skull and scalp set to zero).

Intensities are scaled to [0, 1] by the 0.5 and 99.5 percentiles of the whole rendered field of view (estimated on
a coarse rendering of all of it), as the bundle's percentile normalisation does at inference, and only the patches
to train on are rendered in full (:class:`RandSynthPatchesd`), so rendering stays cheap beside a training step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable
from scipy import ndimage

from scripts.data.synth.anatomy import CLASSES, N_CLASSES, VOXEL_MM

FAMILIES: tuple[str, ...] = ("T2w", "T1w", "FLAIR", "random")
FAMILY_WEIGHTS: tuple[float, ...] = (0.35, 0.3, 0.2, 0.15)
VOXEL_RANGE_MM = (0.6, 1.5)
FINE_RANGE_MM = (0.6, 0.9)  # the fine acquisitions ``fine_fraction`` adds: isotropic, at or near the 0.8 mm grid
LABEL_RULES = (1, 2)  # see the module docstring; recorded with a model as ``synthetic_label_rule``
DEFAULT_LABEL_RULE = 1
_MARGIN = 6
_HEAD_OFF = (CLASSES["air"], CLASSES["skull"], CLASSES["scalp"])
# (low, high) of each class's mean per family, in the order of CLASSES: air, csf, cortex, wm, deep grey, skull,
# scalp, lesion
_MEANS: dict[str, tuple[tuple[float, float], ...]] = {
    "T2w": ((0.0, 0.02), (0.8, 1.0), (0.45, 0.65), (0.28, 0.45), (0.38, 0.58), (0.02, 0.15), (0.3, 0.9), (0.6, 0.9)),
    "T1w": ((0.0, 0.02), (0.08, 0.25), (0.4, 0.58), (0.65, 0.85), (0.5, 0.7), (0.02, 0.15), (0.6, 1.0), (0.25, 0.5)),
    "FLAIR": ((0.0, 0.02), (0.03, 0.18), (0.5, 0.7), (0.38, 0.55), (0.45, 0.65), (0.02, 0.15), (0.4, 0.9), (0.75, 1.0)),
}


@dataclasses.dataclass(frozen=True)
class Scan:
    """One drawn scanner and contrast.

    Attributes:
        family: the contrast family (:data:`FAMILIES`).
        means: mean intensity of each class (:data:`scripts.data.synth.anatomy.CLASSES`).
        stds: within-class spread of each class.
        pvs_mean: mean intensity of fluid inside a PVS.
        voxel_mm: the acquisition voxel size per axis.
        bias: coarse (4, 4, 4) log bias field.
        noise: Rician noise level (fraction of the brightest mean).
        gamma: exponent applied after scaling to [0, 1].
        ghost: (amplitude, shift in voxels, axis) of a shifted replica, amplitude 0 for none.
        stripped: whether air, skull and scalp are zero.
    """

    family: str
    means: np.ndarray
    stds: np.ndarray
    pvs_mean: float
    voxel_mm: tuple[float, float, float]
    bias: np.ndarray
    noise: float
    gamma: float
    ghost: tuple[float, int, int]
    stripped: bool


def _class_means(rng: np.random.Generator, family: str) -> np.ndarray:
    if family in _MEANS:
        return np.array([rng.uniform(lo, hi) for lo, hi in _MEANS[family]], dtype=np.float32)
    while True:  # random family: anything goes, as long as CSF (and so PVS) stands apart from white matter
        means = rng.uniform(0.0, 1.0, size=N_CLASSES).astype(np.float32)
        means[CLASSES["air"]] = rng.uniform(0.0, 0.05)
        if abs(means[CLASSES["csf"]] - means[CLASSES["white_matter"]]) >= 0.2:
            return means


def draw_voxel_size(rng: np.random.Generator) -> tuple[float, float, float]:
    """An acquisition voxel size: isotropic, or (one time in three) in-plane with one thick axis."""
    if rng.random() < 2 / 3:
        return (float(rng.uniform(*VOXEL_RANGE_MM)),) * 3
    in_plane = float(rng.uniform(VOXEL_RANGE_MM[0], 1.0))
    size = [in_plane] * 3
    size[int(rng.integers(3))] = float(rng.uniform(1.2, 2.0))
    return (size[0], size[1], size[2])


def draw_scan(
    rng: np.random.Generator, family: str | None = None, voxel_mm: Sequence[float] | None = None, plain: bool = False
) -> Scan:
    """Draw a scanner and contrast.

    Args:
        rng: the random stream.
        family: a contrast family of :data:`FAMILIES`, or None to draw one.
        voxel_mm: the acquisition voxel size, or None to draw one.
        plain: no bias field, gamma, ghosting or skull stripping, little noise (fixed-seed validation volumes).

    Returns:
        The scan.

    Raises:
        ValueError: on an unknown family.
    """
    if family is None:
        family = str(rng.choice(FAMILIES, p=FAMILY_WEIGHTS))
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {list(FAMILIES)}, not {family!r}.")
    means = _class_means(rng, family)
    stds = rng.uniform(0.01, 0.05, size=N_CLASSES).astype(np.float32)
    csf, white = means[CLASSES["csf"]], means[CLASSES["white_matter"]]
    pvs_mean = float(csf + rng.normal(0.0, 0.02))
    if not plain and rng.random() < 0.3:  # poorly filled or narrow: closer to white matter
        pvs_mean = float(white + (pvs_mean - white) * rng.uniform(0.5, 1.0))
    voxel = tuple(float(v) for v in voxel_mm) if voxel_mm is not None else draw_voxel_size(rng)
    if plain:
        return Scan(family, means, stds, pvs_mean, voxel, np.zeros((4, 4, 4), np.float32), 0.02, 1.0, (0, 0, 0), False)
    bias = rng.normal(0.0, rng.uniform(0.0, 0.25), size=(4, 4, 4)).astype(np.float32)
    ghost = (
        (float(rng.uniform(0.03, 0.12)), int(rng.integers(4, 16)), int(rng.integers(3)))
        if rng.random() < 0.1
        else (0, 0, 0)
    )
    return Scan(
        family=family,
        means=means,
        stds=stds,
        pvs_mean=pvs_mean,
        voxel_mm=(voxel[0], voxel[1], voxel[2]),
        bias=bias,
        noise=float(rng.uniform(0.005, 0.06)),
        gamma=float(np.exp(rng.normal(0.0, 0.2))),
        ghost=ghost,
        stripped=bool(rng.random() < 0.25),
    )


def _bias_at(scan: Scan, coordinates: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The multiplicative bias field at voxel ``coordinates`` (3, ...) of a field of view of ``shape``."""
    if not scan.bias.any():
        return np.ones(coordinates.shape[1:], dtype=np.float32)
    scale = (np.array(scan.bias.shape) - 1) / np.maximum(np.array(shape) - 1, 1)
    index = coordinates * scale.reshape(3, *([1] * (coordinates.ndim - 1)))
    return np.exp(ndimage.map_coordinates(scan.bias, index, order=1, mode="nearest")).astype(np.float32)


def _tissue(classes: np.ndarray, csf: np.ndarray | None, scan: Scan, noise: np.ndarray) -> np.ndarray:
    """Each voxel's intensity before acquisition: its class's, with its CSF fraction (uint8) mixed in when given."""
    if csf is None:
        return scan.means[classes] + scan.stds[classes] * noise
    c = csf.astype(np.float32) / 255.0
    other = np.where((classes == CLASSES["csf"]) & (c > 0.0), CLASSES["cortex"], classes)  # CSF mixes with cortex
    fluid = scan.means[CLASSES["csf"]] + scan.stds[CLASSES["csf"]] * noise
    return (1.0 - c) * (scan.means[other] + scan.stds[other] * noise) + c * fluid


def intensity_window(
    labels: np.ndarray, scan: Scan, rng: np.random.Generator, csf: np.ndarray | None = None
) -> tuple[float, float]:
    """The 0.5 and 99.5 percentiles of the whole rendered field of view, from a coarse rendering (every 3rd voxel)."""
    coarse = labels[::3, ::3, ::3]
    grid = np.indices(coarse.shape, dtype=np.float32) * 3
    noise = rng.standard_normal(coarse.shape, dtype=np.float32)
    values = _tissue(coarse, None if csf is None else csf[::3, ::3, ::3], scan, noise)
    values = values * _bias_at(scan, grid, labels.shape)
    sigma = scan.noise * float(scan.means.max())
    values = np.hypot(values + sigma * rng.standard_normal(coarse.shape), sigma * rng.standard_normal(coarse.shape))
    if scan.stripped:
        values[np.isin(coarse, _HEAD_OFF)] = 0.0
    low, high = np.percentile(values, (0.5, 99.5))
    return float(low), float(max(high, low + 1e-3))


def _crop(volume: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``volume[lo:hi]`` with zero padding where the box leaves the volume."""
    src_lo, src_hi = np.maximum(lo, 0), np.minimum(hi, volume.shape)
    out = np.zeros(tuple(hi - lo), dtype=volume.dtype)
    out[tuple(slice(a - b, c - b) for a, b, c in zip(src_lo, lo, src_hi, strict=True))] = volume[
        tuple(slice(a, c) for a, c in zip(src_lo, src_hi, strict=True))
    ]
    return out


def _acquire(volume: np.ndarray, factor: np.ndarray, order: int, blur: np.ndarray) -> np.ndarray:
    """Blur, then sample on the grid of ``factor`` times larger voxels (aligned at the field of view's corner)."""
    if blur.any():
        volume = ndimage.gaussian_filter(volume, blur, mode="nearest")
    shape = np.maximum(np.ceil(np.array(volume.shape) / factor).astype(int), 1)
    return ndimage.affine_transform(
        volume, factor, offset=0.5 * factor - 0.5, output_shape=tuple(shape), order=order, mode="nearest"
    )


def _back(volume: np.ndarray, factor: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """Interpolate an acquired volume back to the 0.8 mm grid (the inverse of :func:`_acquire`'s sampling)."""
    return ndimage.affine_transform(
        volume, 1 / factor, offset=0.5 / factor - 0.5, output_shape=tuple(shape), order=order, mode="nearest"
    )


def check_label_rule(label_rule: int) -> int:
    """Return ``label_rule`` if it is one of :data:`LABEL_RULES`; else raise ValueError naming the setting."""
    if label_rule not in LABEL_RULES:
        raise ValueError(f"synth#label_rule must be one of {LABEL_RULES}, not {label_rule!r}.")
    return int(label_rule)


def render_region(
    labels: np.ndarray,
    pv: np.ndarray,
    lo: Sequence[int],
    size: Sequence[int],
    scan: Scan,
    window: tuple[float, float],
    rng: np.random.Generator,
    label_rule: int = DEFAULT_LABEL_RULE,
    csf: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render the box ``[lo, lo + size)`` of a label map: the image in [0, 1] and the binary PVS label, float32.

    Args:
        labels: the label map's classes.
        pv: its PVS partial volume (uint8 0-255 or float 0-1).
        lo: the box's first voxel.
        size: the box's size.
        scan: the drawn scan.
        window: the intensity window (:func:`intensity_window`).
        rng: the random stream (noise).
        label_rule: how the label follows the acquisition (:data:`LABEL_RULES`, module docstring).
        csf: the label map's uint8 CSF fraction, or None (every voxel its class).

    Returns:
        The image and the label, each of shape ``size``.

    Raises:
        ValueError: for an unknown ``label_rule``.
    """
    check_label_rule(label_rule)
    size = np.array(size, dtype=int)
    factor = np.maximum(np.array(scan.voxel_mm) / VOXEL_MM, 1.0)
    start = np.array(lo, dtype=int) - _MARGIN
    stop = np.array(lo, dtype=int) + size + _MARGIN
    classes = _crop(labels, start, stop)
    fraction = _crop(pv, start, stop).astype(np.float32)
    if pv.dtype == np.uint8:
        fraction /= 255.0
    noise = rng.standard_normal(classes.shape, dtype=np.float32)
    tissue = _tissue(classes, None if csf is None else _crop(csf, start, stop), scan, noise)
    fluid = scan.pvs_mean + scan.stds[CLASSES["csf"]] * noise
    image = (1.0 - fraction) * tissue + fraction * fluid
    grid = np.indices(classes.shape, dtype=np.float32) + start.reshape(3, 1, 1, 1)
    image *= _bias_at(scan, grid, labels.shape)
    blur = np.where(factor > 1.0, 0.42 * factor, 0.0)
    acquired = _acquire(image, factor, 1, blur)
    sigma = scan.noise * float(scan.means.max())
    acquired = np.hypot(
        acquired + sigma * rng.standard_normal(acquired.shape, dtype=np.float32),
        sigma * rng.standard_normal(acquired.shape, dtype=np.float32),
    )
    image = _back(acquired, factor, classes.shape, 1)
    label = fraction >= 0.5
    if (factor > 1.0).any():  # acquired voxels at least half PVS (the PVS fraction averaged over each)
        box_blur = np.where(factor > 1.0, factor / np.sqrt(12.0), 0.0)
        seen = _back((_acquire(fraction, factor, 1, box_blur) >= 0.5).astype(np.uint8), factor, classes.shape, 0) > 0
        label = seen if label_rule == 1 else label & ndimage.binary_dilation(seen, np.ones((3, 3, 3), dtype=bool))
    low, high = window
    image = np.clip((image - low) / (high - low), 0.0, 1.0) ** scan.gamma
    amplitude, shift, axis = scan.ghost
    if amplitude:
        image = np.clip(image + amplitude * np.roll(image, shift, axis=axis), 0.0, 1.0)
    if scan.stripped:
        image[np.isin(classes, _HEAD_OFF)] = 0.0
    inner = tuple(slice(a, a + s) for a, s in zip(np.array(lo) - start, size, strict=True))
    return image[inner].astype(np.float32), label[inner].astype(np.float32)


class RandSynthPatchesd(Randomizable, MapTransform):
    """Render ``num_samples`` training patches of a label map, each with the same drawn scan.

    Input keys: ``labels``, ``pv``, ``centres`` and (generator version 3) ``csf`` (from
    :class:`scripts.data.synth.dataset.SynthLabelMapd`).
    Output: a list of ``{"image", "label"}`` (float32 tensors of shape (1, *patch_size)), ``"contrast"`` (the
    family) and ``"voxel_mm"`` (the acquisition's voxel size). A patch is centred on a PVS with probability
    ``pos / (pos + neg)``: on a tube drawn uniformly among the map's tubes (so small PVS are sampled as often as large
    ones), shifted by up to a quarter patch; else anywhere in the head.

    Args:
        patch_size: the patch size in voxels.
        num_samples: patches per label map.
        pos: weight of PVS-centred patches.
        neg: weight of patches anywhere in the head.
        families: the contrast families to draw from (None: all, with :data:`FAMILY_WEIGHTS`).
        label_rule: how the label follows the acquisition (:data:`LABEL_RULES`, module docstring).
        fine_fraction: the share of label maps rendered at an isotropic voxel of :data:`FINE_RANGE_MM` instead of
            :func:`draw_voxel_size`'s (0: every voxel size drawn by it, as the shipped model was trained).

    Raises:
        ValueError: for an unknown ``label_rule`` or a ``fine_fraction`` outside [0, 1].
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        num_samples: int = 2,
        pos: float = 2.0,
        neg: float = 1.0,
        families: Sequence[str] | None = None,
        label_rule: int = DEFAULT_LABEL_RULE,
        fine_fraction: float = 0.0,
    ) -> None:
        MapTransform.__init__(self, ("labels", "pv", "centres"))
        self.label_rule = check_label_rule(label_rule)
        if not 0.0 <= float(fine_fraction) <= 1.0:
            raise ValueError(f"synth#fine_fraction must lie in [0, 1], not {fine_fraction!r}.")
        self.fine_fraction = float(fine_fraction)
        self.patch_size = np.array([int(s) for s in patch_size])
        self.num_samples = int(num_samples)
        self.pos_probability = float(pos) / float(pos + neg)
        self.families = tuple(families) if families else None

    def randomize(self, data: Any = None) -> None:
        """No state: every call draws from ``self.R``."""

    def _centre(self, rng: np.random.Generator, labels: np.ndarray, centres: np.ndarray) -> np.ndarray:
        if len(centres) and rng.random() < self.pos_probability:
            centre = centres[rng.integers(len(centres))] + rng.uniform(-0.25, 0.25, 3) * self.patch_size
        else:
            head = np.flatnonzero(labels[::4, ::4, ::4] != CLASSES["air"])
            flat = head[rng.integers(len(head))] if len(head) else rng.integers(labels[::4, ::4, ::4].size)
            centre = np.array(np.unravel_index(flat, labels[::4, ::4, ::4].shape)) * 4.0
        lo = np.rint(centre - self.patch_size / 2).astype(int)
        return np.clip(lo, 0, np.maximum(np.array(labels.shape) - self.patch_size, 0))

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[str, Any]]:
        """Render the patches of one label map."""
        labels = np.asarray(data["labels"]).reshape(np.asarray(data["labels"]).shape[-3:])
        pv = np.asarray(data["pv"]).reshape(labels.shape)
        centres = np.asarray(data["centres"], dtype=np.float32).reshape(-1, 3)
        csf = np.asarray(data["csf"]).reshape(labels.shape) if data.get("csf") is not None else None
        rng = np.random.default_rng(self.R.randint(2**32))  # MONAI seeds self.R (a RandomState) per worker
        family = str(rng.choice(self.families)) if self.families is not None else None
        voxel = None
        if self.fine_fraction and rng.random() < self.fine_fraction:  # no draw at 0: the generator's stream unchanged
            voxel = (float(rng.uniform(*FINE_RANGE_MM)),) * 3
        scan = draw_scan(rng, family, voxel)
        window = intensity_window(labels, scan, rng, csf)
        out = []
        for _ in range(self.num_samples):
            image, label = render_region(
                labels,
                pv,
                self._centre(rng, labels, centres),
                self.patch_size,
                scan,
                window,
                rng,
                self.label_rule,
                csf,
            )
            out.append(
                {
                    "image": torch.from_numpy(image[None]),
                    "label": torch.from_numpy(label[None]),
                    "contrast": scan.family,
                    "voxel_mm": scan.voxel_mm,
                }
            )
        return out


def render_volume(
    labels: np.ndarray,
    pv: np.ndarray,
    scan: Scan,
    rng: np.random.Generator,
    label_rule: int = DEFAULT_LABEL_RULE,
    csf: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a whole label map (a fixed-seed validation volume): image in [0, 1] and binary label, at 0.8 mm."""
    window = intensity_window(labels, scan, rng, csf)
    return render_region(labels, pv, (0, 0, 0), labels.shape, scan, window, rng, label_rule, csf)
