"""Per-PVS census: one row per 26-connected component of a binary PVS mask, measured in the mask's own grid.

Components are those VALDO counts (:func:`scripts.masks.label_components`, 26 neighbours, no
minimum size). Every measure is computed in world millimetres through the grid's affine, so anisotropic,
oblique and flipped grids give the same figures as a 1 mm RAS grid would (up to sampling):

- ``x_mm``, ``y_mm``, ``z_mm``: centroid of the component's voxel centres in scanner coordinates (RAS+, mm).
- ``voxels``: number of voxels; ``volume_mm3``: voxels x the voxel volume (|det| of the affine's 3 x 3 part).
- ``direction_x/y/z``: principal direction, the unit eigenvector (RAS) of the largest eigenvalue of the covariance
  of the voxel centres in mm, signed so that its largest component is positive. NaN when the component has no
  unique principal axis (one voxel, or a cube-like blob whose two largest eigenvalues are equal).
- ``length_mm``: extent of the voxel centres along the principal direction plus the extent of one voxel along it
  (the root of the sum of squares of the projections of the voxel's edge vectors on the direction): the length of
  a straight tube with its end caps. For a curved PVS it is the chord (4.5 % short of the arc for a 60° arc).
- ``width_mm``: the diameter of the capsule (cylinder with hemispherical ends) that has the component's volume
  and length: the root d of ``pi d² L / 4 - pi d³ / 12 = V``, 0 < d <= L (a sphere when d = L). For thin long
  tubes it is the equivalent cylinder diameter ``2 sqrt(V / (pi L))``.
- ``prob_mean``, ``prob_max``: mean and largest predicted probability over the component's voxels (NaN when no
  probability map is given).
- ``region``: the region holding most of its voxels (:mod:`scripts.regions`); ties go to the region
  listed first; ``unknown`` without a parcellation.

Everything is computed with one pass of label-wise sums (``numpy.bincount``, ``scipy.ndimage`` label statistics)
over the foreground voxels only, never a full-volume pass per component.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from scripts.masks import label_components
from scripts.nifti import voxel_volume_mm3

UNKNOWN_REGION = "unknown"
CENSUS_COLUMNS: tuple[str, ...] = (
    "case",
    "pvs_id",
    "x_mm",
    "y_mm",
    "z_mm",
    "voxels",
    "volume_mm3",
    "length_mm",
    "width_mm",
    "direction_x",
    "direction_y",
    "direction_z",
    "prob_mean",
    "prob_max",
    "region",
)
_NEWTON_STEPS = 30


def capsule_diameter(volume: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Diameter of the capsule of total length ``length`` (end caps included) and volume ``volume``.

    Solves ``pi d² L / 4 - pi d³ / 12 = V`` for 0 < d <= L by Newton's method from the cylinder diameter
    (the left side increases with d on that interval); a volume above the sphere's gives d = L.

    Args:
        volume: volumes in mm³.
        length: lengths in mm, the same shape.

    Returns:
        The diameters in mm.
    """
    volume, length = np.asarray(volume, dtype=np.float64), np.asarray(length, dtype=np.float64)
    d = np.minimum(2 * np.sqrt(volume / (np.pi * length)), length)
    for _ in range(_NEWTON_STEPS):
        f = np.pi * d**2 * length / 4 - np.pi * d**3 / 12 - volume
        slope = np.pi * d * length / 2 - np.pi * d**2 / 4
        d = np.clip(d - f / np.where(slope > 0, slope, np.inf), 1e-9, length)
    return d


