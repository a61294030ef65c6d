"""Label maps for synthetic training: brain tissue classes and perivascular spaces, drawn from a seed.

This generator is separate from the demo dataset's (:mod:`scripts.data.demo`), so that a model trained on it can
be tested on the demo generator's volumes as data it never saw. What they share is the anatomy's source: the MNI152
2009 tissue maps that ship inside nilearn (and the draw of a rotation, :func:`random_rotation`).

A label map covers a field of view of ``shape`` voxels at 0.8 mm placed at a random point of the head, seen through a
random rotation (up to 15 degrees), anisotropic scaling (0.85-1.15) and a smooth random deformation (about 3 mm
RMS). Its classes (:data:`CLASSES`) are air, CSF, cortical grey matter, white matter, deep grey matter (the grey
matter of the basal ganglia and thalamus), skull, scalp and white-matter lesions (blobs standing in for
hyperintensities and lacunes, the PVS look-alikes). Perivascular spaces are curved tubes (quadratic Bezier
centrelines, tapering) with lengths 2-20 mm (log-uniform) and diameters 0.5-3 mm (log-normal, median 1.5 mm): in the
white matter they run radially from the brain's centre (centrum semiovale), in the deep grey matter roughly
vertically (basal ganglia), none touching another; from 0 to about 300 per field of view. Their partial volume
(fraction of each voxel inside a tube, one-voxel linear ramp) is kept as uint8 (0-255), so the label can follow the
partial volume on whatever grid an image is later acquired at (:mod:`scripts.data.synth.render`).

Since version 3 a map also keeps the CSF fraction of every voxel of the brain (uint8, 0-255): the renderer mixes
CSF into the tissue a voxel is labelled with, so the CSF of sulci narrower than a voxel, which is never a voxel's
largest fraction, shows in cortex as it does in an MR image. Version 2 (``version=2``, the generator the stages in
``candidates/`` up to ``issue26-stage2`` were trained on) keeps whole-class voxels: its CSF fraction is 255 where the
class is CSF and 0 elsewhere, which renders exactly as version 2 did.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

VOXEL_MM = 0.8
"""The grid of every label map (the bundle's training grid)."""
CLASSES: dict[str, int] = {
    "air": 0,
    "csf": 1,
    "cortex": 2,
    "white_matter": 3,
    "deep_grey": 4,
    "skull": 5,
    "scalp": 6,
    "lesion": 7,
}
N_CLASSES = len(CLASSES)
GENERATOR_VERSION = 3
"""Bump when a seed's label map changes (2: wider PVS, more of them; 3: CSF partial volume in the brain)."""
GENERATOR_VERSIONS = (2, 3)
"""The versions :func:`label_map` can still draw (a model's ``generator.version`` names one)."""
BRAIN_CENTRE_MNI = np.array([0.0, -18.0, 8.0])
_FOV_CENTRE_BOX_MNI = ((-35.0, 35.0), (-60.0, 35.0), (-15.0, 45.0))
"""Where the centre of a field of view is drawn (MNI mm): mostly the cerebrum, sometimes reaching its surface."""
_DEEP_GREY_BOX_MNI = ((-32.0, 32.0), (-30.0, 26.0), (-12.0, 20.0))
_DIAMETER_MM = (0.5, 3.0)
_LENGTH_MM = (2.0, 20.0)
_GAP_VOXELS = 2


@dataclasses.dataclass(frozen=True, eq=False)
class LabelMap:
    """One synthetic label map.

    Attributes:
        labels: uint8 classes (:data:`CLASSES`), shape ``shape``.
        pv: uint8 PVS partial volume, 0-255.
        centres: (n, 3) float voxel coordinates of each PVS's midpoint.
        seed: the seed it was drawn from.
        csf: uint8 CSF fraction, 0-255 (version 2: 255 where the class is CSF, else 0).
        version: the generator version it was drawn with.
    """

    labels: np.ndarray
    pv: np.ndarray
    centres: np.ndarray
    seed: int
    csf: np.ndarray
    version: int = GENERATOR_VERSION


@dataclasses.dataclass(frozen=True, eq=False)
class _Tissue:
    world_to_voxel: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    outside_mm: np.ndarray


@functools.lru_cache(maxsize=1)
def _tissue() -> _Tissue:
    """Tissue fractions and the distance outside the brain on the 1 mm MNI grid, built once per process."""
    from nilearn import datasets  # heavy import, needed only here

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(t1.get_fdata() > 0, iterations=2))
    brain_fraction = ndimage.gaussian_filter(brain.astype(np.float32), 0.6)
    outside_mm = ndimage.distance_transform_edt(~brain).astype(np.float32)
    return _Tissue(np.linalg.inv(t1.affine), gm, wm, brain_fraction, outside_mm)


