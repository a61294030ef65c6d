"""Synthetic PVS dataset in the BIDS layout of OpenNeuro ds005595, so the bundle can train offline.

Anatomy comes from the MNI152 2009 tissue maps that ship inside nilearn (no network): CSF, grey and
white matter are mixed into a T2-like contrast (CSF bright, GM middle, WM dark) with a CSF rim, skull
and scalp around the brain. Each subject's 0.8 mm grid is sampled from the 1 mm template through a
small random affine and a smooth random deformation (one interpolation), then perivascular spaces are
drawn as CSF-bright capsules with partial volume, and a bias field, a global scaling and Rician noise
are applied. PVS lie in the white matter of the centrum semiovale (running radially from the brain
centre) and in the basal ganglia (running roughly vertically); about one subject in six has none.
``contrast="T1w"`` or ``"FLAIR"`` and ``voxel_size_mm`` give the same anatomy and PVS in another contrast or on
another grid (:mod:`scripts.data.demo_contrasts`); the defaults give the same bytes as before they existed.

Layout written (names exactly as in ds005595)::

    dataset_description.json  participants.json  participants.tsv  README.txt
    sub-001/anat/sub-001_T2w.nii.gz (+ .json sidecar)
    derivatives/mask/sub-001/sub-001_desc-mask_PVS.nii.gz (+ .json sidecar)
    derivatives/synthseg/dataset_description.json
    derivatives/synthseg/sub-001/anat/sub-001_desc-synthseg_dseg.nii.gz

The parcellation (not part of ds005595) is in FreeSurferColorLUT numbers, like SynthSeg's output: the template's
tissue classes split by hemisphere (cerebral white matter 2/41, cortex 3/42, CSF 24); the grey and white matter of
the box where basal ganglia PVS are drawn, grown by 6 mm, is putamen 12/51 (so the demo's regions match how its
PVS were drawn); grey matter in boxes in MNI space is thalamus 10/49 and hippocampus 17/53; the cerebellum (7/46,
8/47) and brainstem (16) lie below. It is coarse anatomy for exercising the regional
measurements end to end, not a real segmentation. Writing it does not change the images and masks: a seed gives
the same bytes as before it existed.

Command line (from ``pvs_bundle/``)::

    python -m scripts.data.demo_data --out_dir D --n_subjects 16 --seed 0 [--shape "[96,128,112]"]
        [--contrast T1w] [--voxel_size_mm "[1,1,1]"]
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.distance import cdist

from scripts.data.demo_contrasts import (
    DEFAULT_CONTRAST,
    Contrast,
    TissueFractions,
    acquired_shape,
    check_contrast,
    check_voxel_size,
    resolution_blur_mm,
)
from scripts.io import atomic_write_json

logger = logging.getLogger("pvs_bundle.demo_data")

DEMO_SHAPE: tuple[int, int, int] = (96, 128, 112)
"""Demo field of view: 76.8 x 102.4 x 89.6 mm around the basal ganglia and the centrum semiovale."""
FULL_SHAPE: tuple[int, int, int] = (208, 300, 320)
"""The grid of every ds005595 image."""
VOXEL_SIZE_MM: tuple[float, float, float] = (0.799998, 0.8, 0.8)
REPETITION_TIME_S = 3.2
FOV_CENTRE_MM: tuple[float, float, float] = (0.0, -17.0, 15.0)
"""MNI point at the centre of every grid, whatever its shape."""
BRAIN_CENTRE_MM: tuple[float, float, float] = (0.0, -18.0, 5.0)
"""Origin from which centrum semiovale PVS run radially."""
CENTRUM_SEMIOVALE_BOX_MM: tuple[tuple[float, float], ...] = ((-45.0, 45.0), (-70.0, 45.0), (20.0, 55.0))
"""Where centrum semiovale PVS centres are drawn (x, y, z ranges in MNI mm)."""
BASAL_GANGLIA_BOX_MM: tuple[tuple[float, float], ...] = ((12.0, 30.0), (-12.0, 20.0), (-8.0, 12.0))
"""Where basal ganglia PVS centres are drawn: |x|, y and z ranges in MNI mm (both hemispheres)."""
DIAMETER_RANGE_MM = (0.5, 3.0)
LENGTH_RANGE_MM = (2.0, 20.0)
TISSUE_LABELS = {"csf": 1, "gm": 2, "wm": 3}
"""Classes returned by :func:`tissue_labels`; 0 is outside the brain."""
MARKER_NAME = ".pvs_demo_complete.json"
DEMO_NAME = "Synthetic perivascular space demo dataset mirroring OpenNeuro ds005595 (not real data)"
GENERATOR_VERSION = 2
"""2: adds the parcellation under derivatives/synthseg (images and masks unchanged)."""
PARCELLATION_DIR = "derivatives/synthseg"
PARCELLATION_SUFFIX = "_desc-synthseg_dseg.nii.gz"

_CONTROL_SPACING_MM = 20.0
_CONTROL_BOX_MM = ((-100.0, 100.0), (-160.0, 120.0), (-140.0, 160.0))
_COARSE_SPACING_MM = 4.0
_DEFORMATION_RMS_MM = 2.0
_FULL_BRAIN_PVS = (20, 110)
_CSO_FRACTION = 0.6
_MAX_TILT_DEG = 15.0
_TUBE_GAP_MM = 1.8
_BATCH = 64
_BG_MARGIN_MM = 8.0
_MAX_BATCHES = 40
_SLAB = 16
_SUBJECT_PATTERN = re.compile(r"sub-\d+")
_DEEP_GREY_BOXES_MM: tuple[tuple[int, int, tuple[tuple[float, float], ...]], ...] = (
    (10, 49, ((2.0, 22.0), (-38.0, -19.0), (-4.0, 18.0))),
    (17, 53, ((18.0, 40.0), (-42.0, -8.0), (-28.0, -15.0))),
)
"""(left label, right label, (|x|, y, z) MNI ranges): grey matter inside becomes thalamus, hippocampus."""
_PUTAMEN_MARGIN_MM = 6.0
"""Margin around :data:`BASAL_GANGLIA_BOX_MM` whose grey and white matter become putamen (12/51)."""
_PARTICIPANTS_JSON = {
    "participant_id": {
        "Description": "Unique identifier for each participant.",
        "LongName": "Participant ID",
        "Units": "n/a",
    },
    "age": {
        "Description": "Age of the participant at the time of data collection.",
        "LongName": "Age",
        "Units": "years",
        "DataType": "float",
    },
    "sex": {
        "Description": "Biological sex of the participant.",
        "LongName": "Sex",
        "Levels": {"M": "Male", "F": "Female"},
    },
}
_README = """\
Synthetic demo data for pvs_bundle: NOT real MRI.

