"""The per-PVS census measured on synthetic tubes of known length, width and direction."""

import math

import numpy as np
import pytest

from scripts.masks import label_components
from scripts.measurement.census import CENSUS_COLUMNS, capsule_diameter, census_rows, measure_components

ISOTROPIC = (0.8, 0.8, 0.8)
ANISOTROPIC = (0.6, 0.9, 1.2)
# Tolerances, from the voxel size: length within 1 mm at 0.8 mm isotropic, 1.5 mm on the anisotropic grid (its
# largest voxel edge is 1.2 mm); width within half the largest voxel edge (0.4 mm, 0.6 mm); principal direction
# within 8 degrees.
TOLERANCE = {ISOTROPIC: (1.0, 0.4), ANISOTROPIC: (1.5, 0.6)}
COS_8_DEG = math.cos(math.radians(8))


def grid(spacing):
    """A RAS affine and a shape covering about 40 mm per axis."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-3.0, 2.0, 1.0)
    return affine, tuple(int(40 / s) for s in spacing)


def reordered(mask, affine):
    """The same voxels stored with axes (z, x, y) and the first stored axis flipped: the same world positions."""
    data, matrix = mask.transpose(2, 0, 1), affine.copy()
    matrix[:3, :3] = affine[:3, [2, 0, 1]]
    matrix[:3, 3] += matrix[:3, 0] * (data.shape[0] - 1)
    matrix[:3, 0] *= -1
    return data[::-1].copy(), matrix


def world(affine, shape):
    index = np.indices(shape).reshape(3, -1).astype(float)
    return affine[:3, :3] @ index + affine[:3, 3:]


def capsule(affine, shape, start, end, diameter):
    """Voxels whose centre lies within diameter / 2 of the segment start-end (a capsule)."""
    points = world(affine, shape)
    s, e = np.asarray(start, float)[:, None], np.asarray(end, float)[:, None]
    t = np.clip(((points - s) * (e - s)).sum(0) / ((e - s) ** 2).sum(), 0, 1)
    return (np.linalg.norm(points - (s + t * (e - s)), axis=0) <= diameter / 2).reshape(shape)


def arc(affine, shape, centre, radius, angle, diameter):
    """A tube bent along a circular arc of ``radius`` and ``angle`` in the x-y plane, with end caps."""
    points = world(affine, shape) - np.asarray(centre, float)[:, None]
    phi = np.clip(np.arctan2(points[1], points[0]), 0, angle)
    nearest = np.stack([radius * np.cos(phi), radius * np.sin(phi), np.zeros_like(phi)])
    return (np.linalg.norm(points - nearest, axis=0) <= diameter / 2).reshape(shape)


def only(columns):
    assert len(columns["voxels"]) == 1
    return {k: v[0] for k, v in columns.items()}


STRAIGHT = {
    "along_x": ((3.0, 20.0, 20.0), (30.0, 20.0, 20.0)),
    "along_z": ((20.0, 20.0, 6.0), (20.0, 20.0, 30.0)),
    "oblique": ((8.0, 8.0, 8.0), (28.0, 24.0, 30.0)),
}


@pytest.mark.parametrize("spacing", [ISOTROPIC, ANISOTROPIC])
@pytest.mark.parametrize("name", list(STRAIGHT))
@pytest.mark.parametrize("diameter", [1.6, 2.5])
def test_straight_tubes_length_width_direction(spacing, name, diameter):
    affine, shape = grid(spacing)
    start, end = (np.add(p, affine[:3, 3]) for p in STRAIGHT[name])
    _, columns = measure_components(capsule(affine, shape, start, end, diameter), affine)
    pvs = only(columns)
    axis = (end - start) / np.linalg.norm(end - start)
    length_tol, width_tol = TOLERANCE[spacing]
    assert abs(pvs["length_mm"] - (np.linalg.norm(end - start) + diameter)) <= length_tol
    assert abs(pvs["width_mm"] - diameter) <= width_tol
    direction = np.array([pvs["direction_x"], pvs["direction_y"], pvs["direction_z"]])
    assert math.isclose(np.linalg.norm(direction), 1.0, rel_tol=1e-9)
    assert abs(direction @ axis) >= COS_8_DEG
    assert direction[np.abs(direction).argmax()] > 0  # sign convention
    np.testing.assert_allclose([pvs["x_mm"], pvs["y_mm"], pvs["z_mm"]], (start + end) / 2, atol=0.5)


@pytest.mark.parametrize("spacing", [ISOTROPIC, ANISOTROPIC])
@pytest.mark.parametrize("diameter", [1.2, 2.0])
def test_curved_tube_length_is_its_chord_within_tolerance_of_the_arc(spacing, diameter):
    affine, shape = grid(spacing)
    radius, angle = 12.0, math.pi / 3  # 60 degrees: the chord is 4.5 % shorter than the arc
    mask = arc(affine, shape, affine[:3, 3] + (8.0, 8.0, 20.0), radius, angle, diameter)
    pvs = only(measure_components(mask, affine)[1])
    arc_length = radius * angle + diameter
    assert abs(pvs["length_mm"] - arc_length) <= TOLERANCE[spacing][0] + 0.05 * arc_length
    assert abs(pvs["width_mm"] - diameter) <= TOLERANCE[spacing][1]


def test_measures_do_not_depend_on_the_voxel_order():
    affine, shape = grid(ANISOTROPIC)
    start, end = np.array([5.0, 9.0, 7.0]), np.array([27.0, 20.0, 31.0])
    mask = capsule(affine, shape, start, end, 2.0)
    ras = only(measure_components(mask, affine)[1])
    other = only(measure_components(*reordered(mask, affine))[1])
    for key in ("x_mm", "y_mm", "z_mm", "voxels", "length_mm", "width_mm", "direction_x", "direction_y"):
        assert math.isclose(ras[key], other[key], rel_tol=1e-9, abs_tol=1e-9), key


def test_probabilities_regions_and_rows():
    shape = (10, 12, 9)
    mask = np.zeros(shape, dtype=np.uint8)
    mask[1:3, 1:3, 1:5] = 1  # 16 voxels
    mask[7, 9, 6] = 1  # one voxel: no principal direction
    prob = np.where(mask > 0, 0.6, 0.1)
    prob[2, 2, 4] = 0.95
    codes = np.zeros(shape, dtype=np.uint8)
    codes[:, :, 3:] = 1  # the first PVS has 8 voxels in each region: the tie goes to the first region listed
    codes[7, 9, 6] = 2
    labels, columns = measure_components(mask, np.diag([0.8, 0.8, 0.8, 1.0]), prob, codes, ("a", "b", "c"))
    rows = census_rows("sub-001", columns)
    assert [list(row) for row in rows] == [list(CENSUS_COLUMNS)] * 2
    first, single = rows
    assert (first["pvs_id"], first["voxels"], single["voxels"]) == (1, 16, 1)
    assert math.isclose(first["volume_mm3"], 16 * 0.512)
    assert math.isclose(first["prob_mean"], (15 * 0.6 + 0.95) / 16) and first["prob_max"] == 0.95
    assert (first["region"], single["region"]) == ("a", "c")
    assert math.isnan(single["direction_x"]) and math.isclose(single["length_mm"], 0.8)
    assert labels.max() == 2
    no_prob = census_rows("x", measure_components(mask, np.eye(4))[1])
    assert math.isnan(no_prob[0]["prob_mean"]) and no_prob[0]["region"] == "unknown"


def test_empty_mask_gives_no_rows():
    labels, columns = measure_components(np.zeros((5, 6, 7)), np.eye(4), np.zeros((5, 6, 7)))
    assert census_rows("sub-002", columns) == [] and not labels.any()


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="prob must have the mask's shape"):
        measure_components(np.zeros((5, 6, 7)), np.eye(4), np.zeros((5, 6, 8)))


def test_capsule_diameter_inverts_the_capsule_volume():
    d, length = np.array([0.5, 1.0, 2.0, 3.0]), np.array([2.0, 10.0, 2.0, 20.0])
    volume = np.pi * d**2 * length / 4 - np.pi * d**3 / 12
    np.testing.assert_allclose(capsule_diameter(volume, length), d, rtol=1e-6)


def test_a_full_size_volume_with_hundreds_of_pvs_is_measured_whole():
    # its time is benchmarks/measurement_overhead.py's to measure, not a test's
    shape = (208, 300, 320)
    rng = np.random.default_rng(0)
    mask = np.zeros(shape, dtype=bool)
    for x, y, z in rng.integers(10, 190, size=(300, 3)):
        mask[x : x + 2, y : y + 2, z : z + int(rng.integers(3, 15))] = True
    _, columns = measure_components(mask, np.diag([0.8, 0.8, 0.8, 1.0]), mask.astype(np.float32))
    count = label_components(mask)[1]
    assert 200 < len(columns["voxels"]) == count <= 300 and int(np.sum(columns["voxels"])) == int(mask.sum())