def random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A random 3 x 3 rotation: about the x, then y, then z axis, each by an angle uniform in +-``max_deg`` degrees.

    Args:
        rng: the generator the three angles are drawn from (in that order).
        max_deg: the largest angle about each axis.

    Returns:
        The rotation matrix.
    """
    angles = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        a, b = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[a, a] = r[b, b] = np.cos(angle)
        r[a, b], r[b, a] = -np.sin(angle), np.sin(angle)
        rotation = rotation @ r
    return rotation


def _template_points(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """MNI coordinates (3, *shape) of every voxel of a random field of view, and the brain centre's voxel position."""
    matrix = random_rotation(rng, 15.0) @ np.diag(rng.uniform(0.85, 1.15, size=3)) * VOXEL_MM
    centre = np.array([rng.uniform(lo, hi) for lo, hi in _FOV_CENTRE_BOX_MNI])
    index = np.indices(shape, dtype=np.float32).reshape(3, -1) - ((np.array(shape) - 1) / 2)[:, None]
    points = (matrix @ index + centre[:, None]).reshape(3, *shape)
    coarse = rng.normal(0.0, 3.0 / np.sqrt(3), size=(3, 5, 5, 5)).astype(np.float32)
    zoom = [s / 5 for s in shape]
    for c in range(3):
        points[c] += ndimage.zoom(coarse[c], zoom, order=3, mode="nearest", grid_mode=True)[: shape[0], : shape[1]][
            ..., : shape[2]
        ]
    brain_centre = np.linalg.solve(matrix, BRAIN_CENTRE_MNI - centre) + (np.array(shape) - 1) / 2
    return points.astype(np.float32), np.concatenate([matrix, brain_centre[:, None]], axis=1)


def _sample(volume: np.ndarray, voxels: np.ndarray, order: int = 1) -> np.ndarray:
    return ndimage.map_coordinates(volume, voxels, order=order, mode="constant", cval=0.0)


