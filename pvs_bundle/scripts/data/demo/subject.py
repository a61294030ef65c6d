"""One demo subject: its anatomy, PVS and scan, drawn from the dataset seed and its number alone.

A subject's three random streams (warp, PVS, scanner) are spawned from ``(seed, number)``, so a subject is the same
whatever the dataset's size, and its anatomy and PVS are the same in every contrast and on every grid; about one
subject in six has no PVS (:func:`empty_subjects`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from scripts.data.demo.anatomy import SubjectWarp, random_warp, sample_template, template, template_image
from scripts.data.demo.contrasts import DEFAULT_CONTRAST, acquired_shape, check_contrast, check_voxel_size
from scripts.data.demo.grid import DEMO_SHAPE, VOXEL_SIZE_MM, check_shape, grid_affine
from scripts.data.demo.pvs import PVSSettings, Tube, draw_tubes, inside_grid, partial_volume
from scripts.data.demo.scanner import acquire


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticSubject:
    """One generated subject, with its ground truth.

    Attributes:
        subject_id: ``sub-XXX``.
        image: int16 volume in the subject's contrast.
        mask: int16 PVS mask (0/1), ``pv >= 0.5``.
        affine: RAS voxel-to-world matrix of both volumes.
        tubes: the PVS drawn inside this field of view.
        warp: the subject's anatomy transform (see :func:`~scripts.data.demo.anatomy.tissue_labels`).
    """

    subject_id: str
    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    tubes: tuple[Tube, ...]
    warp: SubjectWarp


def synthesize_subject(
    number: int,
    seed: int = 0,
    shape: Sequence[int] = DEMO_SHAPE,
    with_pvs: bool = True,
    *,
    contrast: str = DEFAULT_CONTRAST,
    voxel_size_mm: Sequence[float] | None = None,
    pvs: PVSSettings | None = None,
) -> SyntheticSubject:
    """Generate one subject in memory; the anatomy does not depend on ``with_pvs`` or on the dataset size.

    The anatomy and the PVS (which are kept: those inside the 0.8 mm grid of ``shape``) depend on the seed and the
    number only; ``contrast`` changes the intensities, ``voxel_size_mm`` the grid (:mod:`scripts.data.demo.contrasts`).

    Args:
        number: subject number, 1-based (``sub-001`` is 1).
        seed: dataset seed.
        shape: grid shape in voxels at 0.8 mm (the field of view).
        with_pvs: draw perivascular spaces (else the mask is empty).
        contrast: ``T2w``, ``T1w`` or ``FLAIR``.
        voxel_size_mm: voxel size of the grid covering that field of view; None is
            :data:`~scripts.data.demo.grid.VOXEL_SIZE_MM`.
        pvs: how the PVS are drawn; None is the demo's (:class:`~scripts.data.demo.pvs.PVSSettings`).

    Returns:
        The subject's image, mask, affine and ground truth.

    Raises:
        ValueError: if an argument is out of range.
    """
    if isinstance(number, bool) or not isinstance(number, int | np.integer) or not 1 <= number <= 999:
        raise ValueError(f"number must be an int in [1, 999], not {number!r}")
    check_seed(seed)
    shape, table, voxel = check_shape(shape), check_contrast(contrast), check_voxel_size(voxel_size_mm)
    grid = acquired_shape(shape, VOXEL_SIZE_MM, voxel)
    warp_rng, pvs_rng, scan_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, number]).spawn(3))
    warp = random_warp(warp_rng)
    affine = grid_affine(grid, voxel)
    nominal = grid_affine(shape)
    tubes = tuple(t for t in draw_tubes(pvs_rng, warp, pvs) if inside_grid(t, nominal, shape)) if with_pvs else ()
    base = sample_template(template_image(table, voxel), template().world_to_voxel, warp, grid, 1, voxel)
    pv = partial_volume(tubes, affine, grid)
    image = acquire(scan_rng, base, pv, affine, table)
    mask = (pv >= 0.5).astype(np.int16)
    return SyntheticSubject(f"sub-{number:03d}", image, mask, affine, tubes, warp)


def empty_subjects(n_subjects: int, seed: int = 0) -> frozenset[int]:
    """Subject numbers (1-based) that get no PVS: about one in six, at least one when ``n_subjects >= 4``.

    Args:
        n_subjects: number of subjects in the dataset.
        seed: dataset seed.

    Returns:
        The subject numbers with an empty mask.

    Raises:
        ValueError: if an argument is out of range.
    """
    check_n_subjects(n_subjects)
    check_seed(seed)
    if n_subjects < 4:
        return frozenset()
    count = max(1, round(n_subjects / 6))
    chosen = np.random.default_rng([seed, 0]).choice(n_subjects, size=count, replace=False)
    return frozenset(int(i) + 1 for i in chosen)


def check_n_subjects(n_subjects: object) -> None:
    """Refuse a dataset size that is not an int in [1, 999] (subject ids have three digits).

    Raises:
        ValueError: if it is not.
    """
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, int | np.integer):
        raise ValueError(f"n_subjects must be an int, not {n_subjects!r}")
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be >= 1, not {n_subjects}")
    if n_subjects > 999:
        raise ValueError(f"n_subjects must be <= 999 (subject ids have three digits), not {n_subjects}")


def check_seed(seed: object) -> None:
    """Refuse a dataset seed that is not a non-negative int.

    Raises:
        ValueError: if it is not.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, not {seed!r}")
