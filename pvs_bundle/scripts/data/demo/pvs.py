"""The demo's perivascular spaces: straight capsules drawn in a subject's tissue, and their partial volume in a grid.

A subject has 20 to 110 PVS over the whole brain, none closer than 1.8 mm to another: 60 % in the white matter of
the centrum semiovale (running radially from :data:`~scripts.data.demo.anatomy.BRAIN_CENTRE_MM`, within 15 degrees)
and the rest in the grey and white matter of the basal ganglia (running roughly vertically). Diameters are
log-normal around 1.5 mm in :data:`DIAMETER_RANGE_MM`, lengths log-uniform in :data:`LENGTH_RANGE_MM`. A grid keeps
the capsules that lie wholly inside it; each voxel's partial volume ramps linearly over one voxel across a capsule's
surface, and the mask is partial volume >= 0.5.

:class:`PVSSettings` moves the diameter median and the count range away from these defaults, for held-out data at
settings a recipe was not tuned on (``benchmarks/ablation.py``); the defaults give the demo's PVS unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy.spatial.distance import cdist

from scripts.data.demo.anatomy import BRAIN_CENTRE_MM, SubjectWarp, tissue_fractions_at

CENTRUM_SEMIOVALE_BOX_MM: tuple[tuple[float, float], ...] = ((-45.0, 45.0), (-70.0, 45.0), (20.0, 55.0))
"""Where centrum semiovale PVS centres are drawn (x, y, z ranges in MNI mm)."""
BASAL_GANGLIA_BOX_MM: tuple[tuple[float, float], ...] = ((12.0, 30.0), (-12.0, 20.0), (-8.0, 12.0))
"""Where basal ganglia PVS centres are drawn: |x|, y and z ranges in MNI mm (both hemispheres)."""
DIAMETER_RANGE_MM = (0.5, 3.0)
LENGTH_RANGE_MM = (2.0, 20.0)

DIAMETER_MEDIAN_MM = 1.5
FULL_BRAIN_PVS = (20, 110)
_CSO_FRACTION = 0.6
_MAX_TILT_DEG = 15.0
_TUBE_GAP_MM = 1.8
_BATCH = 64
_BG_MARGIN_MM = 8.0
_MAX_BATCHES = 40


@dataclasses.dataclass(frozen=True)
class PVSSettings:
    """How a subject's PVS are drawn: the median diameter (mm) and the whole-brain count range (inclusive).

    Raises:
        ValueError: if the median lies outside :data:`DIAMETER_RANGE_MM` or the counts are not 1 <= low <= high.
    """

    diameter_median_mm: float = DIAMETER_MEDIAN_MM
    count_range: tuple[int, int] = FULL_BRAIN_PVS

    def __post_init__(self) -> None:
        low, high = DIAMETER_RANGE_MM
        if not low <= float(self.diameter_median_mm) <= high:
            raise ValueError(f"pvs diameter_median_mm must lie in [{low}, {high}] mm, not {self.diameter_median_mm!r}.")
        counts = tuple(self.count_range)
        if len(counts) != 2 or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            raise ValueError(f"pvs count_range must be two integers (low, high), not {self.count_range!r}.")
        if not 1 <= counts[0] <= counts[1]:
            raise ValueError(f"pvs count_range must satisfy 1 <= low <= high, not {self.count_range!r}.")
        object.__setattr__(self, "count_range", counts)

    @property
    def is_default(self) -> bool:
        """True for the demo's own settings (a dataset marker then records nothing more)."""
        return self == PVSSettings()


@dataclasses.dataclass(frozen=True)
class Tube:
    """One synthetic perivascular space: a capsule in subject world coordinates (RAS mm).

    Attributes:
        start_mm: centre of the first end cap.
        end_mm: centre of the second end cap.
        diameter_mm: capsule diameter.
        region: ``"centrum_semiovale"`` or ``"basal_ganglia"``.
    """

    start_mm: tuple[float, float, float]
    end_mm: tuple[float, float, float]
    diameter_mm: float
    region: str

    @property
    def length_mm(self) -> float:
        """Total length, end caps included."""
        return float(np.linalg.norm(np.subtract(self.end_mm, self.start_mm))) + self.diameter_mm


