"""The demo's anatomy: the MNI152 2009 template, each subject's warp of it, and its tissues in a subject's grid.

The template's tissue maps ship inside nilearn (no network). CSF, grey and white matter, with a CSF rim, skull and
scalp around the brain, are mixed into a contrast (:mod:`scripts.data.demo.contrasts`). Each subject's grid is
sampled from the 1 mm template through a :class:`SubjectWarp` (a small random affine and a smooth random
deformation: one interpolation), so subjects differ in shape but share the template's anatomy.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from scripts.data.demo.contrasts import (
    DEFAULT_CONTRAST,
    Contrast,
    TissueFractions,
    acquired_shape,
    check_contrast,
    check_voxel_size,
    resolution_blur_mm,
)
from scripts.data.demo.grid import DEMO_SHAPE, VOXEL_SIZE_MM, check_shape, grid_axes
from scripts.data.synth.anatomy import random_rotation
from scripts.nifti import header_spacing

BRAIN_CENTRE_MM: tuple[float, float, float] = (0.0, -18.0, 5.0)
"""Centre of each subject's warp, and the origin from which centrum semiovale PVS run radially."""
TISSUE_LABELS = {"csf": 1, "gm": 2, "wm": 3}
"""Classes returned by :func:`tissue_labels`; 0 is outside the brain."""

_CONTROL_SPACING_MM = 20.0
_CONTROL_BOX_MM = ((-100.0, 100.0), (-160.0, 120.0), (-140.0, 160.0))
_COARSE_SPACING_MM = 4.0
_DEFORMATION_RMS_MM = 2.0
_SLAB = 16


@dataclasses.dataclass(frozen=True, eq=False)
class SubjectWarp:
    """Map from a subject's world coordinates to the template's: ``q = c + matrix @ (p - c) + d(p)``.

    ``c`` is :data:`BRAIN_CENTRE_MM`; ``d`` is a sum of Gaussian bumps centred on a 20 mm world grid of
    control points, weighted by ``coefficients`` (shape (cx, cy, cz, 3), mm).

    Attributes:
        matrix: 3 x 3 global rotation and scaling.
        coefficients: control point weights of the smooth displacement.
        coarse_field: the displacement sampled every 4 mm over the control box, for scattered points.
    """

    matrix: np.ndarray
    coefficients: np.ndarray
    coarse_field: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Template:
    """The 1 mm MNI152 2009 template, as the generator uses it.

    Attributes:
        world_to_voxel: inverse of the template's affine.
        t2: the T2w image (:data:`~scripts.data.demo.contrasts.DEFAULT_CONTRAST`), unblurred.
        gm: grey matter fraction.
        wm: white matter fraction.
        labels: tissue classes (:data:`TISSUE_LABELS`, 0 outside the brain).
        fractions: the tissues every contrast is mixed from.
    """

    world_to_voxel: np.ndarray
    t2: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    labels: np.ndarray
    fractions: TissueFractions


@functools.lru_cache(maxsize=1)
def template() -> Template:
    """T2-like intensities and tissue maps on the 1 mm MNI152 2009 grid, built once per process.

    Returns:
        The template.
    """
    from nilearn import datasets  # heavy import, needed only here

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(t1.get_fdata() > 0, iterations=2))
    brain_fraction = ndimage.gaussian_filter(brain.astype(np.float32), 0.6)
    gm = np.minimum(gm, brain_fraction)
    wm = np.minimum(wm, brain_fraction - gm)
    csf = np.clip(brain_fraction - gm - wm, 0.0, 1.0)
    outside_mm = ndimage.distance_transform_edt(~brain).astype(np.float32)
    fractions = TissueFractions(csf, gm, wm, brain_fraction, outside_mm, header_spacing(t1))
    t2 = fractions.image(check_contrast(DEFAULT_CONTRAST))
    labels = np.where(brain_fraction >= 0.5, np.argmax(np.stack([csf, gm, wm]), axis=0) + 1, 0).astype(np.uint8)
    return Template(np.linalg.inv(t1.affine), t2, gm, wm, labels, fractions)


