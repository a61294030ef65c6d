"""The demo dataset: a synthetic PVS dataset in the BIDS layout of OpenNeuro ds005595, so the bundle can train offline.

Each subject (:mod:`scripts.data.demo.subject`) is the MNI152 2009 template warped per subject
(:mod:`~scripts.data.demo.anatomy`), with perivascular spaces drawn as CSF-bright capsules with partial volume
(:mod:`~scripts.data.demo.pvs`: in the white matter of the centrum semiovale and in the basal ganglia), then scanned:
bias field, global scaling and Rician noise (:mod:`~scripts.data.demo.scanner`). About one subject in six has no PVS.
``contrast="T1w"`` or ``"FLAIR"`` and ``voxel_size_mm`` give the same anatomy and PVS in another contrast or on
another grid (:mod:`~scripts.data.demo.contrasts`); the defaults give the same bytes as before they existed. The
files and their layout are those of :mod:`~scripts.data.demo.bids_files`, with a coarse parcellation
(:mod:`~scripts.data.demo.parcellation`).

A dataset is complete when its marker file (:data:`MARKER_NAME`, written last and atomically) is there; it records
the settings, so :func:`ensure_demo_dataset` reuses a dataset made with the same ones and regenerates any other.

Command line (from ``pvs_bundle/``, :mod:`scripts.data.demo_data`)::

    python -m scripts.data.demo_data --out_dir D --n_subjects 16 --seed 0 [--shape "[96,128,112]"]
        [--contrast T1w] [--voxel_size_mm "[1,1,1]"]
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from scripts.data.demo.bids_files import (
    DEMO_NAME,
    GENERATOR,
    GENERATOR_VERSION,
    PARCELLATION_DIR,
    write_dataset_files,
    write_participants,
    write_subject,
)
from scripts.data.demo.contrasts import DEFAULT_CONTRAST, check_contrast, check_voxel_size
from scripts.data.demo.grid import DEMO_SHAPE, check_shape
from scripts.data.demo.parcellation import parcellation
from scripts.data.demo.pvs import PVSSettings
from scripts.data.demo.subject import check_n_subjects, check_seed, empty_subjects, synthesize_subject
from scripts.io import atomic_write_json

logger = logging.getLogger("pvs_bundle.demo_data")

MARKER_NAME = ".pvs_demo_complete.json"

_SUBJECT_PATTERN = re.compile(r"sub-\d+")


def generate_dataset(
    out_dir: str | os.PathLike[str],
    n_subjects: int = 16,
    shape: Sequence[int] = DEMO_SHAPE,
    seed: int = 0,
    overwrite: bool = False,
    *,
    contrast: str = DEFAULT_CONTRAST,
    voxel_size_mm: Sequence[float] | None = None,
    pvs: PVSSettings | None = None,
) -> Path:
    """Write a synthetic ds005595-style dataset; the same arguments give byte-identical files.

    Writing into a previous demo dataset (or, with ``overwrite``, into any directory) first deletes its
    completion marker, its ``sub-*`` folders and ``derivatives/mask/sub-*`` folders; other files stay. Images are
    named after their contrast (``sub-001_T1w.nii.gz``); the marker and README.txt record a contrast and voxel size
    other than the defaults.

    Args:
        out_dir: dataset root; created if missing.
        n_subjects: number of subjects, 1 to 999 (``sub-001`` ...).
        shape: grid shape in voxels at 0.8 mm, the field of view (:data:`~scripts.data.demo.grid.FULL_SHAPE` is the
            real one).
        seed: dataset seed, a non-negative int.
        overwrite: allow writing into a non-empty directory that is not a demo dataset.
        contrast: ``T2w``, ``T1w`` or ``FLAIR`` (:mod:`scripts.data.demo.contrasts`).
        voxel_size_mm: voxel size of the grid covering that field of view; None is
            :data:`~scripts.data.demo.grid.VOXEL_SIZE_MM`.
        pvs: how the PVS are drawn (diameter median, count range); None is the demo's. Held-out data at settings
            a recipe was not tuned on; the marker records settings other than the default.

    Returns:
        The dataset root.

    Raises:
        ValueError: if an argument is out of range, ``out_dir`` is a file, or ``out_dir`` is a non-empty
            directory that is not a demo dataset and ``overwrite`` is false.
    """
    params = _params(n_subjects, shape, seed, contrast, voxel_size_mm, pvs)
    voxel = check_voxel_size(voxel_size_mm)
    root = Path(out_dir)
    _prepare_root(root, overwrite)
    logger.info("Writing %d synthetic subjects of shape %s (seed %d) to %s", n_subjects, params["shape"], seed, root)
    write_dataset_files(root, contrast, voxel)
    empty = empty_subjects(n_subjects, seed)
    numbers = range(1, n_subjects + 1)
    for number in numbers:
        subject = synthesize_subject(
            number,
            seed,
            params["shape"],
            with_pvs=number not in empty,
            contrast=contrast,
            voxel_size_mm=voxel,
            pvs=pvs,
        )
        write_subject(root, subject, contrast, parcellation(subject.warp, params["shape"], voxel_size_mm=voxel))
        logger.debug("%s: %d PVS in the field of view", subject.subject_id, len(subject.tubes))
    write_participants(root, seed, numbers)
    atomic_write_json(root / MARKER_NAME, params)
    logger.info("Demo dataset complete at %s (%d subjects without PVS: %s)", root, len(empty), sorted(empty))
    return root


def ensure_demo_dataset(
    out_dir: str | os.PathLike[str],
    n_subjects: int = 16,
    shape: Sequence[int] = DEMO_SHAPE,
    seed: int = 0,
    *,
    contrast: str = DEFAULT_CONTRAST,
    voxel_size_mm: Sequence[float] | None = None,
) -> str:
    """Return a complete demo dataset at ``out_dir``, generating it unless one with these parameters is there.

    A dataset is complete when its marker file (:data:`MARKER_NAME`, written last and atomically) records
    the same parameters; an interrupted generation or one made with other parameters is regenerated.

    Args:
        out_dir: dataset root.
        n_subjects: number of subjects.
        shape: grid shape in voxels at 0.8 mm.
        seed: dataset seed.
        contrast: image contrast.
        voxel_size_mm: voxel size; None is :data:`~scripts.data.demo.grid.VOXEL_SIZE_MM`.

    Returns:
        ``out_dir`` as a string.

    Raises:
        ValueError: if an argument is out of range or ``out_dir`` holds something that is not a demo dataset.
    """
    params = _params(n_subjects, shape, seed, contrast, voxel_size_mm)
    root = Path(out_dir)
    recorded = _read_marker(root)
    if recorded == params:
        logger.info("Reusing the demo dataset at %s", root)
        return str(root)
    if recorded is not None:
        logger.warning("Demo dataset at %s was made with %s; regenerating with %s", root, recorded, params)
    elif root.is_dir() and any(root.iterdir()):
        logger.warning("Demo dataset at %s has no completion marker; regenerating it", root)
    generate_dataset(root, n_subjects, params["shape"], seed, contrast=contrast, voxel_size_mm=voxel_size_mm)
    return str(root)


def main(
    out_dir: str,
    n_subjects: int = 16,
    seed: int = 0,
    shape: Sequence[int] = DEMO_SHAPE,
    overwrite: bool = False,
    contrast: str = DEFAULT_CONTRAST,
    voxel_size_mm: Sequence[float] | None = None,
) -> str:
    """Command line: write a demo dataset and print its path.

    Args:
        out_dir: dataset root.
        n_subjects: number of subjects.
        seed: dataset seed.
        shape: grid shape, e.g. ``"[96,128,112]"``.
        overwrite: allow writing into a non-empty directory that is not a demo dataset.
        contrast: ``T2w``, ``T1w`` or ``FLAIR``.
        voxel_size_mm: voxel size, e.g. ``"[1,1,1]"``; None is :data:`~scripts.data.demo.grid.VOXEL_SIZE_MM`.

    Returns:
        The dataset root.

    Raises:
        ValueError: as :func:`generate_dataset`.
    """
    return str(
        generate_dataset(out_dir, n_subjects, shape, seed, overwrite, contrast=contrast, voxel_size_mm=voxel_size_mm)
    )


def _params(
    n_subjects: int,
    shape: Sequence[int],
    seed: int,
    contrast: str,
    voxel_size_mm: Sequence[float] | None,
    pvs: PVSSettings | None = None,
) -> dict:
    """The marker's record; a contrast or voxel size other than the default is added (so defaults match old markers)."""
    check_n_subjects(n_subjects)
    check_seed(seed)
    check_contrast(contrast)
    voxel = check_voxel_size(voxel_size_mm)
    params = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "n_subjects": int(n_subjects),
        "shape": list(check_shape(shape)),
        "seed": int(seed),
    }
    if contrast != DEFAULT_CONTRAST:
        params["contrast"] = contrast
    if voxel is not None:
        params["voxel_size_mm"] = list(voxel)
    if pvs is not None and not pvs.is_default:
        params["pvs"] = {"diameter_median_mm": float(pvs.diameter_median_mm), "count_range": list(pvs.count_range)}
    return params


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_demo_dataset(root: Path) -> bool:
    if (root / MARKER_NAME).is_file():
        return True
    try:
        return json.loads((root / "dataset_description.json").read_text(encoding="utf-8")).get("Name") == DEMO_NAME
    except (OSError, ValueError, AttributeError):
        return False


def _prepare_root(root: Path, overwrite: bool) -> None:
    """Make ``root`` ready for a new dataset, refusing to touch a foreign non-empty directory."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"out_dir must be a directory, not a file: {root}")
    if root.is_dir() and any(root.iterdir()) and not overwrite and not _is_demo_dataset(root):
        raise ValueError(
            f"out_dir {root} is not empty and is not a pvs_bundle demo dataset; "
            "choose an empty or new directory, or pass overwrite=True to write into it."
        )
    (root / MARKER_NAME).unlink(missing_ok=True)
    for parent in (root, root / "derivatives" / "mask", root / PARCELLATION_DIR):
        if parent.is_dir():
            for child in parent.iterdir():
                if child.is_dir() and _SUBJECT_PATTERN.fullmatch(child.name):
                    shutil.rmtree(child)
    root.mkdir(parents=True, exist_ok=True)
