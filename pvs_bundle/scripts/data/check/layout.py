"""The data check's view of a dataset's folders: which files the datalist would use, and what else lies there.

The files come from the BIDS layout scan the datalist uses (:mod:`scripts.bids`): every file of the image folders
``sub-*/[ses-*/]anat/`` and of the mask folder's ``sub-*/``. Each is classified: a file to check (a **candidate**),
a JSON sidecar or a file of another suffix (left alone), or a problem: not NIfTI, a name that is not BIDS, a name
whose ``sub``/``ses`` differ from its folders'. A T2w image or a PVS mask elsewhere is **misplaced**, and a second
file for one (sub, ses, acq, run) is a **duplicate**.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.bids import (
    LABEL_SUFFIX,
    NIFTI_SUFFIXES,
    case_id,
    in_image_folder,
    in_label_folder,
    label_files,
    pair_key,
    parse_entities,
    strip_nifti_suffix,
    subject_files,
)
from scripts.data.check.report import ERROR, WARNING, Finding, finding

IMAGE_SUFFIX = "T2w"
SIDECAR_EXTENSIONS: tuple[str, ...] = (".json",)


@dataclass(frozen=True)
class Candidate:
    """A file the datalist would use: where it is, how the report names it, and its BIDS entities."""

    path: Path
    name: str
    entities: dict[str, str]


def _folder_mismatch(name: str, entities: dict[str, str], folders: Sequence[str]) -> list[Finding]:
    from_folders = dict(part.split("-", 1) for part in folders if part.startswith(("sub-", "ses-")))
    wrong = [k for k, v in from_folders.items() if entities.get(k) != v]
    if not wrong:
        return []
    said = ", ".join(
        f"{k}-{entities.get(k, '(none)')} in the name but {k}-{from_folders[k]} in the path" for k in wrong
    )
    message = f"{said}; the datalist pairs by the name, so the file may be in the wrong folder."
    return [finding(name, "folder_mismatch", message)]


def _classify(path: Path, name: str, folders: Sequence[str], suffix: str) -> tuple[Candidate | None, list[Finding]]:
    """Decide what a file in an image or mask folder is: a file to check, a sidecar, another modality, a problem."""
    if path.name.endswith(SIDECAR_EXTENSIONS):
        return None, []
    if strip_nifti_suffix(path.name) is None:
        ext = "".join(path.suffixes) or "no extension"
        message = f"must be NIfTI (.nii or .nii.gz) in this folder, not {ext}; the datalist ignores it."
        return None, [finding(name, "not_nifti", message)]
    try:
        entities, found = parse_entities(path)
    except ValueError:
        refused = fnmatch.fnmatch(path.name, f"*_{suffix}.nii*")  # the datalist's own pattern
        message = (
            f"must be named like sub-<label>[_ses-<label>][_acq-<label>][_run-<label>]_..._{suffix}.nii.gz, not "
            f"{path.name}; the datalist " + ("refuses the dataset." if refused else "ignores it.")
        )
        return None, [finding(name, "bids_name", message, ERROR if refused else WARNING)]
    if found != suffix:
        return None, []
    return Candidate(path, name, entities), _folder_mismatch(name, entities, folders)


def _misplaced(name: str, suffix: str, expected: str) -> Finding:
    message = f"{suffix} files must be in {expected}; the datalist does not look here and ignores it."
    return finding(name, "misplaced", message, fix=f"Move it into {expected}.")


def _is_stray(path: Path, suffix: str) -> bool:
    """Whether a file outside the folders the datalist looks in is named like one it would use."""
    return f"_{suffix}." in path.name and not path.name.endswith(SIDECAR_EXTENSIONS)


def scan_images(root: Path) -> tuple[list[Candidate], list[Finding]]:
    """Find the T2w images the datalist would use, and what is wrong in the subject folders.

    Args:
        root: the dataset's root.

    Returns:
        The images (duplicates included) and the findings of the subject folders' files.
    """
    candidates, findings = [], []
    for path in subject_files(root):
        relative = path.relative_to(root)
        if in_image_folder(relative):
            candidate, more = _classify(path, relative.as_posix(), relative.parts[:-1], IMAGE_SUFFIX)
            findings += more
            candidates += [candidate] if candidate else []
        elif _is_stray(path, IMAGE_SUFFIX):
            findings.append(_misplaced(relative.as_posix(), IMAGE_SUFFIX, "sub-<label>/[ses-<label>/]anat/"))
    return candidates, findings


def scan_labels(root: Path, label_dir: str) -> tuple[list[Candidate], list[Finding]]:
    """Find the PVS masks the datalist would use, and what is wrong in the mask folder.

    Args:
        root: the dataset's root.
        label_dir: the mask folder, relative to the root.

    Returns:
        The masks (duplicates included) and the findings of the mask folder's files (``label_dir_missing`` when
        there is no such folder).
    """
    label_root = root / label_dir
    if not label_root.is_dir():
        message = f"the mask folder does not exist under {root}; no image can be paired with a mask."
        return [], [finding(label_dir, "label_dir_missing", message)]
    candidates, findings = [], []
    for path in label_files(root, label_dir):
        name, relative = path.relative_to(root).as_posix(), path.relative_to(label_root)
        if in_label_folder(relative):
            candidate, more = _classify(path, name, relative.parts[:-1], LABEL_SUFFIX)
            findings += more
            candidates += [candidate] if candidate else []
        elif _is_stray(path, LABEL_SUFFIX):
            findings.append(_misplaced(name, LABEL_SUFFIX, f"{label_dir}/sub-<label>/[ses-<label>/]"))
    return candidates, findings


def index_cases(candidates: list[Candidate]) -> tuple[dict[tuple[str | None, ...], Candidate], list[Finding]]:
    """Index files by their pairing entities; every file beyond the first (.nii.gz first) of a case is a duplicate.

    Returns:
        The first file of each case, by its :func:`scripts.bids.pair_key`, and a ``duplicate`` finding for each other.
    """
    groups: dict[tuple[str | None, ...], list[Candidate]] = {}
    for c in candidates:
        groups.setdefault(pair_key(c.entities), []).append(c)
    index, findings = {}, []
    for key, group in groups.items():
        first, *others = sorted(group, key=lambda c: (not c.name.endswith(NIFTI_SUFFIXES[0]), c.name))
        index[key] = first
        for other in others:
            message = (
                f"a second file for case {case_id(other.entities)} (the first is {first.name}); the datalist "
                "refuses two files for one case."
            )
            findings.append(finding(other.name, "duplicate", message))
    return index, findings
