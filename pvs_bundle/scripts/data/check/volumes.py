"""The data check's reading of NIfTI files: each file read once, its problems, and those of an image and its mask.

A file is read in one pass, header, voxels, then to the end of the stream: nibabel reads only the bytes the
voxels need, so a ``.nii.gz`` whose compressed data is damaged, or that lacks its last bytes, loads without
complaint; reading the stream to its end makes gzip check its CRC and length. Only a summary is kept per file
(:class:`Volume`: shape, affine, and for a mask its distinct values), never the voxels. An :class:`Inspector`
reads each file of one check once and collects the findings.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import nibabel as nib
import numpy as np

from scripts.bids import strip_nifti_suffix
from scripts.data.check.report import ERROR, TO_NIFTI, WARNING, DataCheckReport, Finding, finding
from scripts.data.check.settings import CheckSettings
from scripts.masks import LABEL_THRESHOLD
from scripts.nifti import DATA_ERRORS, HEADER_ERRORS, count_non_finite, finite_voxels, voxel_size

_SHOWN = 8  # distinct mask values quoted in a message
_RAS_AXES: tuple[str, ...] = ("x (left-right)", "y (posterior-anterior)", "z (inferior-superior)")


@dataclass(frozen=True)
class MaskValues:
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
class Volume:
    """What the checks need from one NIfTI file; the voxels themselves are not kept."""

    shape: tuple[int, ...]
    affine: np.ndarray
    values: MaskValues | None  # masks whose voxels were read


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
    zooms = voxel_size(affine)
    out = [0, 0, 0]
    for axis, (ras_axis, _) in enumerate(nib.orientations.io_orientation(affine)):
        ras = int(ras_axis)
        out[ras] = int(np.round((shape[axis] - 1) * zooms[axis] / pixdim[ras] + 1.0))
    return out[0], out[1], out[2]


def _fmt(values: Sequence[float], total: int = 0) -> str:
    text = ", ".join(f"{v:g}" for v in values)
    return f"[{text}, … ({total} distinct values)]" if total > len(values) else f"[{text}]"


def _values(data: np.ndarray, finite: np.ndarray | None, slope: float, inter: float) -> MaskValues:
    """Summarise the distinct scaled values of a mask, sorting only its non-zero voxels (which are few)."""
    keep = data != 0 if finite is None else (data != 0) & finite
    raw = np.unique(data[keep])
    if np.any(data == 0):
        raw = np.union1d(raw, np.zeros(1, dtype=raw.dtype))
    scaled = raw.astype(np.float64) * slope + inter
    foreground = scaled[scaled > LABEL_THRESHOLD]
    dropped = scaled[(scaled != 0) & (scaled <= LABEL_THRESHOLD)]
    return MaskValues(
        n_distinct=int(scaled.size),
        shown=tuple(float(v) for v in scaled[:_SHOWN]),
        foreground=tuple(float(v) for v in foreground[:_SHOWN]),
        n_foreground=int(foreground.size),
        dropped=tuple(float(v) for v in dropped[:_SHOWN]),
    )


def read_volume(path: Path, name: str, is_label: bool) -> tuple[Volume | None, list[Finding]]:
    """Read one NIfTI file in one pass, header, voxels, then to the end; keep a summary, not the voxels.

    Args:
        path: the file.
        name: the file as the report shows it.
        is_label: whether it is a mask (its values are summarised).

    Returns:
        The summary (None when the header cannot be read; without values when the voxels cannot) and the findings.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as stream, nib.imageglobals.LoggingOutputSuppressor():
            return _read_stream(stream, path, name, is_label)
    except OSError as err:  # it cannot even be opened
        return None, [finding(name, "unreadable", f"cannot be opened ({type(err).__name__}: {err}).")]


def _read_stream(stream: BinaryIO, path: Path, name: str, is_label: bool) -> tuple[Volume | None, list[Finding]]:
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
            return None, [finding(name, "truncated", f"{said} ({type(err).__name__}: {err}).")]
        return None, [finding(name, "unreadable", f"cannot be read as NIfTI ({type(err).__name__}: {err}).")]
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        message = (
            f"the {what} must be a 3D volume (a trailing 4th dimension of 1 is accepted), not shape {shape}; "
            "its voxels were not checked further."
        )
        return Volume(shape, affine, None), [finding(name, "not_3d", message)]
    try:
        data = np.asanyarray(image.dataobj.get_unscaled())
        stream.read()
    except DATA_ERRORS as err:
        if isinstance(err, zlib.error | gzip.BadGzipFile):
            problem, said = "corrupt", "its compressed data is corrupt (it does not decompress, or fails its checksum)"
        else:
            problem, said = "truncated", "the file ends early: it is truncated"
        message = f"the header reads but {said} ({type(err).__name__}: {err})."
        return Volume(shape, affine, None), [finding(name, problem, message)]
    findings = []
    finite = finite_voxels(data)
    n_bad = count_non_finite(data, finite)
    if n_bad:
        message = (
            f"the {what} must hold finite values, not {n_bad} NaN/Inf voxel(s) of {data.size} ({data.dtype}); "
            "they would poison the intensity normalisation and the loss."
        )
        findings.append(finding(name, "non_finite", message))
    values = _values(data, finite, float(image.dataobj.slope), float(image.dataobj.inter)) if is_label else None
    return Volume(shape, affine, values), findings


def _binarised(values: MaskValues) -> str:
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


