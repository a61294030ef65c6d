"""Data check: find every problem of a BIDS PVS dataset, or of a datalist's cases, in one pass before training.

Real datasets are messy: a truncated download, a mask saved as 0/255, a label on another grid, a 4D file where
a 3D one was expected. Without a check these surface hours into training, inside a data-loader worker. Here
each file is read once (header, then voxels: a truncated ``.nii.gz`` often has a readable header), only a few
numbers are kept per file, and every problem is reported with the file, a short code, a sentence and a fix.

Severity follows the consequence. An **error** is what the workflows would crash on, or silently learn wrong
from, or what the datalist refuses; a **warning** is what the bundle handles (it skips, ignores, pads or
binarises) but that may still cost or change data. :data:`PROBLEMS` lists every code with its severity and fix;
three codes change severity with the context: ``non_binary_label`` (an error with ``non_binary="refuse"``),
``bids_name`` (a warning for a NIfTI the datalist ignores rather than refuses) and ``not_nifti`` (an error for
a file a datalist case names, which the workflows would try to load).

Command line (from ``pvs_bundle/``); exit status 1 when there are errors, 2 on bad arguments, 0 otherwise::

    python -m scripts.data.data_check --dataset_dir D [--report R] [--label_dir derivatives/mask]
        [--patch_size "[96,96,96]"] [--pixdim "[0.8,0.8,0.8]"] [--non_binary refuse] [--affine_atol 1e-3]
"""

from __future__ import annotations

import fnmatch
import gzip
import logging
import math
import sys
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import nibabel as nib
import numpy as np

from scripts.data.datalist import NIFTI_SUFFIXES, case_id, pair_key, parse_entities, strip_nifti_suffix
from scripts.io import atomic_write_json

logger = logging.getLogger("pvs_bundle.data_check")

ERROR = "error"
WARNING = "warning"
SEVERITIES: tuple[str, ...] = (ERROR, WARNING)
NON_BINARY_POLICIES: tuple[str, ...] = ("binarize", "refuse")
IMAGE_SUFFIX = "T2w"
LABEL_SUFFIX = "PVS"
SIDECAR_EXTENSIONS: tuple[str, ...] = (".json",)
LABEL_THRESHOLD = 0.5  # AsDiscreted(threshold=0.5) in scripts.data.transforms.preprocessing
HEADER_ERRORS = (
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,
    nib.wrapstruct.WrapStructError,
    OSError,
    EOFError,
    zlib.error,
    ValueError,
)
DATA_ERRORS = (OSError, EOFError, zlib.error, ValueError)
_SHOWN = 8  # distinct mask values quoted in a message
_RAS_AXES: tuple[str, ...] = ("x (left-right)", "y (posterior-anterior)", "z (inferior-superior)")


_COPY_AGAIN = "Download or copy the file again and compare its size with the source's."
_TO_NIFTI = "Convert it to .nii.gz (mri_convert for .mgz, unzip a .nii.zip)"

