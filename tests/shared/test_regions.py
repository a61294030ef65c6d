"""Regions from a parcellation: the map, finding files by BIDS entities, resampling through the affines, bad input."""

import logging

import nibabel as nib
import numpy as np
import pytest

from scripts.data.demo import generate_dataset
from scripts.regions import (
    DEFAULT_REGIONS,
    estimate_brain_mask,
    find_parcellation,
    parcellation_in_grid,
    region_codes,
    region_map,
)

REGIONS = DEFAULT_REGIONS
SHAPE = (12, 16, 10)


def image(shape=SHAPE, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), data=None):
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return nib.Nifti1Image(np.zeros(shape, np.int16) if data is None else data, affine)


def test_the_configured_map_names_the_issue_regions():
    regions = region_map(REGIONS)
    assert regions.names == (
        "basal_ganglia",
        "thalamus",
        "cerebral_white_matter",
        "hippocampus",
        "brainstem_ventral_dc",
        "cerebellum",
        "other",
        "outside",
    )
    assert regions.labels["basal_ganglia"] == {11, 50, 12, 51, 13, 52, 26, 58}
    assert {10, 49} == regions.labels["thalamus"] and 3010 in regions.labels["cerebral_white_matter"]


@pytest.mark.parametrize(
    ("regions", "message"),
    [
        ({}, "non-empty mapping"),
        ({"a": [1], "b": [1]}, "must be in one region"),
        ({"a": ["5-2"]}, "ranges like"),
        ({"a": [0]}, "positive ints"),
        ({"outside": [1]}, "other than 'outside'"),
        ({"other": [3]}, "besides 'other'"),
        ({"a": "1"}, "must be a list"),
    ],
)
def test_bad_maps_are_refused(regions, message):
    with pytest.raises(ValueError, match=message):
        region_map(regions)