def draw_tubes(rng: np.random.Generator, warp: SubjectWarp, settings: PVSSettings | None = None) -> list[Tube]:
    """Whole-brain PVS for one subject, in subject world coordinates, none touching another.

    Args:
        rng: the subject's PVS generator.
        warp: the subject's anatomy, whose tissue each capsule must lie in.
        settings: diameter median and count range; None is the demo's (:class:`PVSSettings`).

    Returns:
        The capsules, centrum semiovale first.
    """
    settings = settings or PVSSettings()
    n_total = int(rng.integers(settings.count_range[0], settings.count_range[1] + 1))
    n_cso = round(n_total * _CSO_FRACTION)
    tubes: list[Tube] = []
    centrelines, radii = np.empty((0, 3)), np.empty(0)
    for region, wanted in (("centrum_semiovale", n_cso), ("basal_ganglia", n_total - n_cso)):
        target = len(tubes) + wanted
        for _ in range(_MAX_BATCHES):
            for tube, points in _valid_candidates(rng, warp, region, settings.diameter_median_mm):
                radius = tube.diameter_mm / 2
                if (
                    len(tubes) == target
                    or (cdist(points, centrelines) - radius - radii).min(initial=np.inf) < _TUBE_GAP_MM
                ):
                    continue
                tubes.append(tube)
                centrelines = np.concatenate([centrelines, points])
                radii = np.concatenate([radii, np.full(len(points), radius)])
            if len(tubes) == target:
                break
    return tubes


def inside_grid(tube: Tube, affine: np.ndarray, shape: tuple[int, int, int]) -> bool:
    """Whether the whole capsule, plus one voxel, lies inside a grid.

    Args:
        tube: the capsule.
        affine: the grid's axis-aligned RAS affine.
        shape: the grid's shape.

    Returns:
        True when it does.
    """
    ends = np.array([tube.start_mm, tube.end_mm])
    lo = (ends.min(axis=0) - tube.diameter_mm / 2 - affine[:3, 3]) / np.diag(affine)[:3]
    hi = (ends.max(axis=0) + tube.diameter_mm / 2 - affine[:3, 3]) / np.diag(affine)[:3]
    return bool((lo >= 1).all() and (hi <= np.array(shape) - 2).all())