@functools.lru_cache(maxsize=2)
def template_image(contrast: Contrast, voxel_size_mm: tuple[float, float, float] | None) -> np.ndarray:
    """The 1 mm template in a contrast, pre-filtered for a voxel size (:mod:`scripts.data.demo.contrasts`).

    Args:
        contrast: the intensity table.
        voxel_size_mm: the voxel size it will be sampled at; None is :data:`~scripts.data.demo.grid.VOXEL_SIZE_MM`.

    Returns:
        A float32 volume on the template's grid.
    """
    if contrast.name == DEFAULT_CONTRAST and voxel_size_mm is None:
        return template().t2
    return template().fractions.image(contrast, resolution_blur_mm(voxel_size_mm or VOXEL_SIZE_MM, VOXEL_SIZE_MM))


def random_warp(rng: np.random.Generator) -> SubjectWarp:
    """Draw a subject's warp: scaling of +-5 % and rotation of +-3 degrees per axis, and a smooth deformation.

    Args:
        rng: the subject's warp generator.

    Returns:
        The warp.
    """
    scale = np.diag(rng.uniform(0.95, 1.05, size=3))
    rotation = random_rotation(rng, 3.0)
    n_control = [len(np.arange(lo, hi + 1e-6, _CONTROL_SPACING_MM)) for lo, hi in _CONTROL_BOX_MM]
    coefficients = rng.normal(0.0, _DEFORMATION_RMS_MM / np.sqrt(3), size=(*n_control, 3))
    coarse_axes = [np.arange(lo, hi + 1e-6, _COARSE_SPACING_MM) for lo, hi in _CONTROL_BOX_MM]
    return SubjectWarp(rotation @ scale, coefficients, _displacement(coefficients, *coarse_axes))


def warp_points(warp: SubjectWarp, points: np.ndarray) -> np.ndarray:
    """Template world coordinates of subject world points, through the warp's coarse displacement.

    Args:
        warp: the subject's warp.
        points: subject world points (P, 3), mm.

    Returns:
        Template world points (P, 3), mm.
    """
    lows = np.array([lo for lo, _ in _CONTROL_BOX_MM])
    index = ((points - lows) / _COARSE_SPACING_MM).T
    field = np.stack(
        [ndimage.map_coordinates(warp.coarse_field[..., c], index, order=1, mode="nearest") for c in range(3)], axis=1
    )
    centre = np.array(BRAIN_CENTRE_MM)
    return centre + (points - centre) @ warp.matrix.T + field