def test_codes_and_one_warning_for_unmapped_labels(caplog):
    regions = region_map(REGIONS)
    labels = np.array([[[0, 12, 41, 3, 999, 999, 1005]]], dtype=np.int32)
    with caplog.at_level(logging.WARNING, logger="pvs_bundle.regions"):
        codes = region_codes(labels, regions, "aseg.mgz")
    names = [regions.names[c] for c in codes.ravel()]
    assert names == ["outside", "basal_ganglia", "cerebral_white_matter", "other", "other", "other", "other"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "aseg.mgz" in warnings[0] and "[999]" in warnings[0]


def test_resampling_a_parcellation_of_another_grid_by_nearest_neighbour(tmp_path):
    """A 2 mm parcellation, stored with flipped and permuted axes, lands on the 1 mm grid by world position."""
    reference = image(SHAPE, origin=(-6.0, -8.0, -5.0))
    fine = np.zeros(SHAPE, dtype=np.int32)
    fine[:6] = 2  # x < 0 (world) is left white matter
    fine[6:] = 41
    coarse_shape = (6, 8, 5)
    coarse = np.where(np.arange(6)[:, None, None] < 3, 2, 41) * np.ones(coarse_shape, dtype=np.int32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-5.5, -7.5, -4.5)  # voxel centres at the centre of 2 x 2 x 2 blocks of the 1 mm grid
    stored, matrix = coarse.transpose(2, 0, 1)[::-1].copy(), affine.copy()
    matrix[:3, :3] = affine[:3, [2, 0, 1]]
    matrix[:3, 3] += matrix[:3, 0] * (stored.shape[0] - 1)
    matrix[:3, 0] *= -1
    path = tmp_path / "sub-01_dseg.nii.gz"
    nib.save(nib.Nifti1Image(stored.astype(np.int16), matrix), path)
    resampled = parcellation_in_grid(path, reference, "sub-01_T2w.nii.gz")
    assert resampled.shape == SHAPE
    assert np.array_equal(resampled[1:-1, 1:-1, 1:-1], fine[1:-1, 1:-1, 1:-1])


def test_a_parcellation_of_another_head_is_refused_naming_both_files(tmp_path):
    path = tmp_path / "aseg.nii.gz"
    nib.save(image(origin=(500.0, 0.0, 0.0), data=np.full(SHAPE, 2, np.int16)), path)
    with pytest.raises(ValueError, match=r"aseg\.nii\.gz does not overlap the image sub-01_T2w\.nii\.gz"):
        parcellation_in_grid(path, image(), "sub-01_T2w.nii.gz")


def test_mgz_is_read(tmp_path):
    path = tmp_path / "aparc+aseg.mgz"
    nib.save(nib.MGHImage(np.full(SHAPE, 17, np.int32), image().affine), path)
    assert (parcellation_in_grid(path, image(), "x.nii.gz") == 17).all()


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_found_by_bids_entities(tmp_path):
    root = tmp_path / "derivatives" / "synthseg"
    seg = touch(root / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_desc-synthseg_dseg.nii.gz")
    touch(root / "sub-01" / "ses-3" / "anat" / "sub-01_ses-3_desc-synthseg_dseg.nii.gz")
    run = touch(root / "sub-02" / "anat" / "sub-02_run-2_dseg.nii.gz")
    touch(root / "sub-02" / "anat" / "sub-02_run-1_dseg.nii.gz")
    fs = touch(tmp_path / "fs" / "sub-03" / "mri" / "aparc+aseg.mgz")
    touch(tmp_path / "fs" / "sub-03" / "mri" / "aseg.mgz")
    assert find_parcellation(root, "sub-01_ses-2_run-1_T2w.nii.gz") == seg
    assert find_parcellation(root, "x/sub-02_run-2_T2w.nii.gz") == run
    assert find_parcellation(root, "sub-04_T2w.nii.gz") is None
    assert find_parcellation(root, "case7.nii.gz") is None
    assert find_parcellation(tmp_path / "fs", "sub-03_T2w.nii.gz") == fs
    touch(root / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_desc-aseg_dseg.nii.gz")
    with pytest.raises(ValueError, match="must hold one dseg file"):
        find_parcellation(root, "sub-01_ses-2_T2w.nii.gz")
    with pytest.raises(FileNotFoundError, match="parcellation_dir must be an existing folder"):
        find_parcellation(tmp_path / "missing", "sub-01_T2w.nii.gz")


def test_brain_estimate_drops_a_scalp_shell():
    """A ball (brain) inside a separate shell (scalp): the estimate keeps the ball, not the shell."""
    shape = (60, 70, 64)
    grid = np.indices(shape) - np.array([30, 35, 32])[:, None, None, None]
    radius = np.sqrt((grid**2).sum(0)) * 0.8
    brain, shell = radius < 18, (radius > 21) & (radius < 23.5)
    estimate = estimate_brain_mask(brain | shell, np.diag([0.8, 0.8, 0.8, 1.0]))
    assert not (estimate & shell).any()
    assert (estimate & brain).sum() > 0.95 * brain.sum()


@pytest.mark.slow
def test_brain_estimate_keeps_the_brain_a_field_of_view_cuts(tmp_path):
    """A slab of the demo generator's head (38 mm, cut above and below): eroding from the cut faces lost the brain
    near the top one (0.62 of the head's voxels in the top third kept); treating the outside as head keeps 0.69."""
    dataset = generate_dataset(tmp_path / "slab", n_subjects=1, shape=(96, 128, 48), seed=9001)
    image = nib.load(str(next(dataset.glob("sub-*/anat/*_T2w.nii.gz"))))
    values = image.get_fdata(dtype=np.float32)
    low, high = np.percentile(values, (0.5, 99.5))
    head = (values - low) / (high - low) >= 0.05  # the preprocessing's foreground
    brain = estimate_brain_mask(head, image.affine)
    assert brain[:, :, 32:].sum() >= 0.66 * head[:, :, 32:].sum()
    assert brain[:, :, :16].sum() >= 0.95 * head[:, :, :16].sum()
