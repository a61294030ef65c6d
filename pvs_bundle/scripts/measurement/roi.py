"""Where PVS are counted: the region of interest (ROI) of the measurement, and what falls outside it.

Every PVS tool keeps the brain's outer surface out of its counts: the CSF there is as bright as PVS on T2w, and a
model finds specks in it, most of all where the field of view cuts the brain (DRIPS counts only in the centrum
semiovale and basal ganglia of a SynthSeg parcellation; SHiVAi only inside a brain mask). The rule here:

- The **brain**: the case's parcellation (every non-zero label), else the estimate from the image's head mask
  (:func:`scripts.regions.estimate_brain_mask`).
- **Eroded** by ``erosion_mm`` (world millimetres, so the same at any voxel size): a voxel stays when every voxel
  centre within ``erosion_mm`` of it is brain. The edge of the field of view counts as outside the brain, so a brain
  cut by the field of view loses a rim there too.
- With a parcellation and ``regions`` (names of the region map, e.g. ``["basal_ganglia",
  "cerebral_white_matter"]``), only the voxels of those regions; without a parcellation ``regions`` cannot apply,
  and the rule written says so.

The mask written keeps every voxel the model found. The counts do not: ``pvs_count``, ``pvs_volume_mm3``,
``largest_pvs_mm3`` and ``pvs_volume_fraction`` are those of the mask inside the ROI (a PVS that crosses the ROI's
edge counts with its part inside), and the part outside is written apart, in ``outside_roi_count`` and
``outside_roi_volume_mm3`` of the burden table and as census rows of region ``outside``. As the ROI lies inside the
brain, the PVS volume counted can never exceed the brain's: the fraction is at most 1 (an undertrained model once
gave 1.48 when every voxel it marked counted). ``roi`` in the burden table states the rule that produced the row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from scripts.masks import bounding_box, label_components
from scripts.measurement.pvs_burden import pvs_burden
from scripts.nifti import voxel_size

ROI_EROSION_MM = 0.0
"""The default erosion of the brain (mm), chosen by ``benchmarks/roi_cost.py`` (see ``docs/performance.md``)."""
ROI_COLUMNS: tuple[str, ...] = ("roi", "roi_volume_mm3", "outside_roi_count", "outside_roi_volume_mm3")
"""The burden table's columns that the ROI adds, after :data:`scripts.measurement.pvs_burden.BURDEN_COLUMNS`."""


def check_roi(roi: Mapping[str, Any] | None, names: Sequence[str]) -> tuple[float, tuple[str, ...] | None]:
    """The erosion (mm) and regions of a ``roi`` setting ``{"erosion_mm": ..., "regions": ...}`` (None: defaults).

    Raises:
        ValueError: if ``roi`` has other keys, or a value is invalid (:func:`check_erosion`, :func:`check_regions`).
    """
    roi = {} if roi is None else roi
    if not isinstance(roi, Mapping) or set(roi) - {"erosion_mm", "regions"}:
        raise ValueError(f'roi must be {{"erosion_mm": mm, "regions": null or [region names]}}, not {roi!r}.')
    return check_erosion(roi.get("erosion_mm", ROI_EROSION_MM)), check_regions(roi.get("regions"), names)


def check_erosion(erosion_mm: float | str) -> float:
    """Return ``erosion_mm`` as a float >= 0 (command-line strings accepted).

    Raises:
        ValueError: if it is not a finite number >= 0.
    """
    try:
        value = float(erosion_mm)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(erosion_mm, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"roi#erosion_mm must be a number of millimetres >= 0 (0: the brain), not {erosion_mm!r}.")
    return value


def check_regions(regions: Sequence[str] | None, names: Sequence[str]) -> tuple[str, ...] | None:
    """Return the ROI's region names (None: the whole brain), checked against the region map's ``names``.

    Raises:
        ValueError: if ``regions`` is not a list of names of the region map, or is empty.
    """
    if regions is None or regions == "null":
        return None
    if isinstance(regions, str) or not isinstance(regions, Sequence) or not regions:
        raise ValueError(f"roi#regions must be null (the whole brain) or a non-empty list of regions, not {regions!r}.")
    unknown = [r for r in regions if r not in names]
    if unknown:
        raise ValueError(f"roi#regions {unknown} are not regions of the region map; use some of {list(names)}.")
    return tuple(str(r) for r in regions)


