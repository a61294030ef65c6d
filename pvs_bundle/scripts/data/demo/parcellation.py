"""The demo's coarse parcellation, in FreeSurferColorLUT numbers like SynthSeg's output (not part of ds005595).

The template's tissue classes split by hemisphere (cerebral white matter 2/41, cortex 3/42, CSF 24); the grey and
white matter of the box where basal ganglia PVS are drawn (:data:`~scripts.data.demo.pvs.BASAL_GANGLIA_BOX_MM`),
grown by 6 mm, is putamen 12/51 (so the demo's regions match how its PVS were drawn); grey matter in boxes in MNI
space is thalamus 10/49 and hippocampus 17/53; the cerebellum (7/46, 8/47) and brainstem (16) lie below. It is
coarse anatomy for exercising the regional measurements end to end, not a real segmentation. Writing it does not
change the images and masks: a seed gives the same bytes as before it existed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from scripts.data.demo.anatomy import TISSUE_LABELS, SubjectWarp, labels_in_subject_grid, template
from scripts.data.demo.grid import DEMO_SHAPE
from scripts.data.demo.pvs import BASAL_GANGLIA_BOX_MM

_DEEP_GREY_BOXES_MM: tuple[tuple[int, int, tuple[tuple[float, float], ...]], ...] = (
    (10, 49, ((2.0, 22.0), (-38.0, -19.0), (-4.0, 18.0))),
    (17, 53, ((18.0, 40.0), (-42.0, -8.0), (-28.0, -15.0))),
)
"""(left label, right label, (|x|, y, z) MNI ranges): grey matter inside becomes thalamus, hippocampus."""
_PUTAMEN_MARGIN_MM = 6.0
"""Margin around :data:`BASAL_GANGLIA_BOX_MM` whose grey and white matter become putamen (12/51)."""


def parcellation(
    warp: SubjectWarp, shape: Sequence[int] = DEMO_SHAPE, *, voxel_size_mm: Sequence[float] | None = None
) -> np.ndarray:
    """A coarse parcellation in FreeSurferColorLUT numbers in a subject's grid (see the module docstring).

    Args:
        warp: the subject's transform, from :attr:`~scripts.data.demo.subject.SyntheticSubject.warp`.
        shape: the grid shape (at 0.8 mm) the subject was generated with.
        voxel_size_mm: the voxel size it was generated with.

    Returns:
        An int16 label volume of the subject's grid shape.

    Raises:
        ValueError: if ``shape`` is not three positive ints or ``voxel_size_mm`` is out of range.
    """
    return labels_in_subject_grid(_template_parcellation(), warp, shape, voxel_size_mm)


@functools.lru_cache(maxsize=1)
def _template_parcellation() -> np.ndarray:
    """The template's tissue classes as FreeSurferColorLUT labels on the 1 mm MNI grid, built once per process."""
    tissues = template()
    index = np.indices(tissues.labels.shape, dtype=np.float32)
    voxel_to_world = np.linalg.inv(tissues.world_to_voxel)
    x, y, z = (sum(voxel_to_world[a, b] * index[b] for b in range(3)) + voxel_to_world[a, 3] for a in range(3))
    left = x < 0
    classes = tissues.labels
    out = np.zeros(classes.shape, dtype=np.int16)
    out[classes == TISSUE_LABELS["csf"]] = 24
    out[classes == TISSUE_LABELS["wm"]] = np.where(left, 2, 41)[classes == TISSUE_LABELS["wm"]]
    grey = classes == TISSUE_LABELS["gm"]
    out[grey] = np.where(left, 3, 42)[grey]
    grown = tuple((lo - _PUTAMEN_MARGIN_MM, hi + _PUTAMEN_MARGIN_MM) for lo, hi in BASAL_GANGLIA_BOX_MM)
    putamen = (grey | (classes == TISSUE_LABELS["wm"])) & _in_box(np.abs(x), y, z, grown)
    out[putamen] = np.where(left, 12, 51)[putamen]
    for left_label, right_label, box in _DEEP_GREY_BOXES_MM:
        inside = grey & _in_box(np.abs(x), y, z, box)
        out[inside] = np.where(left, left_label, right_label)[inside]
    hindbrain = (classes > 0) & (z < -18) & (y < -30)
    out[hindbrain & (np.abs(x) >= 8)] = np.where(left, np.where(grey, 8, 7), np.where(grey, 47, 46))[
        hindbrain & (np.abs(x) >= 8)
    ]
    out[hindbrain & (np.abs(x) < 8)] = 16
    return out


def _in_box(x: np.ndarray, y: np.ndarray, z: np.ndarray, box: tuple[tuple[float, float], ...]) -> np.ndarray:
    (x0, x1), (y0, y1), (z0, z1) = box
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & (z >= z0) & (z <= z1)