It mirrors the layout and metadata format of OpenNeuro ds005595 ("Precise perivascular space segmentation
on T2-weighted magnetic resonance imaging from Human Connectome Project-Aging", Chai et al.,
doi:10.18112/openneuro.ds005595.v1.0.0), whose authors did not make or check it.
Images are {images} drawn from the MNI ICBM152 2009 templates shipped with nilearn, with
synthetic perivascular spaces and their masks; participants are synthetic too.
Regenerate with: cd pvs_bundle && python -m scripts.data.demo_data --out_dir DIR{options}

MNI ICBM152 2009 templates (Fonov et al., NeuroImage 2011): Copyright (C) 1993-2009 Louis Collins,
McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill University."""


@dataclasses.dataclass(frozen=True)
class Tube:
    """One synthetic perivascular space: a capsule in subject world coordinates (RAS mm).

    Attributes:
        start_mm: centre of the first end cap.
        end_mm: centre of the second end cap.
        diameter_mm: capsule diameter.
        region: ``"centrum_semiovale"`` or ``"basal_ganglia"``.
    """

    start_mm: tuple[float, float, float]
    end_mm: tuple[float, float, float]
    diameter_mm: float
    region: str

    @property
    def length_mm(self) -> float:
        """Total length, end caps included."""
        return float(np.linalg.norm(np.subtract(self.end_mm, self.start_mm))) + self.diameter_mm


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
class SyntheticSubject:
    """One generated subject, with its ground truth.

    Attributes:
        subject_id: ``sub-XXX``.
        image: int16 volume in the subject's contrast.
        mask: int16 PVS mask (0/1), ``pv >= 0.5``.
        affine: RAS voxel-to-world matrix of both volumes.
        tubes: the PVS drawn inside this field of view.
        warp: the subject's anatomy transform (see :func:`tissue_labels`).
    """

    subject_id: str
    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    tubes: tuple[Tube, ...]
    warp: SubjectWarp


@dataclasses.dataclass(frozen=True, eq=False)
class _Template:
    world_to_voxel: np.ndarray
    t2: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    labels: np.ndarray
    fractions: TissueFractions


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
    shape = _checked_shape(shape)
    size = np.array(check_voxel_size(voxel_size_mm) or VOXEL_SIZE_MM)
    affine = np.diag([*size, 1.0])
    affine[:3, 3] = np.array(FOV_CENTRE_MM) - size * (np.array(shape) - 1) / 2
    return affine


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
    _check_n_subjects(n_subjects)
    _check_seed(seed)
    if n_subjects < 4:
        return frozenset()
    count = max(1, round(n_subjects / 6))
    chosen = np.random.default_rng([seed, 0]).choice(n_subjects, size=count, replace=False)
    return frozenset(int(i) + 1 for i in chosen)


def synthesize_subject(
    number: int,
    seed: int = 0,
    shape: Sequence[int] = DEMO_SHAPE,
    with_pvs: bool = True,
    *,
    contrast: str = DEFAULT_CONTRAST,
    voxel_size_mm: Sequence[float] | None = None,
) -> SyntheticSubject:
    """Generate one subject in memory; the anatomy does not depend on ``with_pvs`` or on the dataset size.

    The anatomy and the PVS (which are kept: those inside the 0.8 mm grid of ``shape``) depend on the seed and the
    number only; ``contrast`` changes the intensities, ``voxel_size_mm`` the grid (:mod:`scripts.data.demo_contrasts`).

    Args:
        number: subject number, 1-based (``sub-001`` is 1).
        seed: dataset seed.
        shape: grid shape in voxels at 0.8 mm (the field of view).
        with_pvs: draw perivascular spaces (else the mask is empty).
        contrast: ``T2w``, ``T1w`` or ``FLAIR``.
        voxel_size_mm: voxel size of the grid covering that field of view; None is :data:`VOXEL_SIZE_MM`.

    Returns:
        The subject's image, mask, affine and ground truth.

    Raises:
        ValueError: if an argument is out of range.
    """
    if isinstance(number, bool) or not isinstance(number, int | np.integer) or not 1 <= number <= 999:
        raise ValueError(f"number must be an int in [1, 999], not {number!r}")
    _check_seed(seed)
    shape, table, voxel = _checked_shape(shape), check_contrast(contrast), check_voxel_size(voxel_size_mm)
    grid = acquired_shape(shape, VOXEL_SIZE_MM, voxel)
    warp_rng, pvs_rng, scan_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, number]).spawn(3))
    warp = _random_warp(warp_rng)
    affine = grid_affine(grid, voxel)
    nominal = grid_affine(shape)
    tubes = tuple(t for t in _draw_tubes(pvs_rng, warp) if _inside_grid(t, nominal, shape)) if with_pvs else ()
    template = _template()
    base = _sample_template(_template_image(table, voxel), template.world_to_voxel, warp, grid, 1, voxel)
    pv = _partial_volume(tubes, affine, grid)
    image = _acquire(scan_rng, base, pv, affine, table)
    mask = (pv >= 0.5).astype(np.int16)
    return SyntheticSubject(f"sub-{number:03d}", image, mask, affine, tubes, warp)


def tissue_labels(
    warp: SubjectWarp, shape: Sequence[int] = DEMO_SHAPE, *, voxel_size_mm: Sequence[float] | None = None
) -> np.ndarray:
    """Template tissue classes (:data:`TISSUE_LABELS`, 0 outside the brain) in a subject's grid.

    Args:
        warp: the subject's transform, from :attr:`SyntheticSubject.warp`.
        shape: the grid shape (at 0.8 mm) the subject was generated with.
        voxel_size_mm: the voxel size it was generated with.

    Returns:
        A uint8 volume of the subject's grid shape.

    Raises:
        ValueError: if ``shape`` is not three positive ints or ``voxel_size_mm`` is out of range.
    """
    template = _template()
    voxel = check_voxel_size(voxel_size_mm)
    grid = acquired_shape(_checked_shape(shape), VOXEL_SIZE_MM, voxel)
    return _sample_template(template.labels, template.world_to_voxel, warp, grid, 0, voxel)


def parcellation(
    warp: SubjectWarp, shape: Sequence[int] = DEMO_SHAPE, *, voxel_size_mm: Sequence[float] | None = None
) -> np.ndarray:
    """A coarse parcellation in FreeSurferColorLUT numbers in a subject's grid (see the module docstring).

    Args:
        warp: the subject's transform, from :attr:`SyntheticSubject.warp`.
        shape: the grid shape (at 0.8 mm) the subject was generated with.
        voxel_size_mm: the voxel size it was generated with.

    Returns:
        An int16 label volume of the subject's grid shape.

    Raises:
        ValueError: if ``shape`` is not three positive ints or ``voxel_size_mm`` is out of range.
    """
    template = _template()
    voxel = check_voxel_size(voxel_size_mm)
    grid = acquired_shape(_checked_shape(shape), VOXEL_SIZE_MM, voxel)
    return _sample_template(_template_parcellation(), template.world_to_voxel, warp, grid, 0, voxel)


def generate_dataset(
    out_dir: str | os.PathLike[str],
    n_subjects: int = 16,
    shape: Sequence[int] = DEMO_SHAPE,
    seed: int = 0,
    overwrite: bool = False,
    *,
    contrast: str = DEFAULT_CONTRAST,
    voxel_size_mm: Sequence[float] | None = None,
) -> Path:
    """Write a synthetic ds005595-style dataset; the same arguments give byte-identical files.

    Writing into a previous demo dataset (or, with ``overwrite``, into any directory) first deletes its
    completion marker, its ``sub-*`` folders and ``derivatives/mask/sub-*`` folders; other files stay. Images are
    named after their contrast (``sub-001_T1w.nii.gz``); the marker and README.txt record a contrast and voxel size
    other than the defaults.

    Args:
        out_dir: dataset root; created if missing.
        n_subjects: number of subjects, 1 to 999 (``sub-001`` ...).
        shape: grid shape in voxels at 0.8 mm, the field of view (:data:`FULL_SHAPE` is the real one).
        seed: dataset seed, a non-negative int.
        overwrite: allow writing into a non-empty directory that is not a demo dataset.
        contrast: ``T2w``, ``T1w`` or ``FLAIR`` (:mod:`scripts.data.demo_contrasts`).
        voxel_size_mm: voxel size of the grid covering that field of view; None is :data:`VOXEL_SIZE_MM`.

    Returns:
        The dataset root.

    Raises:
        ValueError: if an argument is out of range, ``out_dir`` is a file, or ``out_dir`` is a non-empty
            directory that is not a demo dataset and ``overwrite`` is false.
    """
    params = _params(n_subjects, shape, seed, contrast, voxel_size_mm)
    settings = {"contrast": contrast, "voxel_size_mm": check_voxel_size(voxel_size_mm)}
    root = Path(out_dir)
    _prepare_root(root, overwrite)
    logger.info("Writing %d synthetic subjects of shape %s (seed %d) to %s", n_subjects, params["shape"], seed, root)
    _write_text(root / "dataset_description.json", json.dumps(_dataset_description(), indent=4))
    _write_text(root / "README.txt", _readme(**settings))
    _write_text(root / "participants.json", json.dumps(_PARTICIPANTS_JSON, indent=4))
    _write_text(root / PARCELLATION_DIR / "dataset_description.json", json.dumps(_parcellation_description(), indent=4))
    empty = empty_subjects(n_subjects, seed)
    rows = ["participant_id\tage\tsex"]
    for number in range(1, n_subjects + 1):
        subject = synthesize_subject(number, seed, params["shape"], with_pvs=number not in empty, **settings)
        sid = subject.subject_id
        _write_nifti(root / sid / "anat" / f"{sid}_{contrast}.nii.gz", subject.image, subject.affine)
        _write_nifti(root / "derivatives" / "mask" / sid / f"{sid}_desc-mask_PVS.nii.gz", subject.mask, subject.affine)
        _write_nifti(
            root / PARCELLATION_DIR / sid / "anat" / f"{sid}{PARCELLATION_SUFFIX}",
            parcellation(subject.warp, params["shape"], voxel_size_mm=settings["voxel_size_mm"]),
            subject.affine,
            sidecar=False,
        )
        rows.append("\t".join([sid, *_participant(seed, number)]))
        logger.debug("%s: %d PVS in the field of view", sid, len(subject.tubes))
    _write_text(root / "participants.tsv", "\r\n".join(rows))
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
        voxel_size_mm: voxel size; None is :data:`VOXEL_SIZE_MM`.

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
        voxel_size_mm: voxel size, e.g. ``"[1,1,1]"``; None is :data:`VOXEL_SIZE_MM`.

    Returns:
        The dataset root.

    Raises:
        ValueError: as :func:`generate_dataset`.
    """
    return str(
        generate_dataset(out_dir, n_subjects, shape, seed, overwrite, contrast=contrast, voxel_size_mm=voxel_size_mm)
    )


