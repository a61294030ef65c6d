"""BIDS naming and layout: what a file's name says (entities, suffix, contrast) and where a dataset keeps its files.

The layout is that of OpenNeuro ds005595::

    sub-001/anat/sub-001_T2w.nii.gz
    derivatives/mask/sub-001/sub-001_desc-mask_PVS.nii.gz

A **name** ``sub-01_ses-2_acq-hires_run-1_T2w.nii.gz`` holds **entities** (``key-label`` pairs) and ends with a
**suffix** (``T2w``); for an image the suffix is its **contrast** (:data:`ANAT_CONTRASTS`, BIDS anatomical
suffixes). An image and its mask pair when their (sub, ses, acq, run) entities are equal (:func:`pair_key`), and
that tuple names a **case** (:func:`case_id`).

The **layout scan** (:func:`subject_files`, :func:`label_files`) lists every file a dataset keeps under its subject
folders ``sub-*/`` and under its mask folder's ``sub-*/``, following folder links and leaving out hidden files and
folders (as the BIDS validator does). **Images** are the files of a contrast in an image folder
``sub-*/[ses-*/]anat/`` (:func:`find_images`), **masks** the ``*_PVS.nii[.gz]`` files under ``<label_dir>/sub-*/``
at any depth (:func:`find_labels`). The datalist, the data check and inference's inputs all scan through here, so
the check reports exactly the files the workflows use.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Sequence
from pathlib import Path

PAIR_ENTITIES: tuple[str, ...] = ("sub", "ses", "acq", "run")
NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
# BIDS anatomical image suffixes (BIDS 1.9, anat: non-parametric, parametric maps, file collections; not masks).
ANAT_CONTRASTS: tuple[str, ...] = tuple(
    (  # noqa: SIM905 - a word list reads best as words
        "T1w T2w PDw T2starw FLAIR inplaneT1 inplaneT2 PDT2 angio T1map T2map T2starmap R1map R2map R2starmap PDmap "
        "MTRmap MTsat UNIT1 T1rho MWFmap MTVmap Chimap S0map M0map MEGRE MESE VFA IRT1 MP2RAGE MPM MTS MTR"
    ).split()
)
DEFAULT_CONTRASTS: tuple[str, ...] = ("T2w",)
# BIDS suffixes: the anatomical image contrasts, other anatomical and raw ones, and the derivative ones a folder of
# outputs may hold.
BIDS_SUFFIXES = frozenset(ANAT_CONTRASTS) | frozenset(
    "defacemask dwi bold sbref epi mask probseg dseg PVS".split()  # noqa: SIM905 - a word list reads best as words
)
LABEL_SUFFIX = "PVS"  # the suffix of a PVS mask: sub-001_desc-mask_PVS.nii.gz
IMAGE_FOLDER = "anat"
_ENTITY = re.compile(r"(?:^|_)([a-zA-Z0-9]+)-([a-zA-Z0-9]+)(?=_|$)")
_SUFFIX = re.compile(r"_([a-zA-Z0-9]+)$")


# --- names ----------------------------------------------------------------------------------------------------


def strip_nifti_suffix(name: str) -> str | None:
    """Return a file name without its .nii or .nii.gz extension, or None if it is not NIfTI."""
    for ext in NIFTI_SUFFIXES:
        if name.endswith(ext):
            return name[: -len(ext)]
    return None


def name_suffix(name: str) -> str | None:
    """The suffix a NIfTI file name ends with (``T2w`` of ``sub-001_T2w.nii.gz``), or None (not NIfTI, no ``_``)."""
    stem = strip_nifti_suffix(name)
    return stem.rsplit("_", 1)[1] if stem is not None and "_" in stem else None


def named_contrast(path: Path) -> str | None:
    """Return the contrast a file's name states (its BIDS suffix, e.g. ``T1w``), or None when it states none.

    A BIDS name (``sub-<label>_..._<suffix>``) states its suffix; any other name states one only when it ends with a
    known BIDS suffix (:data:`BIDS_SUFFIXES`: ``case7_T1w.nii.gz``, not ``case7.nii``).
    """
    stem = strip_nifti_suffix(path.name) or path.name
    suffix = stem.rsplit("_", 1)[-1]
    is_bids = stem.startswith("sub-") and "_" in stem and "-" not in suffix
    return suffix if is_bids or suffix in BIDS_SUFFIXES else None


def parse_entities(path: str | Path) -> tuple[dict[str, str], str]:
    """Parse the BIDS entities and suffix of a NIfTI file name.

    Args:
        path: a file path such as ``sub-01/ses-2/anat/sub-01_ses-2_run-1_T2w.nii.gz``.

    Returns:
        The entities (e.g. ``{"sub": "01", "ses": "2", "run": "1"}``) and the suffix (``"T2w"``).

    Raises:
        ValueError: if the name is not a NIfTI file with a ``sub-`` entity and a suffix.
    """
    stem = strip_nifti_suffix(Path(path).name)
    if stem is None:
        raise ValueError(f"{path}: must be a NIfTI file (.nii or .nii.gz).")
    entities = dict(_ENTITY.findall(stem))
    suffix = _SUFFIX.search(stem)
    if "sub" not in entities or suffix is None or "-" in suffix.group(1):
        raise ValueError(f"{path}: must be a BIDS name like sub-<label>[_ses-<label>]..._<suffix>.nii.gz.")
    return entities, suffix.group(1)


def pair_key(entities: dict[str, str]) -> tuple[str | None, ...]:
    """Return the key that pairs an image with its mask: its (sub, ses, acq, run) entities."""
    return tuple(entities.get(k) for k in PAIR_ENTITIES)


def case_id(entities: dict[str, str]) -> str:
    """Return a readable case id such as ``sub-001`` or ``sub-001_ses-2_run-1``."""
    return "_".join(f"{k}-{entities[k]}" for k in PAIR_ENTITIES if k in entities)


def case_dir(entities: dict[str, str]) -> str:
    """Return the folder of a case: ``sub-<label>`` or ``sub-<label>/ses-<label>``."""
    return "/".join(f"{k}-{entities[k]}" for k in ("sub", "ses") if k in entities)


# --- contrasts ------------------------------------------------------------------------------------------------


def as_contrasts(value: str | Sequence[str], name: str = "contrasts") -> tuple[str, ...]:
    """Return the contrasts a setting names, checked against the BIDS anatomical suffixes :data:`ANAT_CONTRASTS`.

    Args:
        value: a list of suffixes (``["T2w", "T1w"]``), one suffix (``"T1w"``), or either as the command line may
            give it (``"['T2w','T1w']"``, ``"T2w,T1w"``).
        name: the setting, named in the error.

    Returns:
        The suffixes, in the order given, without repeats.

    Raises:
        ValueError: if ``value`` is empty or names a suffix that is not a BIDS anatomical image contrast.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = ast.literal_eval(text) if text.startswith(("[", "(")) else text.split(",")
        except (ValueError, SyntaxError):
            parsed = [text]
        value = [parsed] if isinstance(parsed, str) else parsed
    items = [str(v).strip() for v in value] if isinstance(value, Sequence) else []
    unknown = [v for v in items if v not in ANAT_CONTRASTS]
    if not items or unknown:
        raise ValueError(
            f"{name} must be BIDS anatomical suffixes such as ['T2w', 'T1w', 'FLAIR'] (any of {list(ANAT_CONTRASTS)}), "
            f"not {value!r}."
        )
    return tuple(dict.fromkeys(items))


