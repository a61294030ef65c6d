"""Test-set visualisation grid: one row per subject, axial, coronal and sagittal slices with overlays.

Arrays are assumed RAS-ordered (axis 0 left → right, axis 1 posterior → anterior, axis 2 inferior →
superior). Slices are drawn with superior (coronal, sagittal) or anterior (axial) up, the subject's right
on the right of the page (neurological convention) in axial and coronal views, and anterior on the right
in sagittal views. Each view shows the slice where the reference has the most PVS voxels (the middle slice
when the reference is empty). The image is grey, the reference red, the prediction green, and their
overlap yellow. Figures are drawn with matplotlib's object API and rendered by Agg (no display, no pyplot
state), then saved as JPEG atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from scripts.io import atomic_write
from scripts.nifti import check_spacing
from scripts.tables import SUBJECT_KEY

VIEW_AXES: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}
CASE_ARRAYS: tuple[str, ...] = ("image", "label", "pred")
OVERLAY_ALPHA = 0.6
DISPLAY_PERCENTILES: tuple[float, float] = (0.5, 99.5)
PANEL_INCHES = 2.6
LEGEND: tuple[tuple[str, str], ...] = (("red", "reference"), ("lime", "prediction"), ("yellow", "overlap"))


def choose_slices(label: np.ndarray) -> dict[str, int]:
    """Index of the slice with the most reference voxels in each view (the middle slice if the label is empty).

    Args:
        label: 3D RAS-ordered reference; voxels > 0.5 are foreground.

    Returns:
        A dict view name (``axial``, ``coronal``, ``sagittal``) -> slice index along that view's axis
        (2, 1 and 0). Ties go to the lowest index.

    Raises:
        ValueError: if ``label`` is not 3D.
    """
    mask = np.asarray(label) > 0.5
    if mask.ndim != 3:
        raise ValueError(f"label must be 3D, not of shape {mask.shape}.")
    slices = {}
    for view, axis in VIEW_AXES.items():
        counts = mask.sum(axis=tuple(a for a in range(3) if a != axis))
        slices[view] = int(np.argmax(counts)) if counts.any() else mask.shape[axis] // 2
    return slices


def view_slice(volume: np.ndarray, view: str, index: int) -> np.ndarray:
    """Extract one slice of a RAS volume, transposed for ``imshow(..., origin="lower")``.

    Rows of the result run inferior → superior (axial: posterior → anterior) and columns left → right
    (sagittal: posterior → anterior).

    Args:
        volume: 3D RAS-ordered array.
        view: ``axial``, ``coronal`` or ``sagittal``.
        index: slice index along the view's axis.

    Returns:
        The 2D slice.

    Raises:
        ValueError: if ``view`` is unknown.
    """
    if view not in VIEW_AXES:
        raise ValueError(f"view must be one of {tuple(VIEW_AXES)}, not {view!r}.")
    return np.take(volume, index, axis=VIEW_AXES[view]).T


def overlay_rgba(label: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """RGBA overlay of a reference (red) and a prediction (green); overlap comes out yellow.

    Args:
        label: 2D reference slice; voxels > 0.5 are foreground.
        pred: 2D prediction slice of the same shape.

    Returns:
        A float array of shape ``label.shape + (4,)``, transparent where both are background.
    """
    ref_mask, pred_mask = label > 0.5, pred > 0.5
    rgba = np.zeros((*ref_mask.shape, 4))
    rgba[..., 0] = ref_mask
    rgba[..., 1] = pred_mask
    rgba[..., 3] = OVERLAY_ALPHA * (ref_mask | pred_mask)
    return rgba


def _check_case(case: dict[str, Any], index: int) -> None:
    missing = [key for key in (SUBJECT_KEY, *CASE_ARRAYS) if key not in case]
    if missing:
        raise ValueError(f"case {index} must have the keys {(SUBJECT_KEY, *CASE_ARRAYS)}, not {list(case)}.")
    shapes = {key: np.shape(case[key]) for key in CASE_ARRAYS}
    if len(set(shapes.values())) != 1 or len(shapes["image"]) != 3:
        raise ValueError(f"image, label and pred of {case[SUBJECT_KEY]} must be 3D of one shape, not {shapes}.")


def _panel_aspect(view: str, spacing: Sequence[float]) -> float:
    """Pixel height / width of a view, from the voxel spacing."""
    row_axis, column_axis = {"axial": (1, 0), "coronal": (2, 0), "sagittal": (2, 1)}[view]
    return float(spacing[row_axis]) / float(spacing[column_axis])


def save_visualization_grid(
    cases: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    dpi: int = 300,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> None:
    """Save the grid of axial, coronal and sagittal slices with reference and prediction overlays as JPEG.

    Args:
        cases: dicts with ``subject`` (str) and 3D RAS arrays ``image``, ``label``, ``pred`` in one grid.
        path: destination JPEG file (written atomically; the parent directory is created).
        dpi: resolution recorded in and used to render the JPEG.
        spacing: voxel spacing in mm of the arrays, used for the aspect ratio of the panels.

    Raises:
        ValueError: if ``cases`` is empty, a case lacks a key, its arrays are not 3D of one shape, or the
            spacing is invalid.
    """
    spacing = check_spacing(spacing)
    if not cases:
        raise ValueError("cases must hold at least one case, not none.")
    for index, case in enumerate(cases):
        _check_case(case, index)
    figure = Figure(figsize=(3 * PANEL_INCHES, len(cases) * PANEL_INCHES + 0.8), layout="constrained")
    axes = figure.subplots(len(cases), 3, squeeze=False)
    for row, case in enumerate(cases):
        image = np.asarray(case["image"], dtype=np.float32)
        low, high = np.percentile(image, DISPLAY_PERCENTILES)
        for column, (view, index) in enumerate(choose_slices(case["label"]).items()):
            ax = axes[row, column]
            aspect = _panel_aspect(view, spacing)
            ax.imshow(view_slice(image, view, index), cmap="gray", vmin=low, vmax=high, origin="lower", aspect=aspect)
            overlay = overlay_rgba(view_slice(case["label"], view, index), view_slice(case["pred"], view, index))
            ax.imshow(overlay, origin="lower", aspect=aspect, interpolation="nearest")
            ax.set_title(f"{view} {index}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(str(case[SUBJECT_KEY]), fontsize=9)
    figure.suptitle("Reference (red), prediction (green), overlap (yellow)", fontsize=10)
    legend = [Patch(color=color, label=name) for color, name in LEGEND]
    figure.legend(handles=legend, loc="outside lower center", ncol=3, fontsize=8)
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="jpeg", dpi=dpi, pil_kwargs={"quality": 95}))
