"""The data check's report: the catalogue of problems, one finding per problem of a file, and what a check found.

Severity follows the consequence. An **error** is what the workflows would crash on, or silently learn wrong
from, or what the datalist refuses; a **warning** is what the bundle handles (it skips, ignores, pads or
binarises) but that may still cost or change data. :data:`PROBLEMS` lists every code with its severity and fix;
three codes change severity with the context: ``non_binary_label`` (an error with ``non_binary="refuse"``),
``bids_name`` (a warning for a NIfTI the datalist ignores rather than refuses) and ``not_nifti`` (an error for
a file a datalist case names, which the workflows would try to load).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scripts.io import atomic_write_json

ERROR = "error"
WARNING = "warning"
SEVERITIES: tuple[str, ...] = (ERROR, WARNING)

COPY_AGAIN = "Download or copy the file again and compare its size with the source's."
TO_NIFTI = "Convert it to .nii.gz (mri_convert for .mgz, unzip a .nii.zip)"

# problem code -> (severity, suggested fix); a finding may say a more specific fix.
PROBLEMS: dict[str, tuple[str, str]] = {
    # the header cannot be read: not gzip, not NIfTI, no permission
    "unreadable": (ERROR, f"Replace it with a valid .nii.gz. {COPY_AGAIN}"),
    # the file ends early: in its header, its voxels, or gzip's trailer (which nibabel alone would not notice)
    "truncated": (ERROR, COPY_AGAIN),
    # the compressed data does not decompress, or fails gzip's CRC (nibabel alone would not notice)
    "corrupt": (ERROR, COPY_AGAIN),
    # not 3D (a trailing 4th dimension of 1 is fine)
    "not_3d": (ERROR, "Save the one 3D volume meant (e.g. nib.load(f).slicer[..., 0] for the first of a 4D file)."),
    # NaN or Inf voxels (looked for in float data only, where they can occur)
    "non_finite": (ERROR, "Replace them (e.g. np.nan_to_num) or export the file again."),
    "shape_mismatch": (ERROR, "Resample the mask onto its image's grid (nearest neighbour) or pair the right files."),
    "affine_mismatch": (
        ERROR,
        "Resample the mask onto its image's grid; if only the header is wrong, copy the image's affine into it.",
    ),
    # two files for one (sub, ses, acq, run): the datalist refuses the dataset
    "duplicate": (ERROR, "Keep one of them (e.g. delete the .nii copy of a .nii.gz)."),
    # a NIfTI name that does not parse as BIDS
    "bids_name": (ERROR, "Rename it sub-<label>[_ses-<label>]..._<suffix>.nii.gz, or move it out of the folder."),
    # a non-NIfTI file where NIfTI is expected
    "not_nifti": (WARNING, f"{TO_NIFTI}, or move it out of the folder."),
    "missing_file": (ERROR, "Fix the path in the datalist (or --dataset_dir)."),
    "no_images": (ERROR, "Point --dataset_dir at the BIDS root, the folder holding sub-<label>/."),
    "label_dir_missing": (ERROR, "Pass the right --label_dir (relative to the dataset), or add the masks there."),
    # mask values other than 0 and 1: binarised at > 0.5 like AsDiscreted(threshold=0.5) in the preprocessing
    "non_binary_label": (
        WARNING,
        "Save it as 0/1 (e.g. (mask > 0).astype(np.int16)); for a multi-label mask keep only the PVS label.",
    ),
    # no foreground voxel: the datalist skips the case
    "empty_mask": (WARNING, "Nothing if the subject truly has no PVS; otherwise export the mask again."),
    # smaller than the patch after resampling to pixdim: zero-padded
    "too_small": (WARNING, "Nothing if the volume is truly small; otherwise check its voxel size, or the patch."),
    "image_without_label": (WARNING, "Add its mask, or leave it if the subject is unlabelled."),
    "label_without_image": (WARNING, "Add its image, or remove the mask."),
    # a T2w / PVS file outside the folders the datalist looks in
    "misplaced": (WARNING, "Move it where the datalist looks."),
    # the name's sub / ses entities differ from its folders'
    "folder_mismatch": (WARNING, "Move the file into its subject's (and session's) folder, or fix its name."),
}


@dataclass(frozen=True)
class Finding:
    """One problem of one file: where, how bad, what, and what to do."""

    file: str
    severity: str
    problem: str
    message: str
    fix: str


def finding(file: str, problem: str, message: str, severity: str | None = None, fix: str | None = None) -> Finding:
    """Make a finding of a problem of :data:`PROBLEMS`; its message starts with the file.

    Args:
        file: the file, as the report shows it.
        problem: the problem's code.
        message: what is wrong, in a sentence.
        severity: overrides the code's severity (for the codes that change it with the context).
        fix: overrides the code's suggested fix with a more specific one.

    Raises:
        KeyError: for a code that is not in :data:`PROBLEMS`.
    """
    default_severity, default_fix = PROBLEMS[problem]
    return Finding(file, severity or default_severity, problem, f"{file}: {message}", fix or default_fix)


@dataclass
class DataCheckReport:
    """What a check read and found, with the settings it used."""

    root: str | None
    settings: dict
    files_checked: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        """The findings of severity error."""
        return [f for f in self.findings if f.severity == ERROR]

    def counts(self) -> dict[str, int]:
        """Return the number of findings per severity."""
        return {severity: sum(f.severity == severity for f in self.findings) for severity in SEVERITIES}

    def as_dict(self) -> dict:
        """Return the report as a JSON-ready dict."""
        return {
            "root": self.root,
            "settings": self.settings,
            "counts": self.counts(),
            "problems": dict(Counter(f.problem for f in self.findings)),
            "files_checked": self.files_checked,
            "findings": [asdict(f) for f in self.findings],
        }

    def summary(self) -> str:
        """Return a readable summary: the counts, then every finding (errors first) with its fix."""
        counts = self.counts()
        lines = [
            f"Data check of {self.root or 'the listed cases'}: {len(self.files_checked)} files checked, "
            f"{counts[ERROR]} error(s), {counts[WARNING]} warning(s)."
        ]
        for f in sorted(self.findings, key=lambda f: SEVERITIES.index(f.severity)):
            lines += [f"{f.severity.upper():7} [{f.problem}] {f.message}", f"{'':8}fix: {f.fix}"]
        return "\n".join(lines)


def write_report(report: DataCheckReport, path: str | Path) -> Path:
    """Write the report as JSON (indent 4), atomically, and return its path."""
    return atomic_write_json(Path(path).expanduser(), report.as_dict())


def raise_on_errors(report: DataCheckReport, report_path: str | Path | None) -> None:
    """Raise when the report holds errors, listing every one of them.

    Args:
        report: a data check report.
        report_path: where the full report was written, named in the message.

    Raises:
        ValueError: listing each error (file, problem and fix) when there is at least one.
    """
    errors = report.errors
    if not errors:
        return
    where = f"; full report (warnings too): {report_path}" if report_path else ""
    listed = "\n".join(f"  - [{f.problem}] {f.message} Fix: {f.fix}" for f in errors)
    raise ValueError(f"the data check found {len(errors)} error(s){where}\n{listed}")
