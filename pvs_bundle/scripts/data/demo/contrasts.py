"""Contrasts and voxel sizes of the synthetic demo data (:mod:`scripts.data.demo`).

**Contrast.** One intensity table per contrast mixes the template's tissue fractions (CSF, grey and white matter,
and a shell outside the brain: a 2 mm CSF rim, skull, scalp) into an image; perivascular spaces are mixed toward
the contrast's CSF value by their partial volume, so they look like CSF in every contrast:

- ``T2w`` (the demo's): CSF bright > GM > WM, skull dark, scalp middle; PVS bright.
- ``T1w``: WM bright > GM > CSF dark, skull dark, scalp fat bright-ish; PVS dark.
- ``FLAIR``: CSF nulled (dark), GM slightly brighter than WM, skull dark, scalp fat bright-ish, milder noise than the
  others; PVS dark.

Only intensities depend on the contrast: a seed gives the same anatomy, PVS and mask in every contrast.

**Voxel size.** A grid of another voxel size keeps the field of view in mm of the 0.8 mm grid it replaces (shape
``round(shape * 0.8 / v)`` per axis, centred on the same point). The larger voxel's integration is simulated by a
Gaussian pre-filter of the 1 mm template before it is sampled (linearly, as at 0.8 mm) at the voxel centres: per
axis, the filter adds the variance of a box of the new width minus that of a 0.8 mm box,
``sigma = sqrt((v² - 0.8²) / 12)`` mm (none for voxels of 0.8 mm or less; the 1 mm template holds no finer detail).
The PVS partial volume is computed on the new grid (a linear ramp one mean voxel wide across each capsule's
surface) and the mask is ``partial volume >= 0.5`` there, as a label drawn on the acquired image would be. Noise is
drawn per voxel from the same range at every voxel size (no SNR gain for larger voxels).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

VOXEL_SIZE_RANGE_MM: tuple[float, float] = (0.5, 4.0)
"""Smallest and largest voxel edge accepted."""
SHELL_PROFILE_MM: tuple[float, ...] = (0.0, 2.0, 3.5, 7.0, 8.5, 13.0, 14.5)
"""Distances outside the brain (mm) of the shell's knots: CSF rim, skull, scalp, then air."""


@dataclasses.dataclass(frozen=True)
class Contrast:
    """Intensities of one contrast (before contrast jitter, bias field, scaling and noise).

    Attributes:
        name: the BIDS suffix (``T2w``, ``T1w``, ``FLAIR``).
        csf: CSF, and PVS through their partial volume.
        gm: grey matter.
        wm: white matter.
        skull: skull.
        scalp: scalp.
        noise_sigma: range of the Rician noise's sigma, drawn per subject.
    """

    name: str
    csf: float
    gm: float
    wm: float
    skull: float
    scalp: float
    noise_sigma: tuple[float, float]

    @property
    def reference(self) -> float:
        """The brightest tissue's intensity, which the contrast jitter (a power law) leaves unchanged."""
        return max(self.csf, self.gm, self.wm)


CONTRASTS: dict[str, Contrast] = {
    "T2w": Contrast("T2w", csf=1000.0, gm=560.0, wm=340.0, skull=40.0, scalp=480.0, noise_sigma=(8.0, 20.0)),
    "T1w": Contrast("T1w", csf=180.0, gm=520.0, wm=800.0, skull=40.0, scalp=640.0, noise_sigma=(8.0, 20.0)),
    "FLAIR": Contrast("FLAIR", csf=90.0, gm=620.0, wm=480.0, skull=30.0, scalp=560.0, noise_sigma=(5.0, 12.0)),
}
DEFAULT_CONTRAST = "T2w"


def check_contrast(contrast: object) -> Contrast:
    """Return the intensity table of a contrast name.

    Raises:
        ValueError: if ``contrast`` is not one of :data:`CONTRASTS`.
    """
    if not isinstance(contrast, str) or contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {list(CONTRASTS)}, not {contrast!r}")
    return CONTRASTS[contrast]


