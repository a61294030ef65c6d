"""BIDS datalist: pair images with PVS masks by their entities, filter, split by subject, save once.

The dataset is found by the BIDS layout scan (:mod:`scripts.bids`), laid out like OpenNeuro ds005595::

    sub-001/anat/sub-001_T2w.nii.gz
    derivatives/mask/sub-001/sub-001_desc-mask_PVS.nii.gz

Sessions (``sub-*/ses-*/anat``) and the ``acq`` and ``run`` entities are supported; an image and a mask
pair when their (sub, ses, acq, run) entities are equal. The images are those of the ``contrasts`` given (BIDS
anatomical suffixes, :data:`scripts.bids.ANAT_CONTRASTS`): T2w unless told, as training uses; evaluation passes the
contrasts the model was trained for (:func:`scripts.model.model_file.resolve_contrasts`). A case with images of two
of them is refused: one run scores one contrast per case. A mask with no PVS voxel is left out, and the split is
made by subject, written once and reused by every later run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from scripts.bids import (
    DEFAULT_CONTRASTS,
    LABEL_SUFFIX,
    as_contrasts,
    case_id,
    contrast_names,
    find_images,
    find_labels,
    image_pattern,
    name_suffix,
    pair_key,
    parse_entities,
)
from scripts.io import atomic_write_json
from scripts.masks import LABEL_THRESHOLD

logger = logging.getLogger("pvs_bundle.datalist")

SPLITS: tuple[str, ...] = ("training", "validation", "test")


@dataclass
class DatalistReport:
    """What building a datalist found and left out, written beside the datalist."""

    pairs: int = 0
    empty_masks: list[str] = field(default_factory=list)
    images_without_label: list[str] = field(default_factory=list)
    labels_without_image: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """Return the report as a JSON-ready dict."""
        return {
            "pairs_used": self.pairs,
            "empty_masks_skipped": self.empty_masks,
            "images_without_label": self.images_without_label,
            "labels_without_image": self.labels_without_image,
        }


def _index(files: list[Path], root: Path, suffixes: Sequence[str]) -> dict[tuple[str | None, ...], Path]:
    index: dict[tuple[str | None, ...], Path] = {}
    for f in files:
        entities, found_suffix = parse_entities(f)
        if found_suffix not in suffixes:
            continue
        key = pair_key(entities)
        if key in index:
            first = index[key]
            fix = (
                "keep one (e.g. delete the .nii copy of a .nii.gz)"
                if name_suffix(first.name) == found_suffix
                else f"pass --contrasts with one of {name_suffix(first.name)} and {found_suffix} (one contrast a run)"
            )
            raise ValueError(
                f"two files for the same case {case_id(entities)}: {first.relative_to(root)} and "
                f"{f.relative_to(root)}; {fix}."
            )
        index[key] = f
    return index


def mask_is_empty(path: Path) -> bool:
    """Return True when a mask file holds no PVS voxel (none above the training label threshold)."""
    return not np.any(np.asarray(nib.load(str(path)).dataobj) > LABEL_THRESHOLD)


def check_dataset_dir(dataset_dir: str | Path, label_dir: str, contrasts: Sequence[str] = DEFAULT_CONTRASTS) -> Path:
    """Check that a dataset directory exists and holds images of the given contrasts.

    Args:
        dataset_dir: root of the BIDS dataset.
        label_dir: folder of the masks, relative to the root.
        contrasts: the image contrasts (BIDS suffixes) looked for.

    Returns:
        The directory as a Path.

    Raises:
        FileNotFoundError: when it is missing or holds no image.
    """
    root = Path(dataset_dir).expanduser()
    contrasts = as_contrasts(contrasts)
    looked_for = (
        f"{contrast_names(contrasts)} images {image_pattern(contrasts)} and masks "
        f"{label_dir}/sub-*/[ses-*/]*_desc-mask_PVS.nii[.gz]"
    )
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset_dir {root} does not exist. It must be a BIDS dataset laid out like OpenNeuro ds005595 "
            f"({looked_for}): pass --dataset_dir /path/to/ds005595, or --datalist_file with your own split, or "
            "train on the built-in demo with --config_file \"['configs/train.json','configs/demo.json']\"."
        )
    if not find_images(root, contrasts):
        names = contrast_names(contrasts)
        raise FileNotFoundError(f"dataset_dir {root} holds no {names} image: looked for {looked_for}.")
    return root


def find_pairs(
    dataset_dir: Path, label_dir: str = "derivatives/mask", contrasts: Sequence[str] = DEFAULT_CONTRASTS
) -> tuple[list[dict], DatalistReport]:
    """Pair images with masks by BIDS entities and drop the pairs whose mask is empty.

    Args:
        dataset_dir: root of the BIDS dataset.
        label_dir: folder of the masks, relative to the root.
        contrasts: the image contrasts (BIDS suffixes) paired with the masks.

    Returns:
        The cases (dicts with ``image``, ``label`` relative to the root, ``id`` and ``subject``), and a report
        of what was left out and why.

    Raises:
        ValueError: when two files describe the same case (two images of one case: of two accepted contrasts, or
            a .nii beside a .nii.gz), or ``contrasts`` names no BIDS anatomical contrast.
    """
    contrasts = as_contrasts(contrasts)
    images = _index(find_images(dataset_dir, contrasts), dataset_dir, contrasts)
    labels = _index(find_labels(dataset_dir, label_dir), dataset_dir, (LABEL_SUFFIX,))
    report = DatalistReport()
    cases = []
    for key in sorted(images, key=lambda k: tuple(v or "" for v in k)):
        image = images[key]
        rel_image = str(image.relative_to(dataset_dir))
        if key not in labels:
            logger.warning("Skipping %s: no mask with the same entities under %s.", rel_image, label_dir)
            report.images_without_label.append(rel_image)
            continue
        label = labels[key]
        rel_label = str(label.relative_to(dataset_dir))
        if mask_is_empty(label):
            logger.warning("Skipping %s: its mask %s is empty (no PVS voxel).", rel_image, rel_label)
            report.empty_masks.append(rel_label)
            continue
        entities, _ = parse_entities(image)
        cases.append({"image": rel_image, "label": rel_label, "id": case_id(entities), "subject": f"sub-{key[0]}"})
    for key in sorted(set(labels) - set(images), key=lambda k: tuple(v or "" for v in k)):
        rel_label = str(labels[key].relative_to(dataset_dir))
        logger.warning(
            "Mask %s has no %s image with the same entities; it is not used.", rel_label, contrast_names(contrasts)
        )
        report.labels_without_image.append(rel_label)
    report.pairs = len(cases)
    return cases, report


def split_subjects(subjects: Sequence[str], seed: int, fractions: Sequence[float]) -> dict[str, list[str]]:
    """Split subjects into training, validation and test, deterministically from a seed.

    Each subject gets a rank from a hash of (seed, subject id), so the split does not depend on listing order.
    The lowest ranks go to test, the next to validation, the rest to training.

    Args:
        subjects: unique subject ids.
        seed: split seed.
        fractions: (training, validation, test) fractions summing to 1; a training fraction of 0 gives every subject
            that validation does not take to test (``[0, 0, 1]``: score a whole dataset).

    Returns:
        A dict split name -> sorted subject ids.

    Raises:
        ValueError: on bad fractions or too few subjects.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, not {list(fractions)}.")
    n = len(subjects)
    n_val, n_test = (max(1, round(n * f)) if f > 0 else 0 for f in fractions[1:])
    if fractions[0] == 0:  # a dataset to score, not to train on: what validation does not take is test
        n_test = n - min(n_val, n)
    elif n - n_val - n_test < 1:
        raise ValueError(f"need at least {n_val + n_test + 1} subjects with a non-empty mask to split, not {n}.")
    ranked = sorted(subjects, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    return {
        "test": sorted(ranked[:n_test]),
        "validation": sorted(ranked[n_test : n_test + n_val]),
        "training": sorted(ranked[n_test + n_val :]),
    }


def create_datalist(
    dataset_dir: str | Path,
    seed: int = 0,
    fractions: Sequence[float] = (0.9, 0.05, 0.05),
    label_dir: str = "derivatives/mask",
    contrasts: Sequence[str] = DEFAULT_CONTRASTS,
) -> tuple[dict, DatalistReport]:
    """Build a datalist (paths relative to ``dataset_dir``) split at subject level.

    Args:
        dataset_dir: root of the BIDS dataset.
        seed: split seed.
        fractions: (training, validation, test) fractions.
        label_dir: folder of the masks, relative to the root.
        contrasts: the image contrasts (BIDS suffixes) paired with the masks.

    Returns:
        The datalist dict (keys ``training``, ``validation``, ``test`` and ``split``) and the report.

    Raises:
        FileNotFoundError: when the dataset directory is missing or holds no image.
        ValueError: when too few cases remain to split.
    """
    root = check_dataset_dir(dataset_dir, label_dir, contrasts)
    cases, report = find_pairs(root, label_dir, contrasts)
    split = split_subjects(sorted({c["subject"] for c in cases}), seed, fractions)
    subject_split = {s: name for name, subjects in split.items() for s in subjects}
    datalist: dict = {name: [c for c in cases if subject_split[c["subject"]] == name] for name in SPLITS}
    datalist["split"] = {"seed": seed, "fractions": list(fractions), "label_dir": label_dir}
    return datalist, report


def resolve_paths(items: list[dict], dataset_dir: str | Path, source: Path) -> list[dict]:
    """Make image and label paths absolute (relative ones are taken from ``dataset_dir``) and check they exist.

    Raises:
        FileNotFoundError: listing every missing file, and the datalist it came from.
    """
    root = Path(dataset_dir).expanduser().resolve()
    resolved, missing = [], []
    for item in items:
        new = dict(item)
        for key in ("image", "label"):
            if key in new:
                new[key] = str(root / new[key])
                if not Path(new[key]).is_file():
                    missing.append(new[key])
        resolved.append(new)
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} file(s) named in {source} do not exist (is --dataset_dir {root} right?): "
            + ", ".join(missing[:10])
        )
    return resolved