def contrast_names(contrasts: Sequence[str], joiner: str = "or") -> str:
    """Name contrasts in a sentence: ``T2w``, ``T2w or T1w``, ``T2w, T1w or FLAIR``."""
    names = list(contrasts)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {joiner} {names[-1]}"


def image_pattern(contrasts: Sequence[str]) -> str:
    """The BIDS layout of images of these contrasts, for messages: ``sub-*/[ses-*/]anat/*_T2w.nii[.gz]``."""
    suffix = contrasts[0] if len(contrasts) == 1 else "{" + ",".join(contrasts) + "}"
    return f"sub-*/[ses-*/]anat/*_{suffix}.nii[.gz]"


# --- the layout scan ------------------------------------------------------------------------------------------


def files_under(folder: Path) -> list[Path]:
    """Every file under a folder, at any depth and sorted, following folder links; hidden files and folders left out.

    A link to a missing file is listed (a dataset whose content is not fetched yet): reading it then says so.
    """
    found = []
    for parent, folders, names in os.walk(folder, followlinks=True):
        folders[:] = [f for f in folders if not f.startswith(".")]
        found += [Path(parent, name) for name in names if not name.startswith(".")]
    return sorted(found)


def subject_files(dataset_dir: Path) -> list[Path]:
    """Every file under the subject folders ``sub-*/`` of a dataset (:func:`files_under`), sorted."""
    return [f for folder in sorted(dataset_dir.glob("sub-*")) if folder.is_dir() for f in files_under(folder)]


def in_image_folder(relative: Path) -> bool:
    """Whether a file (relative to the dataset root) is in an image folder ``sub-*/[ses-*/]anat/``."""
    folders = relative.parts[:-1]
    in_session = len(folders) == 3 and folders[1].startswith("ses-")
    return (
        bool(folders)
        and folders[0].startswith("sub-")
        and folders[-1] == IMAGE_FOLDER
        and (len(folders) == 2 or in_session)
    )


def label_files(dataset_dir: Path, label_dir: str) -> list[Path]:
    """Every file under the mask folder ``dataset_dir/label_dir`` (:func:`files_under`; none when it is missing)."""
    return files_under(dataset_dir / label_dir)


def in_label_folder(relative: Path) -> bool:
    """Whether a file (relative to the mask folder) is under a subject folder ``sub-*/``, at any depth."""
    return len(relative.parts) > 1 and relative.parts[0].startswith("sub-")


def find_images(dataset_dir: Path, contrasts: Sequence[str] = DEFAULT_CONTRASTS) -> list[Path]:
    """List the images of the given contrasts in a BIDS dataset: ``sub-*/[ses-*/]anat/*_<contrast>.nii[.gz]``.

    Raises:
        ValueError: if ``contrasts`` names no BIDS anatomical contrast.
    """
    wanted = as_contrasts(contrasts)
    files = subject_files(dataset_dir)
    return [f for f in files if in_image_folder(f.relative_to(dataset_dir)) and name_suffix(f.name) in wanted]


def find_labels(dataset_dir: Path, label_dir: str) -> list[Path]:
    """List the PVS masks ``*_PVS.nii[.gz]`` under ``dataset_dir/label_dir/sub-*/`` (any depth)."""
    root = dataset_dir / label_dir
    files = label_files(dataset_dir, label_dir)
    return [f for f in files if in_label_folder(f.relative_to(root)) and name_suffix(f.name) == LABEL_SUFFIX]