def check_voxel_size(voxel_size_mm: object) -> tuple[float, float, float] | None:
    """Return a voxel size as three floats (None stays None: the demo's own grid).

    Raises:
        ValueError: if it is not None or three numbers in :data:`VOXEL_SIZE_RANGE_MM`.
    """
    if voxel_size_mm is None:
        return None
    lo, hi = VOXEL_SIZE_RANGE_MM
    ok = (
        isinstance(voxel_size_mm, Sequence | np.ndarray)
        and not isinstance(voxel_size_mm, str)
        and len(voxel_size_mm) == 3
        and all(
            isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) and lo <= v <= hi
            for v in voxel_size_mm
        )
    )
    if not ok:
        raise ValueError(
            f"voxel_size_mm must be three numbers in [{lo}, {hi}] mm, e.g. [1.0, 1.0, 1.0], not {voxel_size_mm!r}"
        )
    return tuple(float(v) for v in voxel_size_mm)


def acquired_shape(
    shape: Sequence[int], reference_mm: Sequence[float], voxel_size_mm: Sequence[float] | None
) -> tuple[int, int, int]:
    """The grid shape that covers the field of view of ``shape`` voxels of ``reference_mm`` with another voxel size.

    Args:
        shape: grid shape at the reference voxel size.
        reference_mm: the reference voxel size.
        voxel_size_mm: the new voxel size; None is the reference.

    Returns:
        ``round(shape * reference / voxel)`` per axis, at least 1 (``shape`` itself for None).
    """
    if voxel_size_mm is None:
        return tuple(int(s) for s in shape)
    return tuple(max(1, round(s * r / v)) for s, r, v in zip(shape, reference_mm, voxel_size_mm, strict=True))


def resolution_blur_mm(voxel_size_mm: Sequence[float], reference_mm: Sequence[float]) -> tuple[float, float, float]:
    """Gaussian sigma (mm) per axis that turns an image of ``reference_mm`` voxels into one of ``voxel_size_mm``.

    A voxel integrates a box as wide as itself (variance ``v² / 12``); the filter adds the difference in variance.

    Returns:
        ``sqrt(max(v² - r², 0) / 12)`` per axis.
    """
    return tuple(math.sqrt(max(v * v - r * r, 0.0) / 12.0) for v, r in zip(voxel_size_mm, reference_mm, strict=True))


@dataclasses.dataclass(frozen=True, eq=False)
class TissueFractions:
    """The template's tissues, from which every contrast's image is mixed.

    Attributes:
        csf: CSF fraction per voxel.
        gm: grey matter fraction.
        wm: white matter fraction.
        brain_fraction: fraction of the voxel inside the brain (csf + gm + wm).
        outside_mm: distance outside the brain in mm (0 inside), placing the shell (:data:`SHELL_PROFILE_MM`).
        voxel_mm: the template's voxel size.
    """

    csf: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain_fraction: np.ndarray
    outside_mm: np.ndarray
    voxel_mm: tuple[float, float, float]

    def image(self, contrast: Contrast, blur_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
        """Mix the tissues into one contrast's image (tissues inside the brain, the shell outside), then blur it.

        Args:
            contrast: the intensity table.
            blur_mm: Gaussian sigma per axis in mm (:func:`resolution_blur_mm`); none when all zero.

        Returns:
            A float32 volume of the template's shape.
        """
        c = contrast
        shell = np.interp(self.outside_mm, SHELL_PROFILE_MM, [c.csf, c.csf, c.skull, c.skull, c.scalp, c.scalp, 0])
        image = (
            self.csf * c.csf + self.gm * c.gm + self.wm * c.wm + (1.0 - self.brain_fraction) * shell.astype(np.float32)
        )
        sigma = np.asarray(blur_mm, dtype=np.float64) / np.asarray(self.voxel_mm)
        return (ndimage.gaussian_filter(image, sigma) if sigma.any() else image).astype(np.float32)
