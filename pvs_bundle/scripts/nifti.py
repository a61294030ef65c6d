"""NIfTI files: what reading one can fail with, voxel sizes, RAS ordering, and the one writer of gzipped NIfTI files.

Reading is checked in two steps, as nibabel reads: the header (:data:`HEADER_ERRORS`: not NIfTI, not gzip, cut
short), then the voxels (:data:`DATA_ERRORS`: truncated or corrupt data, often behind a readable header); a float
volume must also hold finite values (:func:`finite_voxels`). The data check and inference's input check both
validate files with these.

Every stage that reads a voxel size, reorders a volume for display or writes a ``.nii.gz`` does it here, so a mask
written by inference, a demo image and a cached synthetic volume share one convention: gzip with ``mtime=0`` (the same
bytes for the same data) written to a temporary file and renamed into place (:func:`scripts.io.atomic_write`).
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from scripts.io import atomic_write

# What reading a NIfTI header raises: not NIfTI, not gzip, cut inside the header, no permission.
HEADER_ERRORS: tuple[type[Exception], ...] = (
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,
    nib.wrapstruct.WrapStructError,
    OSError,
    EOFError,
    zlib.error,
    ValueError,
)
# What reading the voxels behind a readable header raises: truncated or corrupt (compressed) data.
DATA_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, zlib.error, ValueError)


def finite_voxels(data: np.ndarray) -> np.ndarray | None:
    """The mask of finite voxels of float data, or None for other data (which holds no NaN or Inf)."""
    return np.isfinite(data) if np.issubdtype(data.dtype, np.floating) else None


def count_non_finite(data: np.ndarray, finite: np.ndarray | None = None) -> int:
    """The number of NaN/Inf voxels of a volume (0 for integer data).

    Args:
        data: the voxels.
        finite: their :func:`finite_voxels`, when already computed.
    """
    finite = finite_voxels(data) if finite is None else finite
    return 0 if finite is None else int(data.size - np.count_nonzero(finite))


def voxel_size(affine: np.ndarray) -> np.ndarray:
    """The voxel size in mm along each voxel axis: the lengths of the affine's first three columns."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


def voxel_volume_mm3(affine: np.ndarray) -> float:
    """Return the volume of one voxel in mm³ from a 4 x 4 voxel-to-world affine.

    Raises:
        ValueError: if the affine is not 4 x 4 or its voxels have no volume.
    """
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise ValueError(f"affine must be a 4 x 4 matrix, not of shape {matrix.shape}.")
    volume = abs(float(np.linalg.det(matrix[:3, :3])))
    if not (math.isfinite(volume) and volume > 0):
        raise ValueError(f"affine must give voxels a positive finite volume, not {volume} mm³.")
    return volume


def header_spacing(image: nib.spatialimages.SpatialImage) -> tuple[float, float, float]:
    """The voxel size the header states (``pixdim``, the first three zooms), as floats."""
    return tuple(float(z) for z in image.header.get_zooms()[:3])  # type: ignore[return-value]


def check_spacing(spacing: Sequence[float], ndim: int = 3) -> tuple[float, ...]:
    """Validate a voxel spacing in mm.

    Args:
        spacing: one positive, finite value per spatial axis.
        ndim: the expected number of axes.

    Returns:
        The spacing as a tuple of floats.

    Raises:
        ValueError: if the length is wrong or a value is not positive and finite.
    """
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be {ndim} positive finite values in mm, not {spacing}.")
    return values


def to_ras(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorder (transpose and flip) a volume so that its axes run left→right, posterior→anterior, inferior→superior.

    Args:
        volume: 3D array in the voxel order of ``affine``.
        affine: its 4 x 4 voxel-to-world (RAS+ mm) matrix.

    Returns:
        The RAS-ordered array (no resampling).
    """
    return nib.orientations.apply_orientation(volume, nib.orientations.io_orientation(affine))


def ras_spacing(spacing: Sequence[float], affine: np.ndarray) -> tuple[float, ...]:
    """Reorder a voxel spacing like :func:`to_ras` reorders the axes."""
    orientation = nib.orientations.io_orientation(affine)
    reordered = [0.0] * len(spacing)
    for axis, (new_axis, _) in enumerate(orientation):
        reordered[int(new_axis)] = float(spacing[axis])
    return tuple(reordered)


def write_nifti_gz(image: nib.Nifti1Image, path: str | Path) -> Path:
    """Write ``image`` as gzipped NIfTI (gzip mtime 0: reproducible bytes), atomically; return the path."""
    return atomic_write(path, lambda p: p.write_bytes(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)))


def save_like(data: np.ndarray, reference: nib.Nifti1Image, path: str | Path) -> Path:
    """Write a 3D array as gzipped NIfTI on the grid of ``reference``, atomically.

    The affine, qform and sform (with their codes) and the spatial units are those of ``reference``.

    Args:
        data: the array, in the voxel order of ``reference`` (its first three dimensions).
        reference: the image whose grid the array lies on.
        path: the destination (``.nii.gz``).

    Returns:
        The destination path.

    Raises:
        ValueError: if the array's shape is not the reference's spatial shape.
    """
    if data.shape != reference.shape[:3]:
        raise ValueError(f"data for {path} must have the input's shape {reference.shape[:3]}, not {data.shape}.")
    header = type(reference.header)()
    header.set_xyzt_units(*reference.header.get_xyzt_units())
    image = type(reference)(data, reference.affine, header)
    image.set_data_dtype(data.dtype)
    image.set_qform(reference.header.get_qform(), int(reference.header["qform_code"]))
    image.set_sform(reference.header.get_sform(), int(reference.header["sform_code"]))
    return write_nifti_gz(image, path)