def label_findings(name: str, values: MaskValues, non_binary: str) -> list[Finding]:
    """The problems of a mask's values: empty, or not 0/1 (a warning, or an error with ``non_binary="refuse"``)."""
    findings = []
    if values.is_empty:
        findings.append(finding(name, "empty_mask", "the mask has no foreground voxel; the datalist skips its case."))
    if not values.is_binary:
        start = f"the mask must hold only 0 and 1, not {_fmt(values.shown, values.n_distinct)}"
        if non_binary == "refuse":
            message = f"{start} (non_binary='refuse'); binarising at > {LABEL_THRESHOLD:g} would do this: "
        else:
            message = f"{start}; training binarises it at > {LABEL_THRESHOLD:g}: "
        severity = ERROR if non_binary == "refuse" else WARNING
        findings.append(finding(name, "non_binary_label", f"{message}{_binarised(values)}.", severity))
    return findings


def too_small(name: str, volume: Volume, settings: CheckSettings) -> list[Finding]:
    """The ``too_small`` finding of an image smaller than the patch once resampled to ``pixdim``, if it is."""
    extent = resampled_shape(volume.shape, volume.affine, settings.pixdim)
    short = [_RAS_AXES[i] for i in range(3) if extent[i] < settings.patch_size[i]]
    if not short:
        return []
    message = (
        f"resampled to {list(settings.pixdim)} mm it spans {list(extent)} voxels (RAS order), smaller than the "
        f"patch {list(settings.patch_size)} along {', '.join(short)}; it will be zero-padded to the patch "
        "(the foreground crop can shrink it further)."
    )
    sizes = ", ".join(f"{z:.4g}" for z in voxel_size(volume.affine))
    fix = f"Nothing if the volume is truly small; otherwise check its voxel size ({sizes} mm) or use a smaller patch."
    return [finding(name, "too_small", message, fix=fix)]


def pair_findings(image: str, image_vol: Volume, label: str, label_vol: Volume, atol: float) -> list[Finding]:
    """Compare the grids of an image and its mask (headers only): their shapes, then their affines within ``atol``."""
    if image_vol.shape[:3] != label_vol.shape[:3]:
        message = f"the mask's shape {label_vol.shape[:3]} must equal its image's {image_vol.shape[:3]} ({image})."
        return [finding(label, "shape_mismatch", message)]
    diff = label_vol.affine[:3] - image_vol.affine[:3]
    if np.abs(diff).max() <= atol:
        return []
    shift = ", ".join(f"{d:.4g}" for d in diff[:, 3])
    message = (
        f"the mask's affine must match its image's ({image}) within {atol:g}, not differ by up to "
        f"{np.abs(diff).max():.4g} (origin shifted by ({shift}) mm, voxel axes by up to "
        f"{np.abs(diff[:, :3]).max():.4g}); the mask would not lie on the anatomy."
    )
    return [finding(label, "affine_mismatch", message)]


def display(path: Path, root: Path | None) -> str:
    """A file as the report shows it: relative to ``root`` when it is under it, else as given."""
    if root is not None and path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    return str(path)


class Inspector:
    """Reads each file of one check once and collects its findings."""

    def __init__(self, settings: CheckSettings, root: Path | None) -> None:
        """Start a check with these settings; files are shown relative to ``root`` (as given when None)."""
        self.settings = settings
        self.root = root
        self.findings: list[Finding] = []
        self._volumes: dict[Path, Volume | None] = {}
        self._refused: set[Path] = set()

    def volume(self, path: Path, is_label: bool) -> Volume | None:
        """Read and check one file (once); return its summary, or None when unreadable."""
        if path in self._volumes:
            return self._volumes[path]
        name = display(path, self.root)
        volume, findings = read_volume(path, name, is_label)
        if volume is not None and volume.values is not None:
            findings += label_findings(name, volume.values, self.settings.non_binary)
        if volume is not None and not is_label and len(volume.shape) >= 3:
            findings += too_small(name, volume, self.settings)
        self._volumes[path] = volume
        self.findings += findings
        return volume

    def pair(self, image: Path, label: Path) -> None:
        """Check an image and its mask, then their grids against each other."""
        image_vol, label_vol = self.volume(image, False), self.volume(label, True)
        if image_vol is not None and label_vol is not None:
            image_name, label_name = display(image, self.root), display(label, self.root)
            self.findings += pair_findings(image_name, image_vol, label_name, label_vol, self.settings.affine_atol)

    def usable(self, path: Path) -> bool:
        """True when a listed file exists and is NIfTI; otherwise record why not (once per file)."""
        if path.is_file() and strip_nifti_suffix(path.name) is not None:
            return True
        if path not in self._refused:
            self._refused.add(path)
            name = display(path, self.root)
            if path.is_file():
                ext = "".join(path.suffixes) or "no extension"
                message = f"must be NIfTI (.nii or .nii.gz), not {ext}; the workflows cannot load it."
                self.findings.append(finding(name, "not_nifti", message, ERROR, f"{TO_NIFTI} and list that file."))
            else:
                self.findings.append(finding(name, "missing_file", "does not exist."))
        return False

    def report(self, extra: dict | None = None) -> DataCheckReport:
        """Return the report, findings sorted by file."""
        settings = {**asdict(self.settings), **(extra or {})}
        checked = sorted(display(p, self.root) for p in self._volumes)
        findings = sorted(self.findings, key=lambda f: (f.file, f.problem))
        return DataCheckReport(str(self.root) if self.root else None, settings, checked, findings)
