"""Regions from a parcellation (FreeSurfer aseg / aparc+aseg / wmparc, SynthSeg), brought to the mask's grid.

A parcellation in FreeSurferColorLUT numbers, NIfTI or MGZ, in any grid of the same head, is resampled to the PVS
mask's grid by nearest neighbour through both affines (world millimetres), then each label is mapped to a region
by the ``regions`` setting of ``configs/inference.json``: ``{region: [labels]}``, where a label is an int or an
inclusive range ``"1000-1035"``. Two regions are added after those of the map: ``other`` (the labels the map lists
under ``other``, and non-zero labels it does not list at all, which one warning per file names) and ``outside``
(label 0: outside the parcellated brain).

The intracranial (brain) mask of a case is every non-zero label of its parcellation. Without a parcellation,
:func:`estimate_brain_mask` gives a documented estimate from the preprocessing's head mask.

Where parcellations are found (:func:`find_parcellation`), for an input with BIDS entities sub, ses, acq, run,
under ``parcellation_dir`` (e.g. a ``derivatives/synthseg`` or FreeSurfer ``SUBJECTS_DIR`` folder):

- BIDS derivatives: ``sub-<sub>/[ses-<ses>/]anat/*_dseg.nii[.gz]`` (or ``.mgz``) whose sub and ses entities are
  the input's, and whose acq and run entities, when present, are the input's too;
- FreeSurfer: ``sub-<sub>[_ses-<ses>]/mri/aparc+aseg.mgz`` (or ``aseg.mgz``; also ``sub-<sub>/ses-<ses>/mri/``),
  aparc+aseg preferred.

Several matching dseg files for one case are an error (name the one to use with ``parcellation_files``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from scripts.bids import PAIR_ENTITIES, parse_entities
from scripts.nifti import voxel_size

logger = logging.getLogger("pvs_bundle.regions")

OTHER_REGION = "other"
OUTSIDE_REGION = "outside"
PARCELLATION_NAMES: tuple[str, ...] = ("aparc+aseg.mgz", "aseg.mgz", "aparc+aseg.nii.gz", "aseg.nii.gz")
DSEG_SUFFIXES: tuple[str, ...] = ("_dseg.nii.gz", "_dseg.nii", "_dseg.mgz")
DEFAULT_REGIONS: dict[str, list[int | str]] = {
    "basal_ganglia": [11, 50, 12, 51, 13, 52, 26, 58],
    "thalamus": [10, 49],
    "cerebral_white_matter": [2, 41, 77, 78, 79, "251-255", "3001-3035", "4001-4035", 5001, 5002],
    "hippocampus": [17, 53],
    "brainstem_ventral_dc": [16, 28, 60],
    "cerebellum": [7, 8, 46, 47],
    "other": [3, 42, 4, 43, 5, 44, 14, 15, 18, 54, 24, 30, 62, 31, 63, 72, 80, 85, "1000-1035", "2000-2035"],
}
"""The region map of ``configs/inference.json`` (its ``regions``), which evaluation scores by."""
BRAIN_ESTIMATE_STEP_MM = 3.0
BRAIN_ESTIMATE_EROSION_MM = 6.0
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


@dataclasses.dataclass(frozen=True)
class RegionMap:
    """The label-to-region map of the configuration.

    Attributes:
        names: region names, the configured ones in order, then :data:`OTHER_REGION` and :data:`OUTSIDE_REGION`.
        labels: for each configured region (:data:`OTHER_REGION` included when listed), the labels it holds.
    """

    names: tuple[str, ...]
    labels: Mapping[str, frozenset[int]]

    @property
    def other(self) -> int:
        """Code of :data:`OTHER_REGION`."""
        return len(self.names) - 2

    @property
    def outside(self) -> int:
        """Code of :data:`OUTSIDE_REGION`."""
        return len(self.names) - 1


def region_map(regions: Mapping[str, Sequence[int | str]]) -> RegionMap:
    """Validate the ``regions`` setting and build the map.

    Args:
        regions: region name -> labels (ints, or ``"a-b"`` inclusive ranges), in the order regions are listed;
            labels under ``other`` go to :data:`OTHER_REGION` without a warning.

    Returns:
        The map.

    Raises:
        ValueError: if it is empty, a name is reserved or repeated, a label is not a non-negative int or range,
            or a label is listed in two regions.
    """
    if not isinstance(regions, Mapping) or not regions:
        raise ValueError(f"regions must be a non-empty mapping of region name to labels, not {regions!r}.")
    owner: dict[int, str] = {}
    labels: dict[str, frozenset[int]] = {}
    for name, entries in regions.items():
        if name == OUTSIDE_REGION or not isinstance(name, str) or not name:
            raise ValueError(f"region names must be non-empty strings other than {OUTSIDE_REGION!r}, not {name!r}.")
        if isinstance(entries, str) or not isinstance(entries, Sequence):
            raise ValueError(f"regions[{name!r}] must be a list of labels, not {entries!r}.")
        found: set[int] = set()
        for entry in entries:
            found.update(_labels_of(name, entry))
        for label in found:
            if label in owner:
                raise ValueError(f"label {label} must be in one region, not in both {owner[label]!r} and {name!r}.")
            owner[label] = name
        labels[name] = frozenset(found)
    named = tuple(name for name in labels if name != OTHER_REGION)
    if not named:
        raise ValueError(f"regions must name at least one region besides {OTHER_REGION!r}, not only {list(labels)}.")
    return RegionMap((*named, OTHER_REGION, OUTSIDE_REGION), labels)


def _labels_of(name: str, entry: int | str) -> range:
    if isinstance(entry, int) and not isinstance(entry, bool) and entry > 0:
        return range(entry, entry + 1)
    match = _RANGE.match(entry) if isinstance(entry, str) else None
    if match and 0 < int(match.group(1)) <= int(match.group(2)):
        return range(int(match.group(1)), int(match.group(2)) + 1)
    raise ValueError(f"regions[{name!r}] labels must be positive ints or ranges like '1000-1035', not {entry!r}.")


def find_parcellation(parcellation_dir: str | Path, image: str | Path) -> Path | None:
    """Find the parcellation of an input image under ``parcellation_dir`` (see the module docstring).

    Args:
        parcellation_dir: the folder to search.
        image: the input image; its BIDS entities select the parcellation.

    Returns:
        The parcellation file, or None when there is none (or the image name has no BIDS entities).

    Raises:
        FileNotFoundError: if ``parcellation_dir`` is not a folder.
        ValueError: if several dseg files match the image.
    """
    root = Path(parcellation_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"parcellation_dir must be an existing folder, not {root}.")
    try:
        entities, _ = parse_entities(image)
    except ValueError:
        return None
    sub, ses = f"sub-{entities['sub']}", (f"ses-{entities['ses']}" if "ses" in entities else None)
    folders = [root / sub / ses, root / f"{sub}_{ses}"] if ses else [root / sub]
    dsegs = sorted(
        path
        for folder in folders
        if folder.is_dir()
        for path in folder.rglob("*_dseg*")
        if path.name.endswith(DSEG_SUFFIXES) and _same_case(path, entities)
    )
    if len(dsegs) > 1:
        raise ValueError(
            f"parcellation_dir {root} must hold one dseg file for {image}, not {len(dsegs)}: "
            f"{', '.join(map(str, dsegs))}; name the one to use in parcellation_files."
        )
    if dsegs:
        return dsegs[0]
    for name in PARCELLATION_NAMES:
        for folder in folders:
            for candidate in (folder / "mri" / name, folder / name):
                if candidate.is_file():
                    return candidate
    return None


def parcellation_for(
    case: str,
    image: str | Path,
    parcellation_dir: str | Path | None,
    parcellation_files: Mapping[str, str | Path] | None,
) -> tuple[Path | None, str]:
    """The parcellation of a case and where it came from, or None and why there is none.

    Args:
        case: the case id (output stem, e.g. ``sub-001``), the key of ``parcellation_files``.
        image: the case's image, whose BIDS entities :func:`find_parcellation` matches under ``parcellation_dir``.
        parcellation_dir: the folder searched, or None.
        parcellation_files: case id -> parcellation file, looked up first.
    """
    files = parcellation_files or {}
    if case in files:
        return Path(files[case]), "parcellation_files"
    if parcellation_dir in (None, ""):
        return None, "no parcellation_dir or parcellation_files given"
    found = find_parcellation(parcellation_dir, image)
    if found is None:
        return None, f"no parcellation for {Path(image).name} under {parcellation_dir}"
    return found, str(parcellation_dir)


def _same_case(path: Path, entities: Mapping[str, str]) -> bool:
    name = path.name.replace(".mgz", ".nii.gz") if path.name.endswith(".mgz") else path.name
    try:
        found, _ = parse_entities(name)
    except ValueError:
        return False
    return all(
        found.get(key) == entities.get(key) if key in ("sub", "ses") else found.get(key) in (None, entities.get(key))
        for key in PAIR_ENTITIES
    )


def parcellation_in_grid(
    path: str | Path, reference: nib.spatialimages.SpatialImage, reference_name: str
) -> np.ndarray:
    """Load a parcellation and resample it to a reference grid by nearest neighbour through the affines.

    Args:
        path: the parcellation (NIfTI or MGZ, 3D, integer labels).
        reference: the image whose grid the result lies on.
        reference_name: the reference's file, for messages.

    Returns:
        An int32 label volume of the reference's spatial shape (0 outside the parcellation's field of view).

    Raises:
        ValueError: if the file cannot be read, is not 3D, or does not overlap the reference (another head).
    """
    try:
        image = nib.load(str(path))
        labels = np.asarray(image.dataobj)
    except Exception as err:  # nibabel raises many types for unreadable files
        raise ValueError(f"parcellation {path} cannot be read ({type(err).__name__}: {err}).") from err
    labels = labels[..., 0] if labels.ndim == 4 and labels.shape[3] == 1 else labels
    if labels.ndim != 3:
        raise ValueError(f"parcellation {path} must be a 3D label volume, not of shape {labels.shape}.")
    labels = np.rint(labels).astype(np.int32) if labels.dtype.kind == "f" else labels.astype(np.int32)
    shape = tuple(int(s) for s in reference.shape[:3])
    voxel_map = np.linalg.inv(image.affine) @ reference.affine
    if labels.shape == shape and np.allclose(voxel_map, np.eye(4), atol=1e-4):
        resampled = labels
    else:
        resampled = ndimage.affine_transform(
            labels,
            voxel_map[:3, :3],
            offset=voxel_map[:3, 3],
            output_shape=shape,
            order=0,
            mode="grid-constant",
            cval=0,
        )
    if labels.any() and not resampled.any():
        raise ValueError(
            f"parcellation {path} does not overlap the image {reference_name} in world coordinates: it must be a "
            "parcellation of the same head (check the subject, and that both files keep their scanner affines)."
        )
    return resampled


def region_codes(labels: np.ndarray, regions: RegionMap, source: str | Path) -> np.ndarray:
    """Map a label volume to region codes (indices into ``regions.names``).

    Non-zero labels the map does not list become :data:`OTHER_REGION`, with one warning naming them; label 0
    becomes :data:`OUTSIDE_REGION`.

    Args:
        labels: integer label volume.
        regions: the map.
        source: the parcellation file, for the warning.

    Returns:
        A uint8 volume of codes.
    """
    top = max(int(labels.max(initial=0)), max((max(v) for v in regions.labels.values() if v), default=0))
    lut = np.full(top + 1, regions.other, dtype=np.uint8)
    lut[0] = regions.outside
    for code, name in enumerate(regions.names[: regions.other]):
        lut[sorted(regions.labels[name])] = code
    clipped = np.clip(labels, 0, top)
    present = np.zeros(top + 1, dtype=bool)
    present[clipped.ravel()] = True
    listed_other = np.zeros(top + 1, dtype=bool)
    listed_other[sorted(regions.labels.get(OTHER_REGION, ()))] = True
    unmapped = np.flatnonzero(present & (lut == regions.other) & ~listed_other)
    if unmapped.size or (labels < 0).any():
        logger.warning(
            "Parcellation %s: labels %s are not in the region map; counted as %r.",
            source,
            sorted(set(unmapped.tolist()) | set(np.unique(labels[labels < 0]).tolist())),
            OTHER_REGION,
        )
    return np.where(labels < 0, regions.other, lut[clipped]).astype(np.uint8)


def estimate_brain_mask(head: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Estimate the intracranial mask from the head mask when there is no parcellation.

    On a grid of about :data:`BRAIN_ESTIMATE_STEP_MM` (every n-th voxel), the head mask is eroded by
    :data:`BRAIN_ESTIMATE_EROSION_MM` (which removes the scalp, thinner than twice that, and its thin bridges to
    the brain), its largest component is kept, dilated back by the same amount within the head mask and its holes
    filled; the result, grown by one coarse voxel and brought back to the full grid (nearest coarse voxel), is
    intersected with the head mask, and its largest component, holes filled, is the estimate. It removes the scalp
    that the head mask holds where the dark skull separates it; it is an estimate, not a skull stripping. The
    erosion treats the outside of the field of view as head: a brain the field of view cuts keeps its cut faces
    (eroding from them lost 2.6-23 % of the true PVS of cropped demo volumes, ``docs/performance.md``).

    Args:
        head: 3D binary head mask.
        affine: its voxel-to-world matrix.

    Returns:
        A boolean mask of the head's shape.
    """
    head = np.asarray(head) > 0.5
    spacing = voxel_size(affine)
    step = np.maximum(1, np.round(BRAIN_ESTIMATE_STEP_MM / spacing).astype(int))
    coarse = head[:: step[0], :: step[1], :: step[2]]
    radius = np.maximum(1, np.round(BRAIN_ESTIMATE_EROSION_MM / (spacing * step)).astype(int))
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    ball = sum((g / r) ** 2 for g, r in zip(grid, radius, strict=True)) <= 1
    core = ndimage.binary_erosion(coarse, ball, border_value=1)
    labels, count = ndimage.label(core)
    if count == 0:
        return ndimage.binary_fill_holes(head)
    largest = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    brain = ndimage.binary_fill_holes(ndimage.binary_dilation(largest, ball) & coarse)
    brain = ndimage.binary_dilation(brain, ndimage.generate_binary_structure(3, 3))
    index = tuple(
        np.minimum(np.rint(np.arange(n) / s).astype(int), m - 1)
        for n, s, m in zip(head.shape, step, brain.shape, strict=True)
    )
    # the full-grid work runs in the bounding box of the upsampled estimate, one voxel wider (same result, a
    # fraction of the memory and time): the box holds the whole estimate and a background rim for the hole filling
    rows = [brain.any(axis=tuple(a for a in range(3) if a != axis))[index[axis]] for axis in range(3)]
    if not all(r.any() for r in rows):
        return ndimage.binary_fill_holes(head)
    box = tuple(slice(max(int(r.argmax()) - 1, 0), min(len(r) - int(r[::-1].argmax()) + 1, len(r))) for r in rows)
    inside = brain.take(index[0][box[0]], 0).take(index[1][box[1]], 1).take(index[2][box[2]], 2) & head[box]
    labels, count = ndimage.label(inside, output=np.intp)
    if count == 0:
        return ndimage.binary_fill_holes(head)
    estimate = np.zeros(head.shape, dtype=bool)
    estimate[box] = ndimage.binary_fill_holes(labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return estimate