# --- validation -------------------------------------------------------------------------------------


def _check_n_subjects(n_subjects: object) -> None:
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, int | np.integer):
        raise ValueError(f"n_subjects must be an int, not {n_subjects!r}")
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be >= 1, not {n_subjects}")
    if n_subjects > 999:
        raise ValueError(f"n_subjects must be <= 999 (subject ids have three digits), not {n_subjects}")


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, not {seed!r}")


def _checked_shape(shape: object) -> tuple[int, int, int]:
    ok = (
        isinstance(shape, Sequence | np.ndarray)
        and not isinstance(shape, str)
        and len(shape) == 3
        and all(isinstance(s, int | np.integer) and not isinstance(s, bool) and s > 0 for s in shape)
    )
    if not ok:
        raise ValueError(f"shape must be three positive ints, not {shape!r}")
    return tuple(int(s) for s in shape)


def _params(
    n_subjects: int, shape: Sequence[int], seed: int, contrast: str, voxel_size_mm: Sequence[float] | None
) -> dict:
    """The marker's record; a contrast or voxel size other than the default is added (so defaults match old markers)."""
    _check_n_subjects(n_subjects)
    _check_seed(seed)
    check_contrast(contrast)
    voxel = check_voxel_size(voxel_size_mm)
    params = {
        "generator": "pvs_bundle scripts.data.demo_data",
        "generator_version": GENERATOR_VERSION,
        "n_subjects": int(n_subjects),
        "shape": list(_checked_shape(shape)),
        "seed": int(seed),
    }
    if contrast != DEFAULT_CONTRAST:
        params["contrast"] = contrast
    if voxel is not None:
        params["voxel_size_mm"] = list(voxel)
    return params


