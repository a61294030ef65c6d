"""The demo's image grid: its field of view, voxel size and RAS affine, and the check of a grid shape.

Every grid is axis-aligned (RAS), centred on the same MNI point (:data:`FOV_CENTRE_MM`) whatever its shape, with
ds005595's 0.8 mm voxels unless another voxel size is asked for (:mod:`scripts.data.demo.contrasts`). A ``shape``
is always given in voxels of :data:`VOXEL_SIZE_MM`: it is the field of view.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from scripts.data.demo.contrasts import check_voxel_size

DEMO_SHAPE: tuple[int, int, int] = (96, 128, 112)
"""Demo field of view: 76.8 x 102.4 x 89.6 mm around the basal ganglia and the centrum semiovale."""
FULL_SHAPE: tuple[int, int, int] = (208, 300, 320)
"""The grid of every ds005595 image."""
VOXEL_SIZE_MM: tuple[float, float, float] = (0.799998, 0.8, 0.8)
FOV_CENTRE_MM: tuple[float, float, float] = (0.0, -17.0, 15.0)
"""MNI point at the centre of every grid, whatever its shape."""


def grid_affine(shape: Sequence[int], voxel_size_mm: Sequence[float] | None = None) -> np.ndarray:
    """RAS affine of a grid of ``shape`` voxels, centred on :data:`FOV_CENTRE_MM`.

    Args:
        shape: three positive ints.
        voxel_size_mm: voxel size; None is :data:`VOXEL_SIZE_MM`.

    Returns:
        A 4 x 4 float64 array.

    Raises:
        ValueError: if ``shape`` is not three positive ints or ``voxel_size_mm`` is out of range.
    """
    shape = check_shape(shape)
    size = np.array(check_voxel_size(voxel_size_mm) or VOXEL_SIZE_MM)
    affine = np.diag([*size, 1.0])
    affine[:3, 3] = np.array(FOV_CENTRE_MM) - size * (np.array(shape) - 1) / 2
    return affine


@functools.lru_cache(maxsize=8)
def grid_axes(
    shape: tuple[int, int, int], voxel_size_mm: tuple[float, float, float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World coordinates (mm) of the voxel centres along each axis of :func:`grid_affine`'s grid (cached).

    Args:
        shape: the grid shape.
        voxel_size_mm: its voxel size; None is :data:`VOXEL_SIZE_MM`.

    Returns:
        One 1D array per axis.

    Raises:
        ValueError: as :func:`grid_affine`.
    """
    affine = grid_affine(shape, voxel_size_mm)
    return tuple(affine[a, a] * np.arange(shape[a]) + affine[a, 3] for a in range(3))


def check_shape(shape: object) -> tuple[int, int, int]:
    """Return a grid shape as three ints.

    Raises:
        ValueError: if ``shape`` is not three positive ints.
    """
    ok = (
        isinstance(shape, Sequence | np.ndarray)
        and not isinstance(shape, str)
        and len(shape) == 3
        and all(isinstance(s, int | np.integer) and not isinstance(s, bool) and s > 0 for s in shape)
    )
    if not ok:
        raise ValueError(f"shape must be three positive ints, not {shape!r}")
    return tuple(int(s) for s in shape)
