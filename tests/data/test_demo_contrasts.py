"""Tests of the demo generator's contrasts and voxel sizes: defaults unchanged, polarity, shared geometry, grids."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import BUNDLE_ROOT
from scipy import ndimage

from scripts.data.demo import MARKER_NAME, ensure_demo_dataset, generate_dataset, synthesize_subject
from scripts.data.demo.anatomy import TISSUE_LABELS, tissue_labels
from scripts.data.demo.contrasts import CONTRASTS, TissueFractions, acquired_shape, resolution_blur_mm
from scripts.data.demo.grid import FOV_CENTRE_MM, VOXEL_SIZE_MM

SHAPE = (48, 56, 48)
LARGER = (64, 80, 72)  # non-cubic, and enough PVS in the field of view to compare positions
TINY = (40, 48, 44)


def tube_centroids(subject) -> dict[int, tuple[np.ndarray, int]]:
    """Per drawn tube: the world centroid (mm) of the mask voxels nearest to it, and their count."""
    voxels = np.argwhere(subject.mask > 0)
    mm = voxels @ subject.affine[:3, :3].T + subject.affine[:3, 3]
    distances = []
    for tube in subject.tubes:
        start, segment = np.array(tube.start_mm), np.subtract(tube.end_mm, tube.start_mm)
        t = np.clip(((mm - start) @ segment) / max(float(segment @ segment), 1e-12), 0.0, 1.0)
        distances.append(np.linalg.norm(mm - (start + t[:, None] * segment), axis=1))
    owner = np.argmin(np.array(distances), axis=0)
    return {k: (mm[owner == k].mean(axis=0), int((owner == k).sum())) for k in np.unique(owner)}


def test_defaults_are_the_t2w_demo_grid() -> None:
    default = synthesize_subject(1, seed=0, shape=SHAPE)
    explicit = synthesize_subject(1, seed=0, shape=SHAPE, contrast="T2w", voxel_size_mm=None)
    np.testing.assert_array_equal(default.image, explicit.image)
    np.testing.assert_array_equal(default.mask, explicit.mask)
    np.testing.assert_array_equal(default.affine, explicit.affine)
    assert default.image.shape == SHAPE and np.allclose(np.diag(default.affine)[:3], VOXEL_SIZE_MM)


@pytest.mark.parametrize(("contrast", "brighter"), [("T2w", True), ("T1w", False), ("FLAIR", False)])
def test_pvs_polarity_against_the_white_matter_around_them(contrast: str, brighter: bool) -> None:
    subject = synthesize_subject(1, seed=0, shape=SHAPE, contrast=contrast)
    labels = tissue_labels(subject.warp, SHAPE)
    pvs = subject.mask > 0
    around = ndimage.binary_dilation(pvs, iterations=3) & ~pvs & (labels == TISSUE_LABELS["wm"])
    assert subject.tubes and pvs.sum() > 20 and around.sum() > 50
    ratio = subject.image[pvs].mean() / subject.image[around].mean()
    assert (ratio > 1.3) if brighter else (ratio < 0.7), ratio


@pytest.mark.parametrize("contrast", ["T1w", "FLAIR"])
def test_tissue_order_of_the_dark_csf_contrasts(contrast: str) -> None:
    subject = synthesize_subject(2, seed=0, shape=LARGER, contrast=contrast)
    labels = tissue_labels(subject.warp, LARGER)
    means = {t: subject.image[(labels == v) & (subject.mask == 0)].mean() for t, v in TISSUE_LABELS.items()}
    if contrast == "T1w":
        assert means["wm"] > 1.2 * means["gm"] > 1.2 * 1.2 * means["csf"], means
    else:  # FLAIR: CSF nulled, GM slightly brighter than WM
        assert 1.3 * means["wm"] > means["gm"] > 1.05 * means["wm"] and means["csf"] < 0.5 * means["wm"], means


def test_a_seed_gives_the_same_geometry_in_every_contrast() -> None:
    subjects = [synthesize_subject(1, seed=0, shape=SHAPE, contrast=c) for c in CONTRASTS]
    first = subjects[0]
    for other in subjects[1:]:
        assert other.tubes == first.tubes
        np.testing.assert_array_equal(other.mask, first.mask)
        np.testing.assert_array_equal(other.affine, first.affine)
        np.testing.assert_array_equal(other.warp.coefficients, first.warp.coefficients)
        assert not np.array_equal(other.image, first.image)


def test_a_coarser_grid_covers_the_same_field_of_view() -> None:
    subject = synthesize_subject(1, seed=0, shape=SHAPE, voxel_size_mm=(1.0, 1.0, 1.0))
    expected = tuple(round(s * v) for s, v in zip(SHAPE, VOXEL_SIZE_MM, strict=True))
    assert subject.image.shape == subject.mask.shape == expected == (38, 45, 38)
    np.testing.assert_allclose(np.diag(subject.affine)[:3], 1.0)
    centre = subject.affine @ np.array([*((np.array(expected) - 1) / 2), 1.0])
    np.testing.assert_allclose(centre[:3], FOV_CENTRE_MM, atol=1e-9)
    anisotropic = synthesize_subject(1, seed=0, shape=SHAPE, voxel_size_mm=[0.8, 0.8, 1.6])
    assert anisotropic.image.shape == (48, 56, 24)
    np.testing.assert_allclose(np.diag(anisotropic.affine)[:3], (0.8, 0.8, 1.6))


@pytest.mark.parametrize("voxel_size_mm", [(1.0, 1.0, 1.0), (1.2, 1.2, 1.2), (0.8, 0.8, 1.6)])
def test_pvs_stay_in_place_and_keep_their_volume_on_coarser_grids(voxel_size_mm: tuple[float, ...]) -> None:
    fine = synthesize_subject(1, seed=0, shape=LARGER)
    coarse = synthesize_subject(1, seed=0, shape=LARGER, voxel_size_mm=voxel_size_mm)
    assert coarse.tubes == fine.tubes and len(fine.tubes) >= 10
    at_fine, at_coarse = tube_centroids(fine), tube_centroids(coarse)
    shared = [k for k in at_fine if k in at_coarse and min(at_fine[k][1], at_coarse[k][1]) >= 5]
    assert len(shared) >= 10
    offsets = np.array([at_coarse[k][0] - at_fine[k][0] for k in shared])
    # thin tubes are sampled unevenly along their axis, so single centroids move; their median and mean must not
    assert np.median(np.linalg.norm(offsets, axis=1)) < max(voxel_size_mm) / 2
    assert np.linalg.norm(offsets.mean(axis=0)) < 0.2
    fine_volume = fine.mask.sum() * np.prod(np.diag(fine.affine)[:3])
    coarse_volume = coarse.mask.sum() * np.prod(voxel_size_mm)
    assert abs(coarse_volume / fine_volume - 1) < 0.15


def test_larger_voxels_blur_the_template_by_the_difference_of_box_variances() -> None:
    assert resolution_blur_mm((0.8, 0.8, 0.8), (0.8, 0.8, 0.8)) == (0.0, 0.0, 0.0)
    assert resolution_blur_mm((1.2, 1.2, 1.6), (0.8, 0.8, 0.8))[2] == pytest.approx(np.sqrt((1.6**2 - 0.64) / 12))
    assert acquired_shape(SHAPE, VOXEL_SIZE_MM, None) == SHAPE
    wm = np.zeros((10, 20, 30), dtype=np.float32)
    wm[:, :, 15:] = 1.0  # white matter above z = 15, CSF below: a step along z only
    fractions = TissueFractions(1.0 - wm, np.zeros_like(wm), wm, np.ones_like(wm), np.zeros_like(wm), (1.0, 1.0, 2.0))
    sharp = fractions.image(CONTRASTS["T1w"])
    assert set(np.unique(sharp)) == {CONTRASTS["T1w"].csf, CONTRASTS["T1w"].wm}
    blurred = fractions.image(CONTRASTS["T1w"], resolution_blur_mm((0.8, 0.8, 4.0), (0.8, 0.8, 0.8)))
    np.testing.assert_allclose(blurred.mean(axis=(0, 1)), blurred[3, 7], rtol=1e-5)  # nothing changes across x and y
    assert np.abs(np.diff(blurred[0, 0])).max() < 0.8 * np.abs(np.diff(sharp[0, 0])).max()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"contrast": "T2"}, "contrast must be one of ['T2w', 'T1w', 'FLAIR'], not 'T2'"),
        ({"voxel_size_mm": (1.0, 1.0)}, "voxel_size_mm must be three numbers in [0.5, 4.0] mm"),
        ({"voxel_size_mm": (1.0, 0.1, 1.0)}, "voxel_size_mm must be three numbers in [0.5, 4.0] mm"),
        ({"voxel_size_mm": "1"}, "voxel_size_mm must be three numbers in [0.5, 4.0] mm"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_dataset(tmp_path / "ds", n_subjects=1, shape=TINY, **kwargs)
    assert not (tmp_path / "ds").exists()


@pytest.mark.slow
def test_command_line_writes_a_t1w_dataset_at_1mm_and_records_it(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    command = [sys.executable, "-m", "scripts.data.demo_data", "--out_dir", str(root), "--n_subjects", "2"]
    command += ["--shape", "[40,48,44]", "--contrast", "T1w", "--voxel_size_mm", "[1,1,1]"]
    result = subprocess.run(command, cwd=BUNDLE_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    images = sorted(p.relative_to(root).as_posix() for p in root.glob("sub-*/anat/*"))
    assert images == [f"sub-00{i}/anat/sub-00{i}_T1w.{ext}" for i in (1, 2) for ext in ("json", "nii.gz")]
    image = nib.load(root / "sub-001" / "anat" / "sub-001_T1w.nii.gz")
    mask = nib.load(root / "derivatives" / "mask" / "sub-001" / "sub-001_desc-mask_PVS.nii.gz")
    assert image.shape == mask.shape == (32, 38, 35)
    np.testing.assert_array_equal(image.affine, mask.affine)
    sidecar = json.loads((root / "sub-001" / "anat" / "sub-001_T1w.json").read_text())
    assert [sidecar["pixel_dimensions"][f"pixdim{k}"] for k in (1, 2, 3)] == [1.0, 1.0, 1.0]
    assert nib.load(next(root.glob("derivatives/synthseg/sub-001/anat/*.nii.gz"))).shape == (32, 38, 35)
    marker = json.loads((root / MARKER_NAME).read_text())
    assert marker["contrast"] == "T1w" and marker["voxel_size_mm"] == [1.0, 1.0, 1.0]
    assert (
        'python -m scripts.data.demo_data --out_dir DIR --contrast T1w --voxel_size_mm "[1,1,1]"'
        in (root / "README.txt").read_text()
    )


def test_other_settings_regenerate_the_dataset_without_mixing(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    ensure_demo_dataset(root, n_subjects=2, shape=TINY)
    default_marker = json.loads((root / MARKER_NAME).read_text())
    assert "contrast" not in default_marker and "voxel_size_mm" not in default_marker  # as before they existed
    ensure_demo_dataset(root, n_subjects=2, shape=TINY, contrast="FLAIR", voxel_size_mm=(1.2, 1.2, 1.2))
    assert sorted(p.name for p in root.glob("sub-*/anat/*.nii.gz")) == ["sub-001_FLAIR.nii.gz", "sub-002_FLAIR.nii.gz"]
    assert nib.load(root / "sub-001" / "anat" / "sub-001_FLAIR.nii.gz").header.get_zooms() == (1.2, 1.2, 1.2)
    masks = sorted(root.glob("derivatives/mask/sub-*/*.nii.gz"))
    assert len(masks) == 2 and all(nib.load(m).header.get_zooms() == (1.2, 1.2, 1.2) for m in masks)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    ensure_demo_dataset(root, n_subjects=2, shape=TINY, contrast="FLAIR", voxel_size_mm=[1.2, 1.2, 1.2])
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