def measure_components(
    mask: np.ndarray,
    affine: np.ndarray,
    prob: np.ndarray | None = None,
    region_codes: np.ndarray | None = None,
    region_names: Sequence[str] = (),
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Measure every 26-connected component of a mask (see the module docstring for each measure).

    Args:
        mask: 3D array; voxels > 0.5 are PVS.
        affine: the grid's 4 x 4 voxel-to-world (RAS+ mm) matrix.
        prob: optional probability map of the same shape.
        region_codes: optional integer volume of the same shape: each voxel's index in ``region_names``.
        region_names: names of the region codes.

    Returns:
        The label volume (components numbered 1..n) and a dict of per-component arrays, keyed by the census
        columns (all but ``case`` and ``pvs_id``).

    Raises:
        ValueError: if a volume is not 3D, the volumes differ in shape, or a region code has no name.
    """
    mask = np.asarray(mask)
    labels, count = label_components(mask)
    for name, volume in (("prob", prob), ("region_codes", region_codes)):
        if volume is not None and np.shape(volume) != mask.shape:
            raise ValueError(f"{name} must have the mask's shape {mask.shape}, not {np.shape(volume)}.")
    matrix = np.asarray(affine, dtype=np.float64)
    voxel_mm3 = voxel_volume_mm3(matrix)
    flat = np.flatnonzero(labels)
    ids = labels.ravel()[flat]
    ids0 = ids - 1
    voxels = np.bincount(ids0, minlength=count).astype(np.int64)
    world = matrix[:3, :3] @ np.array(np.unravel_index(flat, mask.shape), dtype=np.float64) + matrix[:3, 3:]
    safe = np.maximum(voxels, 1)
    centroid = (
        np.stack([np.bincount(ids0, weights=world[a], minlength=count) for a in range(3)], axis=1) / safe[:, None]
    )
    offsets = world - centroid[ids0].T
    covariance = np.empty((count, 3, 3))
    for a in range(3):
        for b in range(a, 3):
            covariance[:, a, b] = covariance[:, b, a] = (
                np.bincount(ids0, weights=offsets[a] * offsets[b], minlength=count) / safe
            )
    eigenvalues, eigenvectors = np.linalg.eigh(covariance) if count else (np.empty((0, 3)), np.empty((0, 3, 3)))
    direction = eigenvectors[:, :, 2]
    largest = np.take_along_axis(direction, np.abs(direction).argmax(axis=1)[:, None], axis=1)
    direction = direction * np.where(largest < 0, -1.0, 1.0)
    projection = (offsets * direction[ids0].T).sum(axis=0)
    index = np.arange(1, count + 1)
    extent = (
        np.asarray(ndimage.maximum(projection, ids, index)) - np.asarray(ndimage.minimum(projection, ids, index))
        if count
        else np.empty(0)
    )
    footprint = np.sqrt(((direction @ matrix[:3, :3]) ** 2).sum(axis=1))
    length = extent + footprint
    volume = voxels * voxel_mm3
    unique_axis = eigenvalues[:, 2] > eigenvalues[:, 1] * (1 + 1e-6) + 1e-12
    shown_direction = np.where(unique_axis[:, None], direction, np.nan)
    columns: dict[str, np.ndarray] = {
        "x_mm": centroid[:, 0],
        "y_mm": centroid[:, 1],
        "z_mm": centroid[:, 2],
        "voxels": voxels,
        "volume_mm3": volume,
        "length_mm": length,
        "width_mm": capsule_diameter(volume, length),
        "direction_x": shown_direction[:, 0],
        "direction_y": shown_direction[:, 1],
        "direction_z": shown_direction[:, 2],
    }
    if prob is not None and count:
        values = np.asarray(prob).ravel()[flat].astype(np.float64)  # the foreground only: no full-volume copy
        columns["prob_mean"] = np.bincount(ids0, weights=values, minlength=count) / safe
        columns["prob_max"] = np.asarray(ndimage.maximum(values, ids, index), dtype=np.float64)
    else:
        columns["prob_mean"] = columns["prob_max"] = np.full(count, np.nan)
    columns["region"] = _majority_regions(ids0, count, region_codes, region_names, flat)
    return labels, columns


def _majority_regions(
    ids0: np.ndarray, count: int, region_codes: np.ndarray | None, names: Sequence[str], flat: np.ndarray
) -> np.ndarray:
    """The name of the region holding most voxels of each component (ties: the first region listed)."""
    if region_codes is None:
        return np.full(count, UNKNOWN_REGION, dtype=object)
    codes = np.asarray(region_codes).ravel()[flat].astype(np.int64)
    if codes.size and (codes.min() < 0 or codes.max() >= len(names)):
        raise ValueError(f"region_codes must lie in [0, {len(names)}), not [{codes.min()}, {codes.max()}].")
    votes = np.bincount(ids0 * len(names) + codes, minlength=count * len(names)).reshape(count, len(names))
    return np.asarray(names, dtype=object)[votes.argmax(axis=1)] if count else np.empty(0, dtype=object)


def census_rows(case: str, columns: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Turn the arrays of :func:`measure_components` into table rows (``pvs_id`` from 1), with Python scalars.

    Args:
        case: the case id written in every row.
        columns: per-component arrays.

    Returns:
        One dict per component, keyed by :data:`CENSUS_COLUMNS`.
    """
    count = len(columns["voxels"])
    rows = []
    for k in range(count):
        row: dict[str, Any] = {"case": case, "pvs_id": k + 1}
        for name in CENSUS_COLUMNS[2:]:
            value = columns[name][k]
            row[name] = value if isinstance(value, str) else (int(value) if name == "voxels" else _float(value))
        rows.append(row)
    return rows


def _float(value: Any) -> float:
    number = float(value)
    return number if math.isfinite(number) else math.nan