def _listed_id(case: dict) -> str | None:
    if "id" in case:
        return case["id"]
    try:
        return case_id(parse_entities(case["image"])[0])
    except ValueError:
        return None


def report_changes(
    saved: dict, dataset_dir: str | Path, source: Path, contrasts: Sequence[str] = DEFAULT_CONTRASTS
) -> list[str]:
    """Warn about images of the dataset that the saved split does not list (the split never changes silently).

    Images the datalist skipped on purpose (empty mask, no mask; see its report) are not counted, nor images of a
    case the split lists (another contrast of it).

    Args:
        saved: the saved datalist (paths relative to ``dataset_dir`` or absolute).
        dataset_dir: root of the BIDS dataset.
        source: the datalist file, named in the warning.
        contrasts: the image contrasts (BIDS suffixes) looked for.

    Returns:
        The new images, relative to the dataset root.
    """
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        return []
    known = {_listed_id(c) for k in SPLITS for c in saved[k]}
    report_file = source.with_name(source.stem + "_report.json")
    if report_file.is_file():
        report = json.loads(report_file.read_text())
        skipped = report.get("empty_masks_skipped", []) + report.get("images_without_label", [])
        known |= {case_id(parse_entities(f)[0]) for f in skipped}
    images = find_images(root, contrasts)
    new = sorted(str(f.relative_to(root)) for f in images if case_id(parse_entities(f)[0]) not in known)
    if new:
        logger.warning(
            "The dataset has %d %s image(s) that the saved split %s does not list (%s): they are not used. The split "
            "is kept so that no test subject moves into training; delete the file to re-split everything.",
            len(new),
            contrast_names(contrasts),
            source,
            ", ".join(new[:10]),
        )
    return new