# --- anatomy ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _template() -> _Template:
    """T2-like intensities and tissue maps on the 1 mm MNI152 2009 grid, built once per process."""
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
    voxel_mm = tuple(float(v) for v in t1.header.get_zooms()[:3])
    fractions = TissueFractions(csf, gm, wm, brain_fraction, outside_mm, voxel_mm)
    t2 = fractions.image(check_contrast(DEFAULT_CONTRAST))
    labels = np.where(brain_fraction >= 0.5, np.argmax(np.stack([csf, gm, wm]), axis=0) + 1, 0).astype(np.uint8)
    return _Template(np.linalg.inv(t1.affine), t2, gm, wm, labels, fractions)


@functools.lru_cache(maxsize=2)
def _template_image(contrast: Contrast, voxel_size_mm: tuple[float, float, float] | None) -> np.ndarray:
    """The 1 mm template in a contrast, pre-filtered for a voxel size (:mod:`scripts.data.demo_contrasts`)."""
    if contrast.name == DEFAULT_CONTRAST and voxel_size_mm is None:
        return _template().t2
    return _template().fractions.image(contrast, resolution_blur_mm(voxel_size_mm or VOXEL_SIZE_MM, VOXEL_SIZE_MM))


@functools.lru_cache(maxsize=1)
def _template_parcellation() -> np.ndarray:
    """The template's tissue classes as FreeSurferColorLUT labels on the 1 mm MNI grid, built once per process."""
    template = _template()
    index = np.indices(template.labels.shape, dtype=np.float32)
    voxel_to_world = np.linalg.inv(template.world_to_voxel)
    x, y, z = (sum(voxel_to_world[a, b] * index[b] for b in range(3)) + voxel_to_world[a, 3] for a in range(3))
    left = x < 0
    classes = template.labels
    out = np.zeros(classes.shape, dtype=np.int16)
    out[classes == TISSUE_LABELS["csf"]] = 24
    out[classes == TISSUE_LABELS["wm"]] = np.where(left, 2, 41)[classes == TISSUE_LABELS["wm"]]
    grey = classes == TISSUE_LABELS["gm"]
    out[grey] = np.where(left, 3, 42)[grey]
    grown = tuple((lo - _PUTAMEN_MARGIN_MM, hi + _PUTAMEN_MARGIN_MM) for lo, hi in BASAL_GANGLIA_BOX_MM)
    putamen = (grey | (classes == TISSUE_LABELS["wm"])) & _in_box(np.abs(x), y, z, grown)
    out[putamen] = np.where(left, 12, 51)[putamen]
    for left_label, right_label, box in _DEEP_GREY_BOXES_MM:
        inside = grey & _in_box(np.abs(x), y, z, box)
        out[inside] = np.where(left, left_label, right_label)[inside]
    hindbrain = (classes > 0) & (z < -18) & (y < -30)
    out[hindbrain & (np.abs(x) >= 8)] = np.where(left, np.where(grey, 8, 7), np.where(grey, 47, 46))[
        hindbrain & (np.abs(x) >= 8)
    ]
    out[hindbrain & (np.abs(x) < 8)] = 16
    return out