def erode_mm(brain: np.ndarray, affine: np.ndarray, erosion_mm: float) -> np.ndarray:
    """The brain mask eroded by a ball of ``erosion_mm`` in world mm (the array's edge counts as outside).

    Args:
        brain: 3D boolean brain mask.
        affine: its voxel-to-world matrix (only the voxel size is used).
        erosion_mm: the ball's radius in mm (0: the mask itself).
    """
    brain = np.asarray(brain, dtype=bool)
    spacing = voxel_size(affine)
    radius = np.floor(erosion_mm / spacing + 1e-9).astype(int)
    if erosion_mm <= 0 or not radius.any() or not brain.any():
        return brain.copy()  # no voxel centre but its own lies within erosion_mm
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    ball = sum((g * s) ** 2 for g, s in zip(grid, spacing, strict=True)) <= erosion_mm**2 + 1e-9
    box = bounding_box(brain, margin=int(radius.max()) + 1)
    eroded = np.zeros_like(brain)
    # the box holds the whole mask and a rim of background at least a radius wide, or ends at the array's edge,
    # which erodes as the array's edge does
    eroded[box] = ndimage.binary_erosion(brain[box], ball, border_value=0)
    return eroded


def roi_mask(
    brain: np.ndarray,
    affine: np.ndarray,
    erosion_mm: float = ROI_EROSION_MM,
    codes: np.ndarray | None = None,
    names: Sequence[str] = (),
    regions: Sequence[str] | None = None,
) -> np.ndarray:
    """The ROI of one case (see the module docstring).

    Args:
        brain: 3D boolean brain mask.
        affine: its voxel-to-world matrix.
        erosion_mm: erosion of the brain in mm.
        codes: region codes of the case's parcellation (indices into ``names``), or None.
        names: the region map's names.
        regions: the regions to keep (None: all); ignored without ``codes``.
    """
    roi = erode_mm(brain, affine, erosion_mm)
    if regions is not None and codes is not None:
        roi &= np.isin(codes, [names.index(r) for r in regions])
    return roi


def roi_rule(erosion_mm: float, regions: Sequence[str] | None, parcellation: bool) -> str:
    """The ROI rule in words, as the burden table's ``roi`` column writes it."""
    brain = "parcellation's brain" if parcellation else "estimated brain"
    rule = f"{brain} eroded by {erosion_mm:g} mm" if erosion_mm > 0 else f"{brain}, not eroded"
    if regions is None:
        return rule
    if not parcellation:
        return f"{rule} (roi#regions {', '.join(regions)} need a parcellation)"
    return f"{rule}, regions {', '.join(regions)}"


def roi_burden(mask: np.ndarray, brain: np.ndarray, roi: np.ndarray, voxel_mm3: float, rule: str) -> dict:
    """The burden of the PVS inside ``roi`` (:func:`pvs_burden` of ``mask & roi``) and what lies outside it.

    Args:
        mask: 3D PVS mask (voxels >= 0.5 are PVS).
        brain: the brain mask the fraction is taken of (``roi`` lies inside it).
        roi: the ROI mask.
        voxel_mm3: the volume of one voxel.
        rule: :func:`roi_rule`'s text.

    Returns:
        The columns of :data:`scripts.measurement.pvs_burden.BURDEN_COLUMNS` and :data:`ROI_COLUMNS`.
    """
    pvs = np.asarray(mask) >= 0.5
    labels, count = label_components(pvs & ~roi)
    outside_sizes = np.bincount(labels.ravel()[np.flatnonzero(labels)], minlength=count + 1)[1:]
    return {
        **pvs_burden(pvs & roi, brain, voxel_mm3),
        **outside_columns(rule, int(np.count_nonzero(roi)), outside_sizes, voxel_mm3),
    }


def outside_columns(rule: str, roi_voxels: int, outside_sizes: np.ndarray, voxel_mm3: float) -> dict:
    """The :data:`ROI_COLUMNS` of a burden row: the rule, the ROI's volume, and the PVS parts outside it.

    Args:
        rule: :func:`roi_rule`'s text.
        roi_voxels: the ROI's voxels.
        outside_sizes: the voxels of each 26-connected part of the mask outside the ROI.
        voxel_mm3: the volume of one voxel.
    """
    return {
        "roi": rule,
        "roi_volume_mm3": roi_voxels * voxel_mm3,
        "outside_roi_count": len(outside_sizes),
        "outside_roi_volume_mm3": int(np.sum(outside_sizes)) * voxel_mm3,
    }