def tissue_classes(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the tissue classes of a random field of view.

    Returns:
        The uint8 classes; the frame (3 x 4): the voxel-to-MNI linear part and the brain centre's voxel position; and
        the float32 CSF fraction (inside the brain that of the template, 1 in the CSF around it, 0 elsewhere and in
        lesions).
    """
    tissue = _tissue()
    points, frame = _template_points(rng, shape)
    flat = points.reshape(3, -1)
    voxels = tissue.world_to_voxel[:3, :3] @ flat + tissue.world_to_voxel[:3, 3:4]
    gm, wm, brain, outside = (_sample(v, voxels) for v in (tissue.gm, tissue.wm, tissue.brain, tissue.outside_mm))
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    labels = np.zeros(gm.shape, dtype=np.uint8)
    inside = brain >= 0.5
    tissue_class = np.argmax(np.stack([csf, gm, wm]), axis=0)
    labels[inside] = np.array([CLASSES["csf"], CLASSES["cortex"], CLASSES["white_matter"]], np.uint8)[
        tissue_class[inside]
    ]
    x, y, z = flat
    (x0, x1), (y0, y1), (z0, z1) = _DEEP_GREY_BOX_MNI
    deep = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & (z >= z0) & (z <= z1)
    labels[inside & deep & (labels == CLASSES["cortex"])] = CLASSES["deep_grey"]
    rim, skull = rng.uniform(1.0, 3.0), rng.uniform(3.0, 7.0)
    scalp = rng.uniform(4.0, 8.0)
    shell = ~inside & (brain < 0.5)
    # the head's layers follow the distance outside the brain (computed on the template, before the deformation)
    labels[shell & (outside < rim)] = CLASSES["csf"]
    labels[shell & (outside >= rim) & (outside < rim + skull)] = CLASSES["skull"]
    labels[shell & (outside >= rim + skull) & (outside < rim + skull + scalp)] = CLASSES["scalp"]
    fraction = np.where(inside, csf, (labels == CLASSES["csf"]).astype(np.float32)).astype(np.float32)
    labels = labels.reshape(shape)
    _add_lesions(rng, labels)
    fraction = fraction.reshape(shape)
    fraction[labels == CLASSES["lesion"]] = 0.0
    return labels, frame, fraction


def _add_lesions(rng: np.random.Generator, labels: np.ndarray) -> None:
    """Blobs in the white matter (0-6, radius 1.5-6 mm) standing for hyperintensities and lacunes, in place."""
    white = np.argwhere(labels == CLASSES["white_matter"])
    if len(white) == 0:
        return
    for _ in range(int(rng.integers(0, 7))):
        centre = white[rng.integers(len(white))]
        radii = rng.uniform(1.5, 6.0, size=3) / VOXEL_MM
        lo = np.maximum(np.floor(centre - radii).astype(int), 0)
        hi = np.minimum(np.ceil(centre + radii).astype(int) + 1, labels.shape)
        grid = np.indices(hi - lo).reshape(3, -1).T + lo
        inside = (((grid - centre) / radii) ** 2).sum(axis=1) <= 1.0
        grid = grid[inside]
        keep = labels[tuple(grid.T)] == CLASSES["white_matter"]
        labels[tuple(grid[keep].T)] = CLASSES["lesion"]


def _bezier(start: np.ndarray, control: np.ndarray, end: np.ndarray, n: int = 12) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end


def _segment_distance(points: np.ndarray, centreline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (P,) from each point (P, 3) to a polyline (n, 3), and the polyline parameter (0-1) of the closest."""
    a, b = centreline[:-1], centreline[1:]
    ab = b - a
    t = np.clip(np.einsum("psk,sk->ps", points[:, None, :] - a[None], ab) / np.maximum((ab**2).sum(1), 1e-9), 0, 1)
    closest = a[None] + t[..., None] * ab[None]
    distance = np.linalg.norm(points[:, None, :] - closest, axis=-1)
    best = np.argmin(distance, axis=1)
    along = (best + t[np.arange(len(points)), best]) / len(ab)
    return distance[np.arange(len(points)), best], along


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-9)


def _tilt(rng: np.random.Generator, axis: np.ndarray, max_deg: float) -> np.ndarray:
    perpendicular = _unit(np.cross(axis, rng.normal(size=3)))
    angle = np.deg2rad(rng.uniform(0.0, max_deg))
    return np.cos(angle) * axis + np.sin(angle) * perpendicular