# problem code -> (severity, suggested fix); a finding may say a more specific fix.
PROBLEMS: dict[str, tuple[str, str]] = {
    # the header cannot be read: not gzip, not NIfTI, no permission
    "unreadable": (ERROR, f"Replace it with a valid .nii.gz. {_COPY_AGAIN}"),
    # the file ends early: in its header, its voxels, or gzip's trailer (which nibabel alone would not notice)
    "truncated": (ERROR, _COPY_AGAIN),
    # the compressed data does not decompress, or fails gzip's CRC (nibabel alone would not notice)
    "corrupt": (ERROR, _COPY_AGAIN),
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
    "not_nifti": (WARNING, f"{_TO_NIFTI}, or move it out of the folder."),
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


def _finding(file: str, problem: str, message: str, severity: str | None = None, fix: str | None = None) -> Finding:
    """Make a finding of a known problem; its message starts with the file."""
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


@dataclass(frozen=True)
class _Settings:
    patch_size: tuple[int, int, int]
    pixdim: tuple[float, float, float]
    non_binary: str
    affine_atol: float


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _settings(patch_size: Sequence[int], pixdim: Sequence[float], non_binary: str, affine_atol: float) -> _Settings:
    """Validate the check's settings.

    Raises:
        ValueError: when one is malformed.
    """
    if not (
        isinstance(patch_size, Sequence | np.ndarray)
        and len(patch_size) == 3
        and all(_is_number(p) and int(p) == p and p > 0 for p in patch_size)
    ):
        raise ValueError(f"patch_size must be three positive ints, not {patch_size!r}.")
    if not (
        isinstance(pixdim, Sequence | np.ndarray)
        and len(pixdim) == 3
        and all(_is_number(p) and math.isfinite(p) and p > 0 for p in pixdim)
    ):
        raise ValueError(f"pixdim must be three positive voxel sizes in mm, not {pixdim!r}.")
    if non_binary not in NON_BINARY_POLICIES:
        raise ValueError(f"non_binary must be one of {NON_BINARY_POLICIES}, not {non_binary!r}.")
    if not (_is_number(affine_atol) and affine_atol >= 0):
        raise ValueError(f"affine_atol must be a non-negative number, not {affine_atol!r}.")
    return _Settings(
        (int(patch_size[0]), int(patch_size[1]), int(patch_size[2])),
        (float(pixdim[0]), float(pixdim[1]), float(pixdim[2])),
        non_binary,
        float(affine_atol),
    )


@dataclass(frozen=True)
class _Values:
    """The distinct values of a mask, summarised: a float mask may hold millions of them."""

    n_distinct: int
    shown: tuple[float, ...]
    foreground: tuple[float, ...]  # values > LABEL_THRESHOLD, at most _SHOWN of them
    n_foreground: int
    dropped: tuple[float, ...]  # non-zero values <= LABEL_THRESHOLD, at most _SHOWN of them

    @property
    def is_binary(self) -> bool:
        """True when the mask holds only 0 and 1."""
        return self.n_distinct <= 2 and set(self.shown) <= {0.0, 1.0}

    @property
    def is_empty(self) -> bool:
        """True when no voxel is positive, as ``scripts.data.datalist.mask_is_empty`` decides."""
        return self.n_foreground == 0 and not any(v > 0 for v in self.dropped)


@dataclass(frozen=True)
class _Volume:
    """What the checks need from one NIfTI file; the voxels themselves are not kept."""

    shape: tuple[int, ...]
    affine: np.ndarray
    values: _Values | None  # masks whose voxels were read


def _voxel_sizes(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


def resampled_shape(shape: Sequence[int], affine: np.ndarray, pixdim: Sequence[float]) -> tuple[int, int, int]:
    """Return the spatial shape after ``Orientationd(axcodes="RAS")`` then ``Spacingd(pixdim)``, as MONAI has it.

    Per voxel axis ``round((n - 1) * voxel_size / pixdim + 1)`` (``monai.data.utils.compute_shape_offset``),
    placed at that axis's RAS position: exact for orthogonal voxel axes (any rotation), close for sheared ones.

    Args:
        shape: the voxel shape (the first 3 dimensions are spatial).
        affine: the 4 x 4 voxel-to-world affine.
        pixdim: the target voxel size in mm, in RAS order.

    Returns:
        The resampled shape, in RAS order.
    """
    zooms = _voxel_sizes(affine)
    out = [0, 0, 0]
    for axis, (ras_axis, _) in enumerate(nib.orientations.io_orientation(affine)):
        ras = int(ras_axis)
        out[ras] = int(np.round((shape[axis] - 1) * zooms[axis] / pixdim[ras] + 1.0))
    return out[0], out[1], out[2]


def _fmt(values: Sequence[float], total: int = 0) -> str:
    text = ", ".join(f"{v:g}" for v in values)
    return f"[{text}, … ({total} distinct values)]" if total > len(values) else f"[{text}]"


def _values(data: np.ndarray, finite: np.ndarray | None, slope: float, inter: float) -> _Values:
    """Summarise the distinct scaled values of a mask, sorting only its non-zero voxels (which are few)."""
    keep = data != 0 if finite is None else (data != 0) & finite
    raw = np.unique(data[keep])
    if np.any(data == 0):
        raw = np.union1d(raw, np.zeros(1, dtype=raw.dtype))
    scaled = raw.astype(np.float64) * slope + inter
    foreground = scaled[scaled > LABEL_THRESHOLD]
    dropped = scaled[(scaled != 0) & (scaled <= LABEL_THRESHOLD)]
    return _Values(
        n_distinct=int(scaled.size),
        shown=tuple(float(v) for v in scaled[:_SHOWN]),
        foreground=tuple(float(v) for v in foreground[:_SHOWN]),
        n_foreground=int(foreground.size),
        dropped=tuple(float(v) for v in dropped[:_SHOWN]),
    )


def _read(path: Path, name: str, is_label: bool) -> tuple[_Volume | None, list[Finding]]:
    """Read one NIfTI file in one pass, header, voxels, then to the end; keep a summary, not the voxels.

    nibabel reads only the bytes the voxels need, so a ``.nii.gz`` whose compressed data is damaged, or that lacks
    its last bytes, loads without complaint; reading the stream to its end makes gzip check its CRC and length.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as stream, nib.imageglobals.LoggingOutputSuppressor():
            return _read_stream(stream, path, name, is_label)
    except OSError as err:  # it cannot even be opened
        return None, [_finding(name, "unreadable", f"cannot be opened ({type(err).__name__}: {err}).")]


def _read_stream(stream: BinaryIO, path: Path, name: str, is_label: bool) -> tuple[_Volume | None, list[Finding]]:
    what = "mask" if is_label else "image"
    try:
        sizeof_hdr = stream.read(4)
        stream.seek(0)
        nifti2 = 540 in (int.from_bytes(sizeof_hdr, order) for order in ("little", "big"))
        file_holder = nib.FileHolder(filename=str(path), fileobj=stream)
        image = (nib.Nifti2Image if nifti2 else nib.Nifti1Image).from_file_map(
            {"header": file_holder, "image": file_holder}
        )
        shape = tuple(int(s) for s in image.shape)
        affine = np.asarray(image.affine, dtype=np.float64)
    except HEADER_ERRORS as err:
        if isinstance(err, EOFError | nib.wrapstruct.WrapStructError):
            said = "the file ends before its header does: it is truncated (or empty)"
            return None, [_finding(name, "truncated", f"{said} ({type(err).__name__}: {err}).")]
        return None, [_finding(name, "unreadable", f"cannot be read as NIfTI ({type(err).__name__}: {err}).")]
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        message = (
            f"the {what} must be a 3D volume (a trailing 4th dimension of 1 is accepted), not shape {shape}; "
            "its voxels were not checked further."
        )
        return _Volume(shape, affine, None), [_finding(name, "not_3d", message)]
    try:
        data = np.asanyarray(image.dataobj.get_unscaled())
        stream.read()
    except DATA_ERRORS as err:
        if isinstance(err, zlib.error | gzip.BadGzipFile):
            problem, said = "corrupt", "its compressed data is corrupt (it does not decompress, or fails its checksum)"
        else:
            problem, said = "truncated", "the file ends early: it is truncated"
        message = f"the header reads but {said} ({type(err).__name__}: {err})."
        return _Volume(shape, affine, None), [_finding(name, problem, message)]
    findings = []
    finite = np.isfinite(data) if np.issubdtype(data.dtype, np.floating) else None
    n_bad = 0 if finite is None else data.size - int(np.count_nonzero(finite))
    if n_bad:
        message = (
            f"the {what} must hold finite values, not {n_bad} NaN/Inf voxel(s) of {data.size} ({data.dtype}); "
            "they would poison the intensity normalisation and the loss."
        )
        findings.append(_finding(name, "non_finite", message))
    values = _values(data, finite, float(image.dataobj.slope), float(image.dataobj.inter)) if is_label else None
    return _Volume(shape, affine, values), findings


def _binarised(values: _Values) -> str:
    """Say what binarising at > 0.5 does to a mask's values."""
    if values.n_foreground == 0:
        said = f"no value is above {LABEL_THRESHOLD:g}, so the mask becomes empty"
    elif values.n_foreground == 1:
        v = values.foreground[0]
        said = "1 stays 1" if v == 1 else f"{v:g} becomes 1, which is right for a 0/{v:g} mask"
    else:
        labels = _fmt(values.foreground, values.n_foreground)
        said = f"the {values.n_foreground} labels {labels} merge into one PVS class (several labels in one mask?)"
    if values.dropped:
        said += f"; the values {_fmt(values.dropped)} become background"
    return said


def _label_findings(name: str, values: _Values, non_binary: str) -> list[Finding]:
    findings = []
    if values.is_empty:
        findings.append(_finding(name, "empty_mask", "the mask has no foreground voxel; the datalist skips its case."))
    if not values.is_binary:
        start = f"the mask must hold only 0 and 1, not {_fmt(values.shown, values.n_distinct)}"
        if non_binary == "refuse":
            message = f"{start} (non_binary='refuse'); binarising at > {LABEL_THRESHOLD:g} would do this: "
        else:
            message = f"{start}; training binarises it at > {LABEL_THRESHOLD:g}: "
        severity = ERROR if non_binary == "refuse" else WARNING
        findings.append(_finding(name, "non_binary_label", f"{message}{_binarised(values)}.", severity))
    return findings


def _too_small(name: str, volume: _Volume, settings: _Settings) -> list[Finding]:
    extent = resampled_shape(volume.shape, volume.affine, settings.pixdim)
    short = [_RAS_AXES[i] for i in range(3) if extent[i] < settings.patch_size[i]]
    if not short:
        return []
    message = (
        f"resampled to {list(settings.pixdim)} mm it spans {list(extent)} voxels (RAS order), smaller than the "
        f"patch {list(settings.patch_size)} along {', '.join(short)}; it will be zero-padded to the patch "
        "(the foreground crop can shrink it further)."
    )
    sizes = ", ".join(f"{z:.4g}" for z in _voxel_sizes(volume.affine))
    fix = f"Nothing if the volume is truly small; otherwise check its voxel size ({sizes} mm) or use a smaller patch."
    return [_finding(name, "too_small", message, fix=fix)]


def _pair_findings(image: str, image_vol: _Volume, label: str, label_vol: _Volume, atol: float) -> list[Finding]:
    """Compare the grids of an image and its mask (headers only)."""
    if image_vol.shape[:3] != label_vol.shape[:3]:
        message = f"the mask's shape {label_vol.shape[:3]} must equal its image's {image_vol.shape[:3]} ({image})."
        return [_finding(label, "shape_mismatch", message)]
    diff = label_vol.affine[:3] - image_vol.affine[:3]
    if np.abs(diff).max() <= atol:
        return []
    shift = ", ".join(f"{d:.4g}" for d in diff[:, 3])
    message = (
        f"the mask's affine must match its image's ({image}) within {atol:g}, not differ by up to "
        f"{np.abs(diff).max():.4g} (origin shifted by ({shift}) mm, voxel axes by up to "
        f"{np.abs(diff[:, :3]).max():.4g}); the mask would not lie on the anatomy."
    )
    return [_finding(label, "affine_mismatch", message)]


def _display(path: Path, root: Path | None) -> str:
    if root is not None and path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    return str(path)


class _Inspector:
    """Reads each file once and collects the findings of one check."""

    def __init__(self, settings: _Settings, root: Path | None) -> None:
        self.settings = settings
        self.root = root
        self.findings: list[Finding] = []
        self._volumes: dict[Path, _Volume | None] = {}
        self._refused: set[Path] = set()

    def volume(self, path: Path, is_label: bool) -> _Volume | None:
        """Read and check one file (once); return its summary, or None when unreadable."""
        if path in self._volumes:
            return self._volumes[path]
        name = _display(path, self.root)
        volume, findings = _read(path, name, is_label)
        if volume is not None and volume.values is not None:
            findings += _label_findings(name, volume.values, self.settings.non_binary)
        if volume is not None and not is_label and len(volume.shape) >= 3:
            findings += _too_small(name, volume, self.settings)
        self._volumes[path] = volume
        self.findings += findings
        return volume

    def pair(self, image: Path, label: Path) -> None:
        """Check an image and its mask, then their grids against each other."""
        image_vol, label_vol = self.volume(image, False), self.volume(label, True)
        if image_vol is not None and label_vol is not None:
            image_name, label_name = _display(image, self.root), _display(label, self.root)
            self.findings += _pair_findings(image_name, image_vol, label_name, label_vol, self.settings.affine_atol)

    def usable(self, path: Path) -> bool:
        """True when a listed file exists and is NIfTI; otherwise record why not (once per file)."""
        if path.is_file() and strip_nifti_suffix(path.name) is not None:
            return True
        if path not in self._refused:
            self._refused.add(path)
            name = _display(path, self.root)
            if path.is_file():
                ext = "".join(path.suffixes) or "no extension"
                message = f"must be NIfTI (.nii or .nii.gz), not {ext}; the workflows cannot load it."
                self.findings.append(_finding(name, "not_nifti", message, ERROR, f"{_TO_NIFTI} and list that file."))
            else:
                self.findings.append(_finding(name, "missing_file", "does not exist."))
        return False

    def report(self, extra: dict | None = None) -> DataCheckReport:
        """Return the report, findings sorted by file."""
        settings = {**asdict(self.settings), **(extra or {})}
        checked = sorted(_display(p, self.root) for p in self._volumes)
        findings = sorted(self.findings, key=lambda f: (f.file, f.problem))
        return DataCheckReport(str(self.root) if self.root else None, settings, checked, findings)


# --- the dataset's layout ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    path: Path
    name: str
    entities: dict[str, str]


def _files(folder: Path) -> list[Path]:
    """All files under a folder, recursively, leaving out hidden ones and those in hidden folders."""
    found = (p for p in folder.rglob("*") if p.is_file())
    return sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _folder_mismatch(name: str, entities: dict[str, str], folders: Sequence[str]) -> list[Finding]:
    from_folders = dict(part.split("-", 1) for part in folders if part.startswith(("sub-", "ses-")))
    wrong = [k for k, v in from_folders.items() if entities.get(k) != v]
    if not wrong:
        return []
    said = ", ".join(
        f"{k}-{entities.get(k, '(none)')} in the name but {k}-{from_folders[k]} in the path" for k in wrong
    )
    message = f"{said}; the datalist pairs by the name, so the file may be in the wrong folder."
    return [_finding(name, "folder_mismatch", message)]


def _classify(path: Path, name: str, folders: Sequence[str], suffix: str) -> tuple[_Candidate | None, list[Finding]]:
    """Decide what a file in an image or mask folder is: a file to check, a sidecar, another modality, a problem."""
    if path.name.endswith(SIDECAR_EXTENSIONS):
        return None, []
    if strip_nifti_suffix(path.name) is None:
        ext = "".join(path.suffixes) or "no extension"
        message = f"must be NIfTI (.nii or .nii.gz) in this folder, not {ext}; the datalist ignores it."
        return None, [_finding(name, "not_nifti", message)]
    try:
        entities, found = parse_entities(path)
    except ValueError:
        refused = fnmatch.fnmatch(path.name, f"*_{suffix}.nii*")  # the datalist's own pattern
        message = (
            f"must be named like sub-<label>[_ses-<label>][_acq-<label>][_run-<label>]_..._{suffix}.nii.gz, not "
            f"{path.name}; the datalist " + ("refuses the dataset." if refused else "ignores it.")
        )
        return None, [_finding(name, "bids_name", message, ERROR if refused else WARNING)]
    if found != suffix:
        return None, []
    return _Candidate(path, name, entities), _folder_mismatch(name, entities, folders)


def _misplaced(name: str, suffix: str, expected: str) -> Finding:
    message = f"{suffix} files must be in {expected}; the datalist does not look here and ignores it."
    return _finding(name, "misplaced", message, fix=f"Move it into {expected}.")


def _scan_images(root: Path) -> tuple[list[_Candidate], list[Finding]]:
    """Find the T2w images the datalist would use, and what is wrong in the subject folders."""
    candidates, findings = [], []
    for sub_dir in sorted(p for p in root.glob("sub-*") if p.is_dir()):
        for path in _files(sub_dir):
            rel = path.relative_to(root)
            folders = rel.parts[:-1]
            if folders[-1] == "anat" and (len(folders) == 2 or (len(folders) == 3 and folders[1].startswith("ses-"))):
                candidate, more = _classify(path, rel.as_posix(), folders, IMAGE_SUFFIX)
                findings += more
                candidates += [candidate] if candidate else []
            elif f"_{IMAGE_SUFFIX}." in path.name and not path.name.endswith(SIDECAR_EXTENSIONS):
                findings.append(_misplaced(rel.as_posix(), IMAGE_SUFFIX, "sub-<label>/[ses-<label>/]anat/"))
    return candidates, findings


def _scan_labels(root: Path, label_dir: str) -> tuple[list[_Candidate], list[Finding]]:
    """Find the PVS masks the datalist would use, and what is wrong in the mask folder."""
    label_root = root / label_dir
    if not label_root.is_dir():
        message = f"the mask folder does not exist under {root}; no image can be paired with a mask."
        return [], [_finding(label_dir, "label_dir_missing", message)]
    candidates, findings = [], []
    for path in _files(label_root):
        name, folders = _display(path, root), path.relative_to(label_root).parts[:-1]
        if folders and folders[0].startswith("sub-"):
            candidate, more = _classify(path, name, folders, LABEL_SUFFIX)
            findings += more
            candidates += [candidate] if candidate else []
        elif f"_{LABEL_SUFFIX}." in path.name and not path.name.endswith(SIDECAR_EXTENSIONS):
            findings.append(_misplaced(name, LABEL_SUFFIX, f"{label_dir}/sub-<label>/[ses-<label>/]"))
    return candidates, findings


def _index(candidates: list[_Candidate]) -> tuple[dict[tuple[str | None, ...], _Candidate], list[Finding]]:
    """Index files by their pairing entities; every file beyond the first (.nii.gz first) of a case is a duplicate."""
    groups: dict[tuple[str | None, ...], list[_Candidate]] = {}
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
            findings.append(_finding(other.name, "duplicate", message))
    return index, findings


def _case_dir(entities: dict[str, str]) -> str:
    """Return ``sub-<label>`` or ``sub-<label>/ses-<label>``."""
    return "/".join(f"{k}-{entities[k]}" for k in ("sub", "ses") if k in entities)


def check_dataset(
    dataset_dir: str | Path,
    label_dir: str = "derivatives/mask",
    patch_size: Sequence[int] = (96, 96, 96),
    pixdim: Sequence[float] = (0.8, 0.8, 0.8),
    non_binary: str = "binarize",
    affine_atol: float = 1e-3,
) -> DataCheckReport:
    """Check a BIDS dataset laid out like OpenNeuro ds005595, reading each file once and reporting every problem.

    Args:
        dataset_dir: root of the BIDS dataset.
        label_dir: folder of the masks, relative to the root.
        patch_size: the training patch, in RAS order; volumes smaller after resampling are reported.
        pixdim: the voxel size the preprocessing resamples to, in mm.
        non_binary: ``"binarize"`` (a non-binary mask is a warning: training binarises it at > 0.5) or
            ``"refuse"`` (it is an error).
        affine_atol: the largest absolute difference allowed between entries of an image's and its mask's affine.

    Returns:
        The report; its paths are relative to ``dataset_dir``.

    Raises:
        FileNotFoundError: when ``dataset_dir`` is not a directory.
        ValueError: on malformed settings.
    """
    settings = _settings(patch_size, pixdim, non_binary, affine_atol)
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset_dir must be an existing directory, not {root} (it does not exist).")
    inspector = _Inspector(settings, root)
    images, image_findings = _scan_images(root)
    labels, label_findings = _scan_labels(root, label_dir)
    image_index, image_duplicates = _index(images)
    label_index, label_duplicates = _index(labels)
    inspector.findings += image_findings + label_findings + image_duplicates + label_duplicates
    if not images:
        message = f"the dataset {root} holds no T2w image (sub-<label>/[ses-<label>/]anat/*_T2w.nii[.gz])."
        inspector.findings.append(_finding(".", "no_images", message))
    for key, image in image_index.items():
        if key in label_index:
            inspector.pair(image.path, label_index[key].path)
            continue
        inspector.volume(image.path, False)
        message = f"no PVS mask with the same (sub, ses, acq, run) entities under {label_dir}/; the datalist skips it."
        expected = f"{label_dir}/{_case_dir(image.entities)}/{case_id(image.entities)}_desc-mask_PVS.nii.gz"
        fix = f"Add its mask as {expected}, or leave it if the subject is unlabelled."
        inspector.findings.append(_finding(image.name, "image_without_label", message, fix=fix))
    for key, label in label_index.items():
        if key not in image_index:
            inspector.volume(label.path, True)
            message = "no T2w image with the same (sub, ses, acq, run) entities; the mask is not used."
            expected = f"{_case_dir(label.entities)}/anat/{case_id(label.entities)}_T2w.nii.gz"
            fix = f"Add its image as {expected}, or remove the mask."
            inspector.findings.append(_finding(label.name, "label_without_image", message, fix=fix))
    for is_label, candidates in ((False, images), (True, labels)):
        for candidate in candidates:
            inspector.volume(candidate.path, is_label)  # the duplicates: the others were read above
    return inspector.report({"label_dir": label_dir})


def check_cases(
    cases: list[dict],
    patch_size: Sequence[int] = (96, 96, 96),
    pixdim: Sequence[float] = (0.8, 0.8, 0.8),
    non_binary: str = "binarize",
    affine_atol: float = 1e-3,
    root: str | Path | None = None,
) -> DataCheckReport:
    """Run the same per-file and per-pair checks on a datalist's cases, the inputs of a workflow.

    Args:
        cases: dicts with an ``image`` path and an optional ``label`` path (absolute, or relative to ``root``).
        patch_size: the training patch, in RAS order.
        pixdim: the voxel size the preprocessing resamples to, in mm.
        non_binary: ``"binarize"`` or ``"refuse"``, as in :func:`check_dataset`.
        affine_atol: the largest absolute difference allowed between entries of an image's and its mask's affine.
        root: the folder that relative paths are taken from and that paths are shown relative to; when None,
            paths are shown as given.

    Returns:
        The report. A file named by several cases is read once.

    Raises:
        ValueError: on malformed settings, or a case without an ``image``.
    """
    settings = _settings(patch_size, pixdim, non_binary, affine_atol)
    base = Path(root).expanduser().resolve() if root is not None else None
    inspector = _Inspector(settings, base)
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


def _conclude(report: DataCheckReport, report_file: str | Path) -> dict:
    """Write the report, log its summary and raise on errors."""
    path = write_report(report, report_file)
    (logger.warning if report.findings else logger.info)("%s\nReport: %s", report.summary(), path)
    raise_on_errors(report, path)
    return report.as_dict()


def run_check(
    dataset_dir: str | Path,
    report_file: str | Path,
    label_dir: str = "derivatives/mask",
    patch_size: Sequence[int] = (96, 96, 96),
    pixdim: Sequence[float] = (0.8, 0.8, 0.8),
    non_binary: str = "binarize",
    affine_atol: float = 1e-3,
) -> dict:
    """Check a dataset, write the report, log the summary, and fail when there are errors (for a bundle run id).

    Args:
        dataset_dir: root of the BIDS dataset.
        report_file: where the JSON report is written.
        label_dir: folder of the masks, relative to the root.
        patch_size: the training patch, in RAS order.
        pixdim: the voxel size the preprocessing resamples to, in mm.
        non_binary: ``"binarize"`` or ``"refuse"``.
        affine_atol: the largest absolute difference allowed between entries of an image's and its mask's affine.

    Returns:
        The report as a dict, when there is no error.

    Raises:
        FileNotFoundError: when ``dataset_dir`` is not a directory.
        ValueError: on malformed settings, or listing every error found.
    """
    return _conclude(check_dataset(dataset_dir, label_dir, patch_size, pixdim, non_binary, affine_atol), report_file)


def run_case_check(
    cases: list[dict],
    report_file: str | Path,
    patch_size: Sequence[int] = (96, 96, 96),
    pixdim: Sequence[float] = (0.8, 0.8, 0.8),
    non_binary: str = "binarize",
    affine_atol: float = 1e-3,
    root: str | Path | None = None,
) -> dict:
    """Check a workflow's input cases, write the report, log the summary, and fail when there are errors.

    Args:
        cases: dicts with an ``image`` and an optional ``label`` path.
        report_file: where the JSON report is written.
        patch_size: the training patch, in RAS order.
        pixdim: the voxel size the preprocessing resamples to, in mm.
        non_binary: ``"binarize"`` or ``"refuse"``.
        affine_atol: the largest absolute difference allowed between entries of an image's and its mask's affine.
        root: the folder that paths are shown relative to.

    Returns:
        The report as a dict, when there is no error.

    Raises:
        ValueError: on malformed settings or cases, or listing every error found.
    """
    return _conclude(check_cases(cases, patch_size, pixdim, non_binary, affine_atol, root), report_file)


def main(
    dataset_dir: str,
    report: str | None = None,
    label_dir: str = "derivatives/mask",
    patch_size: Sequence[int] = (96, 96, 96),
    pixdim: Sequence[float] = (0.8, 0.8, 0.8),
    non_binary: str = "binarize",
    affine_atol: float = 1e-3,
) -> None:
    """Command line: check a dataset and print the summary; exit 1 on errors, 2 on bad arguments, else 0.

    Args:
        dataset_dir: root of the BIDS dataset.
        report: where to write the JSON report (none is written when omitted).
        label_dir: folder of the masks, relative to the root.
        patch_size: the training patch, e.g. ``"[96,96,96]"``.
        pixdim: the voxel size the preprocessing resamples to, e.g. ``"[0.8,0.8,0.8]"``.
        non_binary: ``binarize`` or ``refuse``.
        affine_atol: the largest absolute difference allowed between entries of an image's and its mask's affine.

    Raises:
        SystemExit: status 1 when there are errors, 2 on bad arguments.
    """
    try:
        result = check_dataset(dataset_dir, label_dir, patch_size, pixdim, non_binary, affine_atol)
    except (FileNotFoundError, ValueError) as err:
        print(f"data_check: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    print(result.summary())
    if report is not None:
        print(f"Report: {write_report(result, report)}")
    if result.errors:
        raise SystemExit(1)


if __name__ == "__main__":
    import fire

    from scripts.errors import install

    install()
    fire.Fire(main)