def tissue_fractions_at(warp: SubjectWarp, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Template grey and white matter fractions at subject world points.

    Args:
        warp: the subject's warp.
        points: subject world points (n, m, 3), mm.

    Returns:
        The grey and the white matter fractions, each (n, m).
    """
    tissues = template()
    world = warp_points(warp, points.reshape(-1, 3))
    voxels = world @ tissues.world_to_voxel[:3, :3].T + tissues.world_to_voxel[:3, 3]
    return tuple(
        ndimage.map_coordinates(m, voxels.T, order=1).reshape(points.shape[:2]) for m in (tissues.gm, tissues.wm)
    )


def sample_template(
    volume: np.ndarray,
    world_to_voxel: np.ndarray,
    warp: SubjectWarp,
    shape: tuple[int, int, int],
    order: int,
    voxel_size_mm: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Resample a template volume into a subject grid through ``warp``, in slabs to bound memory.

    Args:
        volume: a volume on the template's grid.
        world_to_voxel: the template's inverse affine.
        warp: the subject's warp.
        shape: the subject grid's shape (:func:`~scripts.data.demo.grid.grid_affine`).
        order: spline order (1 for images, 0 for labels).
        voxel_size_mm: the grid's voxel size; None is :data:`~scripts.data.demo.grid.VOXEL_SIZE_MM`.

    Returns:
        A volume of ``shape`` and of ``volume``'s dtype (0 outside the template).
    """
    axes = grid_axes(shape, voxel_size_mm)
    centre = np.array(BRAIN_CENTRE_MM)
    linear = world_to_voxel[:3, :3] @ warp.matrix
    offset = world_to_voxel[:3, :3] @ centre + world_to_voxel[:3, 3]
    rel = [axes[a] - centre[a] for a in range(3)]
    out = np.empty(shape, dtype=volume.dtype)
    for start in range(0, shape[0], _SLAB):
        xs = axes[0][start : start + _SLAB]
        field = _displacement(warp.coefficients, xs, axes[1], axes[2]) @ world_to_voxel[:3, :3].T.astype(np.float32)
        rx = (xs - centre[0])[:, None, None]
        coords = np.stack(
            [
                offset[a]
                + linear[a, 0] * rx
                + linear[a, 1] * rel[1][None, :, None]
                + linear[a, 2] * rel[2][None, None, :]
                + field[..., a]
                for a in range(3)
            ]
        )
        out[start : start + _SLAB] = ndimage.map_coordinates(volume, coords, order=order, mode="constant", cval=0)
    return out


def tissue_labels(
    warp: SubjectWarp, shape: Sequence[int] = DEMO_SHAPE, *, voxel_size_mm: Sequence[float] | None = None
) -> np.ndarray:
    """Template tissue classes (:data:`TISSUE_LABELS`, 0 outside the brain) in a subject's grid.

    Args:
        warp: the subject's transform, from :attr:`~scripts.data.demo.subject.SyntheticSubject.warp`.
        shape: the grid shape (at 0.8 mm) the subject was generated with.
        voxel_size_mm: the voxel size it was generated with.

    Returns:
        A uint8 volume of the subject's grid shape.

    Raises:
        ValueError: if ``shape`` is not three positive ints or ``voxel_size_mm`` is out of range.
    """
    return labels_in_subject_grid(template().labels, warp, shape, voxel_size_mm)


def labels_in_subject_grid(
    labels: np.ndarray, warp: SubjectWarp, shape: Sequence[int], voxel_size_mm: Sequence[float] | None
) -> np.ndarray:
    """Sample a label volume on the template's grid into a subject's grid (nearest neighbour).

    Args:
        labels: the label volume, on the template's grid.
        warp: the subject's transform.
        shape: the grid shape (at 0.8 mm) the subject was generated with.
        voxel_size_mm: the voxel size it was generated with; None is :data:`~scripts.data.demo.grid.VOXEL_SIZE_MM`.

    Returns:
        A volume of the subject's grid shape and of ``labels``'s dtype.

    Raises:
        ValueError: if ``shape`` is not three positive ints or ``voxel_size_mm`` is out of range.
    """
    voxel = check_voxel_size(voxel_size_mm)
    grid = acquired_shape(check_shape(shape), VOXEL_SIZE_MM, voxel)
    return sample_template(labels, template().world_to_voxel, warp, grid, 0, voxel)


def _axis_weights(coords: np.ndarray, axis: int) -> np.ndarray:
    """Gaussian weights (len(coords), n_control) of one axis, normalised so the field has unit variance."""
    lo, hi = _CONTROL_BOX_MM[axis]
    control = np.arange(lo, hi + 1e-6, _CONTROL_SPACING_MM)
    weights = np.exp(-0.5 * ((coords[:, None] - control[None, :]) / _CONTROL_SPACING_MM) ** 2)
    return weights / np.sqrt((weights**2).sum(axis=1, keepdims=True))


def _displacement(coefficients: np.ndarray, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> np.ndarray:
    """The smooth displacement (mm) on the grid spanned by world coordinates ``xs, ys, zs``: (nx, ny, nz, 3)."""
    wx, wy, wz = (_axis_weights(c, a) for a, c in enumerate((xs, ys, zs)))
    return np.einsum("xi,yj,zk,ijkc->xyzc", wx, wy, wz, coefficients, optimize=True).astype(np.float32)
