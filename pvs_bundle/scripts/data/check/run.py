"""The data check's entry points: check a BIDS dataset, or a workflow's cases, and report every problem at once.

:func:`check_dataset` and :func:`check_cases` return the report; :func:`run_check` (``run check_data``) and
:func:`run_case_check` (the first step of training and evaluation) also write it, log its summary and fail on
errors; :func:`main` is the command line. Each takes the check's settings (:class:`CheckSettings`: ``patch_size``,
``pixdim``, ``non_binary``, ``affine_atol``) as keyword arguments, the defaults for those not given.

Command line (from ``pvs_bundle/``); exit status 1 when there are errors, 2 on bad arguments, 0 otherwise::

    python -m scripts.data.check --dataset_dir D [--report R] [--label_dir derivatives/mask]
        [--patch_size "[96,96,96]"] [--pixdim "[0.8,0.8,0.8]"] [--non_binary refuse] [--affine_atol 1e-3]
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from scripts.bids import case_dir, case_id
from scripts.data.check.layout import index_cases, scan_images, scan_labels
from scripts.data.check.report import DataCheckReport, finding, raise_on_errors, write_report
from scripts.data.check.settings import CheckSettings
from scripts.data.check.volumes import Inspector

logger = logging.getLogger("pvs_bundle.data_check")


def check_dataset(dataset_dir: str | Path, label_dir: str = "derivatives/mask", **settings: Any) -> DataCheckReport:
    """Check a BIDS dataset laid out like OpenNeuro ds005595, reading each file once and reporting every problem.

    Args:
        dataset_dir: root of the BIDS dataset.
        label_dir: folder of the masks, relative to the root.
        settings: the check's settings, by name (:class:`CheckSettings`).

    Returns:
        The report; its paths are relative to ``dataset_dir``.

    Raises:
        FileNotFoundError: when ``dataset_dir`` is not a directory.
        ValueError: on malformed settings.
    """
    inspector_settings = CheckSettings.of(**settings)
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset_dir must be an existing directory, not {root} (it does not exist).")
    inspector = Inspector(inspector_settings, root)
    images, image_findings = scan_images(root)
    labels, label_findings = scan_labels(root, label_dir)
    image_index, image_duplicates = index_cases(images)
    label_index, label_duplicates = index_cases(labels)
    inspector.findings += image_findings + label_findings + image_duplicates + label_duplicates
    if not images:
        message = f"the dataset {root} holds no T2w image (sub-<label>/[ses-<label>/]anat/*_T2w.nii[.gz])."
        inspector.findings.append(finding(".", "no_images", message))
    for key, image in image_index.items():
        if key in label_index:
            inspector.pair(image.path, label_index[key].path)
            continue
        inspector.volume(image.path, False)
        message = f"no PVS mask with the same (sub, ses, acq, run) entities under {label_dir}/; the datalist skips it."
        expected = f"{label_dir}/{case_dir(image.entities)}/{case_id(image.entities)}_desc-mask_PVS.nii.gz"
        fix = f"Add its mask as {expected}, or leave it if the subject is unlabelled."
        inspector.findings.append(finding(image.name, "image_without_label", message, fix=fix))
    for key, label in label_index.items():
        if key not in image_index:
            inspector.volume(label.path, True)
            message = "no T2w image with the same (sub, ses, acq, run) entities; the mask is not used."
            expected = f"{case_dir(label.entities)}/anat/{case_id(label.entities)}_T2w.nii.gz"
            fix = f"Add its image as {expected}, or remove the mask."
            inspector.findings.append(finding(label.name, "label_without_image", message, fix=fix))
    for is_label, candidates in ((False, images), (True, labels)):
        for candidate in candidates:
            inspector.volume(candidate.path, is_label)  # the duplicates: the others were read above
    return inspector.report({"label_dir": label_dir})


def check_cases(cases: list[dict], root: str | Path | None = None, **settings: Any) -> DataCheckReport:
    """Run the same per-file and per-pair checks on a datalist's cases, the inputs of a workflow.

    Args:
        cases: dicts with an ``image`` path and an optional ``label`` path (absolute, or relative to ``root``).
        root: the folder that relative paths are taken from and that paths are shown relative to; when None,
            paths are shown as given.
        settings: the check's settings, by name (:class:`CheckSettings`).

    Returns:
        The report. A file named by several cases is read once.

    Raises:
        ValueError: on malformed settings, or a case without an ``image``.
    """
    inspector_settings = CheckSettings.of(**settings)
    base = Path(root).expanduser().resolve() if root is not None else None
    inspector = Inspector(inspector_settings, base)
    for number, case in enumerate(cases):
        if not isinstance(case, dict) or not case.get("image"):
            raise ValueError(f"case {number} must be a dict with an 'image' path, not {case!r}.")
        paths = {key: Path(case[key]).expanduser() for key in ("image", "label") if case.get(key)}
        usable = {key: path if path.is_absolute() or base is None else base / path for key, path in paths.items()}
        usable = {key: path for key, path in usable.items() if inspector.usable(path)}
        if len(usable) == 2:
            inspector.pair(usable["image"], usable["label"])
        for key, path in usable.items():
            inspector.volume(path, key == "label")  # read already when paired
    return inspector.report()


def _conclude(report: DataCheckReport, report_file: str | Path) -> dict:
    """Write the report, log its summary and raise on errors."""
    path = write_report(report, report_file)
    (logger.warning if report.findings else logger.info)("%s\nReport: %s", report.summary(), path)
    raise_on_errors(report, path)
    return report.as_dict()


def run_check(
    dataset_dir: str | Path, report_file: str | Path, label_dir: str = "derivatives/mask", **settings: Any
) -> dict:
    """Check a dataset, write the report, log the summary, and fail when there are errors (for a bundle run id).

    Args:
        dataset_dir: root of the BIDS dataset.
        report_file: where the JSON report is written.
        label_dir: folder of the masks, relative to the root.
        settings: the check's settings, by name (:class:`CheckSettings`).

    Returns:
        The report as a dict, when there is no error.

    Raises:
        FileNotFoundError: when ``dataset_dir`` is not a directory.
        ValueError: on malformed settings, or listing every error found.
    """
    return _conclude(check_dataset(dataset_dir, label_dir, **settings), report_file)


def run_case_check(cases: list[dict], report_file: str | Path, root: str | Path | None = None, **settings: Any) -> dict:
    """Check a workflow's input cases, write the report, log the summary, and fail when there are errors.

    Args:
        cases: dicts with an ``image`` and an optional ``label`` path.
        report_file: where the JSON report is written.
        root: the folder that paths are shown relative to.
        settings: the check's settings, by name (:class:`CheckSettings`).

    Returns:
        The report as a dict, when there is no error.

    Raises:
        ValueError: on malformed settings or cases, or listing every error found.
    """
    return _conclude(check_cases(cases, root, **settings), report_file)


def main(dataset_dir: str, report: str | None = None, label_dir: str = "derivatives/mask", **settings: Any) -> None:
    """Command line: check a dataset and print the summary; exit 1 on errors, 2 on bad arguments, else 0.

    Args:
        dataset_dir: root of the BIDS dataset.
        report: where to write the JSON report (none is written when omitted).
        label_dir: folder of the masks, relative to the root.
        settings: the check's settings (:class:`CheckSettings`): ``--patch_size "[96,96,96]"`` (the training
            patch), ``--pixdim "[0.8,0.8,0.8]"`` (the voxel size the preprocessing resamples to),
            ``--non_binary binarize|refuse``, ``--affine_atol 1e-3``.

    Raises:
        SystemExit: status 1 when there are errors, 2 on bad arguments.
    """
    try:
        result = check_dataset(dataset_dir, label_dir, **settings)
    except (FileNotFoundError, ValueError) as err:
        print(f"data_check: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    print(result.summary())
    if report is not None:
        print(f"Report: {write_report(result, report)}")
    if result.errors:
        raise SystemExit(1)