def partial_volume(tubes: Sequence[Tube], affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Fraction of each voxel filled by PVS: a linear ramp over one voxel across each capsule's surface.

    Args:
        tubes: the capsules.
        affine: the grid's axis-aligned RAS affine.
        shape: the grid's shape.

    Returns:
        A float32 volume in [0, 1] (the largest of overlapping capsules).
    """
    pv = np.zeros(shape, dtype=np.float32)
    size = np.diag(affine)[:3]
    ramp = float(size.mean())
    for tube in tubes:
        start, end = np.array(tube.start_mm), np.array(tube.end_mm)
        radius = tube.diameter_mm / 2
        lo = np.floor((np.minimum(start, end) - radius - affine[:3, 3]) / size).astype(int) - 1
        hi = np.ceil((np.maximum(start, end) + radius - affine[:3, 3]) / size).astype(int) + 2
        lo, hi = np.maximum(lo, 0), np.minimum(hi, shape)
        grid = np.stack(
            np.meshgrid(*[affine[a, 3] + size[a] * np.arange(lo[a], hi[a]) for a in range(3)], indexing="ij"), axis=-1
        )
        segment = end - start
        t = np.clip(((grid - start) @ segment) / max(float(segment @ segment), 1e-12), 0.0, 1.0)
        distance = np.linalg.norm(grid - (start + t[..., None] * segment), axis=-1)
        box = tuple(slice(lo[a], hi[a]) for a in range(3))
        pv[box] = np.maximum(pv[box], np.clip((radius - distance) / ramp + 0.5, 0.0, 1.0))
    return pv


def _valid_candidates(
    rng: np.random.Generator, warp: SubjectWarp, region: str, diameter_median_mm: float
) -> list[tuple[Tube, np.ndarray]]:
    """Draw a batch of candidate tubes of a region; keep those lying wholly in its tissue, with their centreline."""
    diameters = np.clip(rng.lognormal(np.log(diameter_median_mm), 0.35, size=_BATCH), *DIAMETER_RANGE_MM)
    lengths = np.maximum(np.exp(rng.uniform(*np.log(LENGTH_RANGE_MM), size=_BATCH)), diameters + 0.8)
    box = np.array(CENTRUM_SEMIOVALE_BOX_MM if region == "centrum_semiovale" else BASAL_GANGLIA_BOX_MM)
    centres = rng.uniform(box[:, 0], box[:, 1], size=(_BATCH, 3))
    if region == "centrum_semiovale":
        axes = centres - np.array(BRAIN_CENTRE_MM)
    else:
        centres[:, 0] *= rng.choice([-1.0, 1.0], size=_BATCH)
        axes = np.tile([0.0, 0.0, 1.0], (_BATCH, 1))
    directions = _tilted(rng, axes / np.linalg.norm(axes, axis=1, keepdims=True), _MAX_TILT_DEG)
    steps = np.linspace(-0.5, 0.5, 25)[None, :, None] * lengths[:, None, None]
    centreline = centres[:, None, :] + steps * directions[:, None, :]
    points = _with_surface_lines(centreline, directions, diameters / 2)
    gm, wm = tissue_fractions_at(warp, points)
    if region == "centrum_semiovale":
        valid = (wm >= 0.5).all(axis=1)
    else:
        grown = box + np.array([-_BG_MARGIN_MM, _BG_MARGIN_MM])
        mirrored = np.concatenate([np.abs(points[..., :1]), points[..., 1:]], axis=-1)
        inside = ((mirrored >= grown[:, 0]) & (mirrored <= grown[:, 1])).all(axis=(1, 2))
        valid = ((gm + wm) >= 0.9).all(axis=1) & inside & (gm[:, 0] >= 0.3)
    half = ((lengths - diameters) / 2)[:, None] * directions
    return [
        (Tube(_point(centres[k] - half[k]), _point(centres[k] + half[k]), float(diameters[k]), region), centreline[k])
        for k in np.flatnonzero(valid)
    ]


def _point(vector: np.ndarray) -> tuple[float, float, float]:
    return float(vector[0]), float(vector[1]), float(vector[2])


def _with_surface_lines(centreline: np.ndarray, directions: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Points (n, 5 * m, 3): each centreline (n, m, 3) and four parallel lines on the tube's surface."""
    side_a = np.cross(directions, _least_aligned(directions))
    side_a /= np.linalg.norm(side_a, axis=1, keepdims=True)
    side_b = np.cross(directions, side_a)
    offsets = [np.zeros_like(side_a), side_a, -side_a, side_b, -side_b]
    lines = [centreline + (o * radii[:, None])[:, None, :] for o in offsets]
    return np.concatenate(lines, axis=1)


def _least_aligned(directions: np.ndarray) -> np.ndarray:
    """For each unit vector, the coordinate axis least aligned with it."""
    return np.eye(3)[np.argmin(np.abs(directions), axis=1)]


def _tilted(rng: np.random.Generator, axes: np.ndarray, max_deg: float) -> np.ndarray:
    """Unit vectors within ``max_deg`` of the unit ``axes`` (uniform over the cap's area)."""
    perpendicular = rng.normal(size=axes.shape)
    perpendicular -= (perpendicular * axes).sum(axis=1, keepdims=True) * axes
    perpendicular /= np.linalg.norm(perpendicular, axis=1, keepdims=True)
    cos_max = np.cos(np.deg2rad(max_deg))
    cos_tilt = rng.uniform(cos_max, 1.0, size=(len(axes), 1))
    return cos_tilt * axes + np.sqrt(1 - cos_tilt**2) * perpendicular