def _in_box(x: np.ndarray, y: np.ndarray, z: np.ndarray, box: tuple[tuple[float, float], ...]) -> np.ndarray:
    (x0, x1), (y0, y1), (z0, z1) = box
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & (z >= z0) & (z <= z1)


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


def _random_warp(rng: np.random.Generator) -> SubjectWarp:
    scale = np.diag(rng.uniform(0.95, 1.05, size=3))
    angles = np.deg2rad(rng.uniform(-3.0, 3.0, size=3))
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        a, b = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[a, a] = r[b, b] = np.cos(angle)
        r[a, b], r[b, a] = -np.sin(angle), np.sin(angle)
        rotation = rotation @ r
    n_control = [len(np.arange(lo, hi + 1e-6, _CONTROL_SPACING_MM)) for lo, hi in _CONTROL_BOX_MM]
    coefficients = rng.normal(0.0, _DEFORMATION_RMS_MM / np.sqrt(3), size=(*n_control, 3))
    coarse_axes = [np.arange(lo, hi + 1e-6, _COARSE_SPACING_MM) for lo, hi in _CONTROL_BOX_MM]
    return SubjectWarp(rotation @ scale, coefficients, _displacement(coefficients, *coarse_axes))


def _warp_points(warp: SubjectWarp, points: np.ndarray) -> np.ndarray:
    """Template world coordinates (P, 3) of subject world points (P, 3)."""
    lows = np.array([lo for lo, _ in _CONTROL_BOX_MM])
    index = ((points - lows) / _COARSE_SPACING_MM).T
    field = np.stack(
        [ndimage.map_coordinates(warp.coarse_field[..., c], index, order=1, mode="nearest") for c in range(3)], axis=1
    )
    centre = np.array(BRAIN_CENTRE_MM)
    return centre + (points - centre) @ warp.matrix.T + field