def draw_pvs(
    rng: np.random.Generator, labels: np.ndarray, frame: np.ndarray, n_pvs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw up to ``n_pvs`` tubes in the white and deep grey matter; return the partial volume and their midpoints.

    Args:
        rng: the random stream.
        labels: the tissue classes (not changed).
        frame: from :func:`tissue_classes`, for the directions (radial from the brain centre, vertical).
        n_pvs: how many tubes to try to place (65 % in white matter).

    Returns:
        The float32 partial volume (0-1) and the (n, 3) voxel midpoints of the tubes placed.
    """
    shape = np.array(labels.shape)
    pv = np.zeros(labels.shape, dtype=np.float32)
    taken = np.zeros(labels.shape, dtype=bool)
    inverse = np.linalg.inv(frame[:, :3])
    brain_centre = frame[:, 3]
    vertical = _unit(inverse @ np.array([0.0, 0.0, 1.0]))
    pools = {
        "white_matter": np.argwhere(labels == CLASSES["white_matter"]),
        "deep_grey": np.argwhere(labels == CLASSES["deep_grey"]),
    }
    centres: list[np.ndarray] = []
    for _attempt in range(n_pvs * 6):
        if len(centres) >= n_pvs:
            break
        region = "white_matter" if rng.random() < 0.65 or len(pools["deep_grey"]) == 0 else "deep_grey"
        pool = pools[region]
        if len(pool) == 0:
            break
        middle = pool[rng.integers(len(pool))] + rng.uniform(-0.5, 0.5, size=3)
        if region == "white_matter":
            axis = _unit(middle - brain_centre)
            direction = _tilt(rng, axis, 20.0)
        else:
            direction = _tilt(rng, vertical, 15.0)
        diameter = float(np.clip(rng.lognormal(np.log(1.5), 0.4), *_DIAMETER_MM))
        length = max(float(np.exp(rng.uniform(*np.log(_LENGTH_MM)))), diameter + 0.5)
        half = (length - diameter) / 2 / VOXEL_MM
        bend = _unit(np.cross(direction, rng.normal(size=3))) * rng.uniform(0.0, 0.3) * length / VOXEL_MM
        centreline = _bezier(middle - half * direction, middle + bend, middle + half * direction)
        inside = np.all((centreline >= 0) & (centreline <= shape - 1), axis=1)
        if not inside.any():
            continue
        nearest = np.rint(centreline[inside]).astype(int)
        if not np.all(np.isin(labels[tuple(nearest.T)], (CLASSES[region], CLASSES["white_matter"]))):
            continue
        radius = diameter / 2 / VOXEL_MM
        taper = rng.uniform(0.75, 1.0)
        lo = np.maximum(np.floor(centreline.min(0) - radius - 2).astype(int), 0)
        hi = np.minimum(np.ceil(centreline.max(0) + radius + 3).astype(int), shape)
        if np.any(hi <= lo):
            continue
        grid = (np.indices(hi - lo).reshape(3, -1).T + lo).astype(np.float32)
        distance, along = _segment_distance(grid, centreline)
        local_radius = radius * (1.0 - (1.0 - taper) * np.abs(2 * along - 1))
        fraction = np.clip(local_radius - distance + 0.5, 0.0, 1.0).reshape(hi - lo)
        box = tuple(slice(lo[a], hi[a]) for a in range(3))
        if (fraction > 0).any() and (taken[box] & (fraction > 0)).any():
            continue
        pv[box] = np.maximum(pv[box], fraction)
        taken[box] |= ndimage.binary_dilation(fraction > 0, iterations=_GAP_VOXELS)
        centres.append(middle)
    return pv, np.array(centres, dtype=np.float32).reshape(-1, 3)


def check_version(version: int) -> int:
    """Return ``version`` if :func:`label_map` can draw it; else raise ValueError naming the setting."""
    if isinstance(version, bool) or version not in GENERATOR_VERSIONS:
        raise ValueError(f"synth#generator_version must be one of {GENERATOR_VERSIONS}, not {version!r}.")
    return int(version)


def label_map(
    seed: int, shape: Sequence[int] = (96, 112, 96), max_pvs: int = 150, version: int = GENERATOR_VERSION
) -> LabelMap:
    """Draw one label map from a seed (the same seed and version give the same map in any process).

    Args:
        seed: the map's seed.
        shape: the field of view in voxels at 0.8 mm (each at least 32).
        max_pvs: the most tubes a map may hold; each map draws its count log-uniformly up to it, and one in ten
            holds none.
        version: the generator version (:data:`GENERATOR_VERSIONS`; module docstring).

    Returns:
        The label map.

    Raises:
        ValueError: on a bad shape, seed or version.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, not {seed!r}.")
    version = check_version(version)
    dims = tuple(int(s) for s in shape)
    if len(dims) != 3 or min(dims) < 32:
        raise ValueError(f"shape must be three sizes of at least 32 voxels, not {list(shape)}.")
    anatomy_rng, pvs_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([int(version), seed]).spawn(2))
    labels, frame, csf = tissue_classes(anatomy_rng, dims)
    if version == 2:
        csf = (labels == CLASSES["csf"]).astype(np.float32)
    n_pvs = 0 if pvs_rng.random() < 0.1 else int(np.exp(pvs_rng.uniform(np.log(min(10, max_pvs)), np.log(max_pvs))))
    pv, centres = draw_pvs(pvs_rng, labels, frame, n_pvs)
    pv8, csf8 = (np.rint(v * 255).astype(np.uint8) for v in (pv, csf))
    return LabelMap(labels, pv8, centres, int(seed), csf8, int(version))
