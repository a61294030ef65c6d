"""The region of interest where PVS are counted: erosion in mm, regions, what falls outside, fraction at most 1."""

import numpy as np
import pytest

from scripts.measurement.pvs_burden import BURDEN_COLUMNS
from scripts.measurement.roi import ROI_COLUMNS, check_roi, erode_mm, roi_burden, roi_mask, roi_rule

ISO = np.diag([0.8, 0.8, 0.8, 1.0])


def cube(shape=(21, 21, 21), lo=5, hi=16) -> np.ndarray:
    brain = np.zeros(shape, dtype=bool)
    brain[lo:hi, lo:hi, lo:hi] = True
    return brain


def test_erosion_is_in_millimetres_at_any_voxel_size():
    # 1.6 mm at 0.8 mm: a voxel stays when the voxels 2 away are brain: the 11-cube becomes the 7-cube
    np.testing.assert_array_equal(erode_mm(cube(), ISO, 1.6), cube(lo=7, hi=14))
    # 1.6 mm with 1.6 mm slices: 2 voxels in-plane, 1 across the slices
    expected = np.zeros((21, 21, 21), dtype=bool)
    expected[7:14, 7:14, 6:15] = True
    np.testing.assert_array_equal(erode_mm(cube(), np.diag([0.8, 0.8, 1.6, 1.0]), 1.6), expected)
    # below one voxel, or 0: nothing to erode
    np.testing.assert_array_equal(erode_mm(cube(), ISO, 0.7), cube())
    np.testing.assert_array_equal(erode_mm(cube(), ISO, 0), cube())


def test_erosion_is_by_a_ball_not_a_cube():
    # one voxel missing from the brain: 1.6 mm (2 voxels) removes the lattice points within 2 voxels of it,
    # 1 + 6 + 12 + 8 + 6 = 33 (squared distances 0 to 4), not the 5 x 5 x 5 cube a cube erosion would remove
    brain = np.ones((21, 21, 21), dtype=bool)
    brain[10, 10, 10] = False
    eroded = erode_mm(brain, ISO, 1.6)
    assert (~eroded[8:13, 8:13, 8:13]).sum() == 33
    assert eroded[12, 11, 10] and not eroded[11, 11, 11] and not eroded[12, 10, 10]


def test_the_edge_of_the_field_of_view_counts_as_outside():
    brain = np.zeros((12, 12, 12), dtype=bool)
    brain[:8, 2:10, 2:10] = True  # cut by the field of view at x = 0
    eroded = erode_mm(brain, ISO, 0.8)
    assert not eroded[0].any() and eroded[1, 3:9, 3:9].all() and not eroded[7].any()


def test_regions_keep_only_the_chosen_parcellation_labels():
    brain = cube()
    codes = np.zeros(brain.shape, dtype=np.uint8)
    codes[:10] = 1  # "basal_ganglia" in the first half, "cerebral_white_matter" (0) in the other
    names = ("cerebral_white_matter", "basal_ganglia", "other", "outside")
    roi = roi_mask(brain, ISO, 0.0, codes, names, ("basal_ganglia",))
    np.testing.assert_array_equal(roi, brain & (codes == 1))
    assert roi_mask(brain, ISO, 0.0, None, names, ("basal_ganglia",)).sum() == brain.sum()  # no parcellation


def test_pvs_outside_the_roi_are_written_apart_and_never_counted():
    brain = cube()
    roi = erode_mm(brain, ISO, 1.6)  # the 7-cube [7, 14)
    mask = np.zeros(brain.shape, dtype=bool)
    mask[10, 10, 8:12] = True  # inside: 4 voxels
    mask[2, 2, 2:5] = True  # outside the brain: 3 voxels
    mask[10, 3:9, 12] = True  # crosses the ROI's edge at y = 7: 2 voxels inside, 4 outside
    burden = roi_burden(mask, brain, roi, 0.512, roi_rule(1.6, None, False))
    assert set(burden) == set(BURDEN_COLUMNS) | set(ROI_COLUMNS)
    assert burden["pvs_count"] == 2 and burden["pvs_volume_mm3"] == pytest.approx(6 * 0.512)
    assert burden["outside_roi_count"] == 2 and burden["outside_roi_volume_mm3"] == pytest.approx(7 * 0.512)
    assert burden["roi_volume_mm3"] == pytest.approx(7**3 * 0.512)
    assert burden["brain_volume_mm3"] == pytest.approx(11**3 * 0.512)
    assert burden["roi"] == "estimated brain eroded by 1.6 mm"


def test_the_volume_fraction_cannot_exceed_one():
    """An undertrained model marking the whole head once gave 1.48 of the brain."""
    brain = cube()
    everything = np.ones(brain.shape, dtype=bool)
    for erosion in (0.0, 1.6):
        burden = roi_burden(everything, brain, erode_mm(brain, ISO, erosion), 0.512, "rule")
        assert burden["pvs_volume_fraction"] <= 1.0
        assert burden["pvs_volume_mm3"] + burden["outside_roi_volume_mm3"] == pytest.approx(21**3 * 0.512)
    assert roi_burden(everything, brain, brain, 0.512, "rule")["pvs_volume_fraction"] == 1.0


def test_the_rule_says_what_produced_a_figure():
    assert roi_rule(2.0, None, True) == "parcellation's brain eroded by 2 mm"
    assert roi_rule(0.0, None, False) == "estimated brain, not eroded"
    assert roi_rule(2.0, ("basal_ganglia",), True) == "parcellation's brain eroded by 2 mm, regions basal_ganglia"
    assert "need a parcellation" in roi_rule(2.0, ("basal_ganglia",), False)


@pytest.mark.parametrize(
    ("roi", "message"),
    [
        ({"erosion_mm": -1}, "roi#erosion_mm must be a number of millimetres >= 0"),
        ({"erosion_mm": "two"}, "roi#erosion_mm must be"),
        ({"regions": ["putamen"]}, "roi#regions ['putamen'] are not regions of the region map"),
        ({"regions": []}, "roi#regions must be null"),
        ({"erosion": 2}, 'roi must be {"erosion_mm"'),
    ],
)
def test_bad_roi_settings_are_refused_naming_the_setting(roi, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("{", r"\{")):
        check_roi(roi, ("basal_ganglia", "other", "outside"))


def test_roi_settings_from_the_command_line():
    assert check_roi({"erosion_mm": "3", "regions": None}, ("basal_ganglia",)) == (3.0, None)
    assert check_roi(None, ("basal_ganglia",)) == (0.0, None)  # the brain itself (docs/performance.md)
    assert check_roi({"regions": ["basal_ganglia"]}, ("basal_ganglia",)) == (0.0, ("basal_ganglia",))