def _sample_template(
    volume: np.ndarray,
    world_to_voxel: np.ndarray,
    warp: SubjectWarp,
    shape: tuple[int, int, int],
    order: int,
    voxel_size_mm: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Resample a template volume into a subject grid through ``warp``, in slabs to bound memory."""
    axes = _grid_axes(shape, voxel_size_mm)
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


@functools.lru_cache(maxsize=8)
def _grid_axes(
    shape: tuple[int, int, int], voxel_size_mm: tuple[float, float, float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    affine = grid_affine(shape, voxel_size_mm)
    return tuple(affine[a, a] * np.arange(shape[a]) + affine[a, 3] for a in range(3))


# --- perivascular spaces -----------------------------------------------------------------------------


def _draw_tubes(rng: np.random.Generator, warp: SubjectWarp) -> list[Tube]:
    """Whole-brain PVS for one subject, in subject world coordinates, none touching another."""
    n_total = int(rng.integers(_FULL_BRAIN_PVS[0], _FULL_BRAIN_PVS[1] + 1))
    n_cso = round(n_total * _CSO_FRACTION)
    tubes: list[Tube] = []
    centrelines, radii = np.empty((0, 3)), np.empty(0)
    for region, wanted in (("centrum_semiovale", n_cso), ("basal_ganglia", n_total - n_cso)):
        target = len(tubes) + wanted
        for _ in range(_MAX_BATCHES):
            for tube, points in _valid_candidates(rng, warp, region):
                radius = tube.diameter_mm / 2
                if (
                    len(tubes) == target
                    or (cdist(points, centrelines) - radius - radii).min(initial=np.inf) < _TUBE_GAP_MM
                ):
                    continue
                tubes.append(tube)
                centrelines = np.concatenate([centrelines, points])
                radii = np.concatenate([radii, np.full(len(points), radius)])
            if len(tubes) == target:
                break
    return tubes


def _valid_candidates(rng: np.random.Generator, warp: SubjectWarp, region: str) -> list[tuple[Tube, np.ndarray]]:
    """Draw a batch of candidate tubes of a region; keep those lying wholly in its tissue, with their centreline."""
    diameters = np.clip(rng.lognormal(np.log(1.5), 0.35, size=_BATCH), *DIAMETER_RANGE_MM)
    lengths = np.maximum(np.exp(rng.uniform(*np.log(LENGTH_RANGE_MM), size=_BATCH)), diameters + 0.8)
    box = np.array(CENTRUM_SEMIOVALE_BOX_MM if region == "centrum_semiovale" else BASAL_GANGLIA_BOX_MM)
    centres = rng.uniform(box[:, 0], box[:, 1], size=(_BATCH, 3))
    if region == "centrum_semiovale":
        axes = centres - np.array(BRAIN_CENTRE_MM)
    else:
        centres[:, 0] *= rng.choice([-1.0, 1.0], size=_BATCH)
        axes = np.tile([0.0, 0.0, 1.0], (_BATCH, 1))
    directions = _tilted(rng, axes / np.linalg.norm(axes, axis=1, keepdims=True), _MAX_TILT_DEG)
    steps = np.linspace(-0.5, 0.5, 25)[None, :, None] * lengths[:, None, None]
    centreline = centres[:, None, :] + steps * directions[:, None, :]
    points = _with_surface_lines(centreline, directions, diameters / 2)
    gm, wm = _template_fractions(warp, points)
    if region == "centrum_semiovale":
        valid = (wm >= 0.5).all(axis=1)
    else:
        grown = box + np.array([-_BG_MARGIN_MM, _BG_MARGIN_MM])
        mirrored = np.concatenate([np.abs(points[..., :1]), points[..., 1:]], axis=-1)
        inside = ((mirrored >= grown[:, 0]) & (mirrored <= grown[:, 1])).all(axis=(1, 2))
        valid = ((gm + wm) >= 0.9).all(axis=1) & inside & (gm[:, 0] >= 0.3)
    half = ((lengths - diameters) / 2)[:, None] * directions
    return [
        (Tube(_point(centres[k] - half[k]), _point(centres[k] + half[k]), float(diameters[k]), region), centreline[k])
        for k in np.flatnonzero(valid)
    ]


def _point(vector: np.ndarray) -> tuple[float, float, float]:
    return float(vector[0]), float(vector[1]), float(vector[2])


def _with_surface_lines(centreline: np.ndarray, directions: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Points (n, 5 * m, 3): each centreline (n, m, 3) and four parallel lines on the tube's surface."""
    side_a = np.cross(directions, _least_aligned(directions))
    side_a /= np.linalg.norm(side_a, axis=1, keepdims=True)
    side_b = np.cross(directions, side_a)
    offsets = [np.zeros_like(side_a), side_a, -side_a, side_b, -side_b]
    lines = [centreline + (o * radii[:, None])[:, None, :] for o in offsets]
    return np.concatenate(lines, axis=1)


def _template_fractions(warp: SubjectWarp, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Template GM and WM fractions at subject world points (n, m, 3), each (n, m)."""
    template = _template()
    world = _warp_points(warp, points.reshape(-1, 3))
    voxels = world @ template.world_to_voxel[:3, :3].T + template.world_to_voxel[:3, 3]
    return tuple(
        ndimage.map_coordinates(m, voxels.T, order=1).reshape(points.shape[:2]) for m in (template.gm, template.wm)
    )


def _least_aligned(directions: np.ndarray) -> np.ndarray:
    """For each unit vector, the coordinate axis least aligned with it."""
    return np.eye(3)[np.argmin(np.abs(directions), axis=1)]


def _tilted(rng: np.random.Generator, axes: np.ndarray, max_deg: float) -> np.ndarray:
    """Unit vectors within ``max_deg`` of the unit ``axes`` (uniform over the cap's area)."""
    perpendicular = rng.normal(size=axes.shape)
    perpendicular -= (perpendicular * axes).sum(axis=1, keepdims=True) * axes
    perpendicular /= np.linalg.norm(perpendicular, axis=1, keepdims=True)
    cos_max = np.cos(np.deg2rad(max_deg))
    cos_tilt = rng.uniform(cos_max, 1.0, size=(len(axes), 1))
    return cos_tilt * axes + np.sqrt(1 - cos_tilt**2) * perpendicular


def _inside_grid(tube: Tube, affine: np.ndarray, shape: tuple[int, int, int]) -> bool:
    """Whether the whole capsule, plus one voxel, lies inside the grid."""
    ends = np.array([tube.start_mm, tube.end_mm])
    lo = (ends.min(axis=0) - tube.diameter_mm / 2 - affine[:3, 3]) / np.diag(affine)[:3]
    hi = (ends.max(axis=0) + tube.diameter_mm / 2 - affine[:3, 3]) / np.diag(affine)[:3]
    return bool((lo >= 1).all() and (hi <= np.array(shape) - 2).all())


def _partial_volume(tubes: Sequence[Tube], affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Fraction of each voxel filled by PVS: a linear ramp over one voxel across each capsule's surface."""
    pv = np.zeros(shape, dtype=np.float32)
    size = np.diag(affine)[:3]
    ramp = float(size.mean())
    for tube in tubes:
        start, end = np.array(tube.start_mm), np.array(tube.end_mm)
        radius = tube.diameter_mm / 2
        lo = np.floor((np.minimum(start, end) - radius - affine[:3, 3]) / size).astype(int) - 1
        hi = np.ceil((np.maximum(start, end) + radius - affine[:3, 3]) / size).astype(int) + 2
        lo, hi = np.maximum(lo, 0), np.minimum(hi, shape)
        grid = np.stack(
            np.meshgrid(*[affine[a, 3] + size[a] * np.arange(lo[a], hi[a]) for a in range(3)], indexing="ij"), axis=-1
        )
        segment = end - start
        t = np.clip(((grid - start) @ segment) / max(float(segment @ segment), 1e-12), 0.0, 1.0)
        distance = np.linalg.norm(grid - (start + t[..., None] * segment), axis=-1)
        box = tuple(slice(lo[a], hi[a]) for a in range(3))
        pv[box] = np.maximum(pv[box], np.clip((radius - distance) / ramp + 0.5, 0.0, 1.0))
    return pv


# --- acquisition ------------------------------------------------------------------------------------


def _acquire(
    rng: np.random.Generator, base: np.ndarray, pv: np.ndarray, affine: np.ndarray, contrast: Contrast
) -> np.ndarray:
    """PVS partial volume (toward CSF), contrast jitter, bias field, global scale and Rician noise; int16 output."""
    signal = base + pv * (contrast.csf - base)
    reference = contrast.reference
    signal = reference * (np.maximum(signal, 0.0) / reference) ** np.float32(rng.uniform(0.9, 1.1))
    signal *= _bias_field(rng, affine, base.shape) * np.float32(rng.uniform(0.85, 1.25))
    sigma = np.float32(rng.uniform(*contrast.noise_sigma))
    real = signal + sigma * rng.standard_normal(base.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(base.shape, dtype=np.float32)
    return np.clip(np.rint(np.hypot(real, imaginary)), 0, np.iinfo(np.int16).max).astype(np.int16)


def _bias_field(rng: np.random.Generator, affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth multiplicative field: exp of a random quadratic polynomial of position (about +-15 %)."""
    u = [
        ((affine[a, a] * np.arange(shape[a]) + affine[a, 3] - FOV_CENTRE_MM[a]) / 100.0).astype(np.float32)
        for a in range(3)
    ]
    linear, square, cross = (rng.normal(0.0, s, size=3).astype(np.float32) for s in (0.12, 0.08, 0.08))
    x, y, z = u[0][:, None, None], u[1][None, :, None], u[2][None, None, :]
    log_field = (
        (linear[0] * x + square[0] * x**2 + cross[0] * x * y + cross[1] * x * z)
        + (linear[1] * y + square[1] * y**2 + cross[2] * y * z)
        + (linear[2] * z + square[2] * z**2)
    )
    return np.exp(log_field)


# --- files ------------------------------------------------------------------------------------------


def _readme(contrast: str, voxel_size_mm: tuple[float, float, float] | None) -> str:
    """README.txt; with the defaults, the same text as before contrasts and voxel sizes existed."""
    images, options = f"{contrast.removesuffix('w')}-like volumes", ""
    if contrast != DEFAULT_CONTRAST:
        options += f" --contrast {contrast}"
    if voxel_size_mm is not None:
        images += " ({} mm voxels)".format(" x ".join(f"{v:g}" for v in voxel_size_mm))
        options += ' --voxel_size_mm "[{}]"'.format(",".join(f"{v:g}" for v in voxel_size_mm))
    return _README.format(images=images, options=options)


def _participant(seed: int, number: int) -> tuple[str, str]:
    rng = np.random.default_rng([seed, number, 1])
    age = round(float(rng.uniform(36.0, 100.0)), 1)
    sex = "F" if rng.random() < 0.56 else "M"
    return (f"{age:.0f}" if age.is_integer() else f"{age:.1f}"), sex


def _dataset_description() -> dict:
    return {
        "Name": DEMO_NAME,
        "BIDSVersion": "1.2.1",
        "License": "CC0",
        "Authors": ["pvs_bundle synthetic data generator (scripts/data/demo_data.py)"],
        "HowToAcknowledge": (
            "Synthetic data, no acknowledgement needed. It mirrors the layout of OpenNeuro ds005595 "
            "(doi:10.18112/openneuro.ds005595.v1.0.0, Chai et al.), whose authors did not make it; "
            "anatomy from the MNI ICBM152 2009 templates shipped with nilearn."
        ),
        "Funding": [],
        "DatasetDOI": "n/a",
    }


def _sidecar(header: nib.Nifti1Header) -> str:
    """The JSON sidecar of a NIfTI file, in the exact format of the ds005595 sidecars."""
    dim, pixdim, code = header["dim"], header["pixdim"], int(header["datatype"])
    lines = [
        "{",
        f'    "data_type": "{nib.nifti1.data_type_codes.label[code].upper()}",',
        '    "dimensions": {',
        ",\n".join(f'        "dim{k}": {int(dim[k])}' for k in range(1, 5)),
        "    },",
        f'    "datatype": {code},',
        '    "pixel_dimensions": {',
        ",\n".join(f'        "pixdim{k}": {float(pixdim[k]):.6f}' for k in range(1, 5)),
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _parcellation_description() -> dict:
    return {
        "Name": "Synthetic parcellation of the pvs_bundle demo dataset (FreeSurferColorLUT labels, not real data)",
        "BIDSVersion": "1.2.1",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "pvs_bundle scripts.data.demo_data", "Version": str(GENERATOR_VERSION)}],
    }


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, sidecar: bool = True) -> None:
    """Write ``path`` (.nii.gz, gzip mtime 0 for reproducible bytes) and, unless told not to, its JSON sidecar."""
    image = nib.Nifti1Image(data.astype(np.int16), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.header["pixdim"][4] = REPETITION_TIME_S
    raw = image.to_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, compresslevel=6, mtime=0))
    if not sidecar:
        return
    _write_text(
        path.with_name(path.name.removesuffix(".nii.gz") + ".json"), _sidecar(nib.Nifti1Image.from_bytes(raw).header)
    )


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


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


if __name__ == "__main__":
    import fire

    from scripts.errors import install

    install()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    fire.Fire(main)