def load_or_create_datalist(
    dataset_dir: str | Path,
    datalist_file: str | Path,
    seed: int = 0,
    fractions: Sequence[float] = (0.9, 0.05, 0.05),
    label_dir: str = "derivatives/mask",
    must_exist: bool = False,
    contrasts: Sequence[str] = DEFAULT_CONTRASTS,
) -> dict[str, list[dict]]:
    """Load the saved datalist, or build it from the dataset and save it once.

    Every workflow (training, evaluation, inference on the test split) calls this with the same file, so they
    all see the same split. A user may pass a datalist file of their own (keys ``training``, ``validation``,
    ``test``; paths absolute or relative to ``dataset_dir``).

    Args:
        dataset_dir: root of the BIDS dataset.
        datalist_file: where the datalist is (or will be) saved.
        seed: split seed, used only when the datalist is built.
        fractions: (training, validation, test) fractions, used only when the datalist is built.
        label_dir: folder of the masks, relative to the root.
        must_exist: refuse to build a new split (evaluation must score the split that training used).
        contrasts: the image contrasts (BIDS suffixes) paired with the masks when the datalist is built, and looked
            for among the images a saved split does not list.

    Returns:
        A dict split name -> list of cases with absolute ``image`` and ``label`` paths.

    Raises:
        FileNotFoundError: when the dataset or a listed file is missing, or the datalist when ``must_exist``.
        ValueError: when the datalist file lacks a split, or ``contrasts`` names no BIDS anatomical contrast.
    """
    contrasts = as_contrasts(contrasts)
    path = Path(datalist_file).expanduser()
    if path.is_file():
        saved = json.loads(path.read_text())
        absent = [k for k in SPLITS if k not in saved]
        if absent:
            raise ValueError(f"datalist {path} must have the keys {list(SPLITS)}; missing {absent}.")
        logger.info("Using the saved datalist %s.", path)
        report_changes(saved, dataset_dir, path, contrasts)
    elif must_exist:
        raise FileNotFoundError(
            f"datalist {path} does not exist: run training first (it writes the split there), or pass "
            "--datalist_file with the split that training used."
        )
    else:
        saved, report = create_datalist(dataset_dir, seed, fractions, label_dir, contrasts)
        atomic_write_json(path.with_name(path.stem + "_report.json"), report.as_dict())
        atomic_write_json(path, saved)
        logger.info(
            "Wrote datalist %s: %s cases (training/validation/test), %d empty masks skipped.",
            path,
            "/".join(str(len(saved[k])) for k in SPLITS),
            len(report.empty_masks),
        )
    return {k: resolve_paths(saved[k], dataset_dir, path) for k in SPLITS}
