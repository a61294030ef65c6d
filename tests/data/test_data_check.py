"""The data check on tiny non-cubic BIDS datasets with one planted fault each, then all of them at once."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import BUNDLE_ROOT, affine_for, bundle_env, make_bids_dataset, synthetic_case, write_nifti
from monai.data import MetaTensor
from monai.transforms import Orientation, Spacing
from scipy.spatial.transform import Rotation

from scripts.data.check.report import raise_on_errors, write_report
from scripts.data.check.run import check_cases, check_dataset, run_check
from scripts.data.check.volumes import resampled_shape
from scripts.data.datalist import find_pairs

PATCH = (32, 32, 32)  # the fixtures are 40 x 48 x 36: no volume is smaller than this patch


def image_path(sub: str, ext: str = ".nii.gz") -> str:
    return f"sub-{sub}/anat/sub-{sub}_T2w{ext}"


def mask_path(sub: str, ext: str = ".nii.gz") -> str:
    return f"derivatives/mask/sub-{sub}/sub-{sub}_desc-mask_PVS{ext}"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_bids_dataset(tmp_path / "ds", subjects=("001", "002", "003"))


def the_finding(report, problem: str, file: str):
    """The one finding of a report, checked to be this problem on this file."""
    assert [(f.file, f.problem) for f in report.findings] == [(file, problem)], report.summary()
    finding = report.findings[0]
    assert finding.message.startswith(f"{file}: ")
    assert finding.fix
    return finding


def write_float(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    return write_nifti(path, data, affine, dtype=np.float32)


def damage(path: Path) -> Path:
    """Flip 64 bytes in the middle of a file, keeping its length."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0x55 for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))
    return path


def truncate(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def test_clean_dataset_has_no_finding_and_lists_every_file(dataset):
    report = check_dataset(dataset, patch_size=PATCH)
    assert report.findings == []
    assert report.counts() == {"error": 0, "warning": 0}
    subjects = ("001", "002", "003")
    assert report.files_checked == sorted([image_path(s) for s in subjects] + [mask_path(s) for s in subjects])


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_truncated_file_whose_header_still_reads_is_an_error(tmp_path, ext):
    root = make_bids_dataset(tmp_path / "ds", subjects=("001", "002"), ext=ext)
    truncate(root / image_path("002", ext))
    finding = the_finding(check_dataset(root, patch_size=PATCH), "truncated", image_path("002", ext))
    assert finding.severity == "error"
    assert "truncated" in finding.message


def test_gzip_missing_its_last_bytes_is_truncated_although_nibabel_loads_it(dataset):
    path = dataset / image_path("001")
    path.write_bytes(path.read_bytes()[:-4])
    np.asanyarray(nib.load(path).dataobj)  # the voxels load: only reading to the end notices
    finding = the_finding(check_dataset(dataset, patch_size=PATCH), "truncated", image_path("001"))
    assert finding.severity == "error"


def test_damaged_compressed_data_is_corrupt(dataset):
    damage(dataset / image_path("003"))
    np.asanyarray(nib.load(dataset / image_path("003")).dataobj)  # nibabel alone does not notice
    finding = the_finding(check_dataset(dataset, patch_size=PATCH), "corrupt", image_path("003"))
    assert finding.severity == "error"
    assert "checksum" in finding.message


def test_file_cut_inside_its_header_is_truncated(dataset):
    truncate(dataset / mask_path("001"), fraction=0.002)
    finding = the_finding(check_dataset(dataset, patch_size=PATCH), "truncated", mask_path("001"))
    assert "ends before its header does" in finding.message


def test_file_that_is_not_gzip_is_unreadable(dataset):
    (dataset / mask_path("002")).write_bytes(b"<html>Not Found</html>" * 20)
    finding = the_finding(check_dataset(dataset, patch_size=PATCH), "unreadable", mask_path("002"))
    assert finding.severity == "error"
    assert "not a gzip" in finding.message.lower()


def test_image_without_mask_is_a_warning_naming_the_mask_expected(dataset):
    (dataset / mask_path("002")).unlink()
    finding = the_finding(check_dataset(dataset, patch_size=PATCH), "image_without_label", image_path("002"))
    assert finding.severity == "warning"
    assert "skips" in finding.message
    assert mask_path("002") in finding.fix


def test_mask_without_image_is_a_warning(dataset):
    (dataset / image_path("003")).unlink()
    finding = the_finding(check_dataset(dataset, patch_size=PATCH), "label_without_image", mask_path("003"))
    assert finding.severity == "warning"
    assert image_path("003") in finding.fix


def test_mask_saved_as_0_255_warns_that_binarising_gives_the_right_mask(dataset):
    _, mask = synthetic_case(seed=1)
    write_nifti(dataset / mask_path("002"), mask * 255)
    finding = the_finding(check_dataset(dataset, patch_size=PATCH), "non_binary_label", mask_path("002"))
    assert finding.severity == "warning"
    assert "not [0, 255]" in finding.message
    assert "255 becomes 1, which is right for a 0/255 mask" in finding.message


def test_multi_label_mask_warns_that_its_labels_merge(dataset):
    _, mask = synthetic_case(seed=1)
    mask[10:12, 10:12, 10:14] = 2  # a second label
    write_nifti(dataset / mask_path("002"), mask)
    finding = the_finding(check_dataset(dataset, patch_size=PATCH), "non_binary_label", mask_path("002"))
    assert finding.severity == "warning"
    assert "the 2 labels [1, 2] merge into one PVS class" in finding.message


def test_non_binary_mask_is_an_error_when_refused(dataset):
    _, mask = synthetic_case(seed=1)
    write_nifti(dataset / mask_path("002"), mask * 255)
    report = check_dataset(dataset, patch_size=PATCH, non_binary="refuse")
    finding = the_finding(report, "non_binary_label", mask_path("002"))
    assert finding.severity == "error"
    assert "refuse" in finding.message


def test_empty_mask_is_a_warning_that_the_case_is_skipped(tmp_path):
    root = make_bids_dataset(tmp_path / "ds", subjects=("001", "002"), empty=("002",))
    finding = the_finding(check_dataset(root, patch_size=PATCH), "empty_mask", mask_path("002"))
    assert finding.severity == "warning"
    assert "skips" in finding.message


def test_mask_of_another_shape_is_an_error_naming_both_shapes(dataset):
    _, mask = synthetic_case(shape=(40, 48, 30), seed=1)
    write_nifti(dataset / mask_path("002"), mask)
    finding = the_finding(check_dataset(dataset, patch_size=PATCH), "shape_mismatch", mask_path("002"))
    assert finding.severity == "error"
    assert "(40, 48, 30) must equal its image's (40, 48, 36)" in finding.message
    assert image_path("002") in finding.message


def test_shifted_mask_affine_is_an_error_giving_the_shift(dataset):
    _, mask = synthetic_case(seed=1)
    write_nifti(dataset / mask_path("002"), mask, affine_for(origin=(-18.4, -30.0, -10.0)))
    finding = the_finding(check_dataset(dataset, patch_size=PATCH), "affine_mismatch", mask_path("002"))
    assert finding.severity == "error"
    assert "origin shifted by (1.6, 0, 0) mm" in finding.message


def test_affines_differing_within_the_tolerance_pass(dataset):
    _, mask = synthetic_case(seed=1)
    write_nifti(dataset / mask_path("002"), mask, affine_for(spacing=(0.8, 0.8, 0.8)))  # the image has 0.799998
    assert check_dataset(dataset, patch_size=PATCH).findings == []


def test_nan_in_a_float_image_is_an_error_counting_them(dataset):
    image, _ = synthetic_case(seed=0)
    image[3, 4, 5] = np.nan
    image[6, 7, 8] = np.inf
    write_float(dataset / image_path("001"), image)
    finding = the_finding(check_dataset(dataset, patch_size=PATCH), "non_finite", image_path("001"))
    assert finding.severity == "error"
    assert "not 2 NaN/Inf voxel(s)" in finding.message


def test_4d_image_is_an_error_listing_its_shape(dataset):
    image, _ = synthetic_case(seed=0)
    write_nifti(dataset / image_path("001"), np.stack([image, image], axis=-1))
    finding = the_finding(check_dataset(dataset, patch_size=PATCH), "not_3d", image_path("001"))
    assert finding.severity == "error"
    assert "not shape (40, 48, 36, 2)" in finding.message


def test_trailing_singleton_4th_dimension_is_accepted(dataset):
    image, mask = synthetic_case(seed=0)
    write_nifti(dataset / image_path("001"), image[..., None])
    write_nifti(dataset / mask_path("001"), mask[..., None])
    assert check_dataset(dataset, patch_size=PATCH).findings == []


def test_volume_smaller_than_the_patch_warns_that_it_is_padded(tmp_path):
    root = make_bids_dataset(tmp_path / "ds", subjects=("001",), shape=(20, 40, 36))
    finding = the_finding(check_dataset(root, patch_size=PATCH), "too_small", image_path("001"))
    assert finding.severity == "warning"
    assert "spans [20, 40, 36] voxels" in finding.message
    assert "along x (left-right)" in finding.message
    assert "zero-padded" in finding.message


def test_too_small_uses_the_extent_after_resampling_to_pixdim(dataset):
    report = check_dataset(dataset, patch_size=PATCH, pixdim=(1.6, 1.6, 1.6))
    assert {f.problem for f in report.findings} == {"too_small"}
    assert "spans [20, 25, 19] voxels" in report.findings[0].message


def test_too_small_compares_the_patch_in_ras_order(tmp_path):
    # voxel axis 0 runs anterior, axis 1 right: RAS extent (24, 48, 40) for a (48, 24, 40) array.
    affine = np.array([[0.0, 0.8, 0, -10], [0.8, 0, 0, -20], [0, 0, 0.8, -5], [0, 0, 0, 1]])
    root = tmp_path / "ds"
    image, mask = synthetic_case(shape=(48, 24, 40), seed=0)
    write_nifti(root / image_path("001"), image, affine)
    write_nifti(root / mask_path("001"), mask, affine)
    assert check_dataset(root, patch_size=(24, 48, 32)).findings == []
    assert [f.problem for f in check_dataset(root, patch_size=(48, 24, 32)).findings] == ["too_small"]


def test_resampled_shape_matches_monai_orientation_and_spacing():
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", (0.2, -0.15, 0.1)).as_matrix()[:, [1, 0, 2]] * (0.7, -1.2, 0.9)
    shape, pixdim = (30, 41, 23), (0.8, 1.1, 0.6)
    volume = MetaTensor(torch.zeros((1, *shape)), affine=torch.as_tensor(affine))
    resampled = Spacing(pixdim=pixdim)(Orientation(axcodes="RAS")(volume))
    assert resampled_shape(shape, affine, pixdim) == tuple(resampled.shape[1:])


def test_nii_next_to_nii_gz_is_a_duplicate_the_datalist_refuses(dataset):
    image, _ = synthetic_case(seed=1)
    write_nifti(dataset / image_path("002", ".nii"), image)
    finding = the_finding(check_dataset(dataset, patch_size=PATCH), "duplicate", image_path("002", ".nii"))
    assert finding.severity == "error"
    assert f"the first is {image_path('002')}" in finding.message
    with pytest.raises(ValueError, match="two files for the same case"):
        find_pairs(dataset)


@pytest.mark.parametrize("file", [image_path("001", ".mgz"), mask_path("002", ".nii.zip")])
def test_non_nifti_file_in_an_image_or_mask_folder_is_reported(dataset, file):
    (dataset / file).write_bytes(b"\x00" * 64)
    finding = the_finding(check_dataset(dataset, patch_size=PATCH), "not_nifti", file)
    assert finding.severity == "warning"
    assert f"not {file[file.index('.') :]}" in finding.message
    assert "ignores it" in finding.message


def test_sidecars_and_hidden_files_are_not_findings(dataset):
    (dataset / "sub-001/anat/sub-001_T2w.json").write_text("{}")
    (dataset / "derivatives/mask/sub-001/sub-001_desc-mask_PVS.json").write_text("{}")
    (dataset / "sub-002/anat/.DS_Store").write_bytes(b"\x00")
    assert check_dataset(dataset, patch_size=PATCH).findings == []


def test_name_the_datalist_refuses_is_an_error(dataset):
    image, _ = synthetic_case(seed=0)
    write_nifti(dataset / "sub-001/anat/sub001_T2w.nii.gz", image)
    finding = the_finding(check_dataset(dataset, patch_size=PATCH), "bids_name", "sub-001/anat/sub001_T2w.nii.gz")
    assert finding.severity == "error"
    assert "must be named like sub-<label>" in finding.message
    with pytest.raises(ValueError, match="must be a BIDS name"):
        find_pairs(dataset)


def test_unparsable_nifti_the_datalist_ignores_is_a_warning(dataset):
    image, _ = synthetic_case(seed=0)
    write_nifti(dataset / "sub-001/anat/localizer.nii.gz", image)
    finding = the_finding(check_dataset(dataset, patch_size=PATCH), "bids_name", "sub-001/anat/localizer.nii.gz")
    assert finding.severity == "warning"
    assert "ignores it" in finding.message


def test_image_outside_anat_is_misplaced(dataset):
    (dataset / image_path("001")).rename(dataset / "sub-001/sub-001_T2w.nii.gz")
    report = check_dataset(dataset, patch_size=PATCH)
    assert [(f.file, f.problem, f.severity) for f in report.findings] == [
        (mask_path("001"), "label_without_image", "warning"),
        ("sub-001/sub-001_T2w.nii.gz", "misplaced", "warning"),
    ]


def test_mask_outside_a_subject_folder_is_misplaced(dataset):
    (dataset / mask_path("002")).rename(dataset / "derivatives/mask/sub-002_desc-mask_PVS.nii.gz")
    report = check_dataset(dataset, patch_size=PATCH)
    assert [(f.file, f.problem, f.severity) for f in report.findings] == [
        ("derivatives/mask/sub-002_desc-mask_PVS.nii.gz", "misplaced", "warning"),
        (image_path("002"), "image_without_label", "warning"),
    ]


def test_nifti2_files_are_read(dataset):
    _, mask = synthetic_case(seed=1)
    nib.save(nib.Nifti2Image(mask, affine_for()), str(dataset / mask_path("002")))
    assert check_dataset(dataset, patch_size=PATCH).findings == []


def test_file_named_for_another_subject_than_its_folder_is_reported(dataset):
    image, mask = synthetic_case(seed=0)
    write_nifti(dataset / "sub-003/anat/sub-004_T2w.nii.gz", image)
    write_nifti(dataset / mask_path("004"), mask)
    report = check_dataset(dataset, patch_size=PATCH)
    finding = the_finding(report, "folder_mismatch", "sub-003/anat/sub-004_T2w.nii.gz")
    assert finding.severity == "warning"
    assert "sub-004 in the name but sub-003 in the path" in finding.message


def test_missing_mask_folder_is_an_error(dataset):
    report = check_dataset(dataset, label_dir="derivatives/pvs", patch_size=PATCH)
    assert [f.problem for f in report.errors] == ["label_dir_missing"]
    assert report.errors[0].message.startswith("derivatives/pvs: the mask folder does not exist")
    assert [f.problem for f in report.findings if f.severity == "warning"] == ["image_without_label"] * 3


def test_dataset_without_images_is_an_error(tmp_path):
    (tmp_path / "ds" / "derivatives" / "mask").mkdir(parents=True)
    the_finding(check_dataset(tmp_path / "ds", patch_size=PATCH), "no_images", ".")


def test_missing_dataset_dir_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset_dir must be an existing directory"):
        check_dataset(tmp_path / "absent")


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"patch_size": (96, 96)}, "patch_size must be three positive ints, not"),
        ({"pixdim": (0.8, 0.0, 0.8)}, "pixdim must be three positive voxel sizes in mm, not"),
        ({"non_binary": "keep"}, "non_binary must be one of"),
        ({"affine_atol": -1.0}, "affine_atol must be a non-negative number, not -1.0"),
    ],
)
def test_malformed_settings_raise(dataset, settings, match):
    with pytest.raises(ValueError, match=match):
        check_dataset(dataset, **settings)


# --- on a workflow's cases ---------------------------------------------------------------------------------


def test_check_cases_reads_a_file_listed_twice_once(dataset):
    _, mask = synthetic_case(seed=1)
    write_nifti(dataset / mask_path("002"), mask * 255)
    cases = [{"image": str(dataset / image_path(s)), "label": str(dataset / mask_path(s))} for s in ("001", "002")]
    report = check_cases(cases + cases[1:], patch_size=PATCH)
    assert report.files_checked == sorted(c[k] for c in cases for k in ("image", "label"))
    the_finding(report, "non_binary_label", str(dataset / mask_path("002")))


def test_check_cases_shows_paths_relative_to_root(dataset):
    _, mask = synthetic_case(shape=(40, 48, 30), seed=1)
    write_nifti(dataset / mask_path("002"), mask)
    cases = [{"image": str(dataset / image_path("002")), "label": str(dataset / mask_path("002"))}]
    the_finding(check_cases(cases, patch_size=PATCH, root=dataset), "shape_mismatch", mask_path("002"))


def test_check_cases_without_labels_checks_the_images(dataset):
    truncate(dataset / image_path("003"))
    cases = [{"image": str(dataset / image_path(s))} for s in ("001", "003")]
    the_finding(check_cases(cases, patch_size=PATCH), "truncated", str(dataset / image_path("003")))


def test_check_cases_missing_and_non_nifti_files_are_errors(dataset):
    (dataset / "sub-001/anat/sub-001_T2w.mgz").write_bytes(b"\x00" * 64)
    cases = [{"image": "sub-001/anat/sub-001_T2w.mgz"}, {"image": image_path("009"), "label": mask_path("009")}]
    report = check_cases(cases, patch_size=PATCH, root=dataset)
    assert [(f.file, f.problem, f.severity) for f in report.findings] == [
        (mask_path("009"), "missing_file", "error"),
        ("sub-001/anat/sub-001_T2w.mgz", "not_nifti", "error"),
        (image_path("009"), "missing_file", "error"),
    ]


def test_check_cases_rejects_a_case_without_image():
    with pytest.raises(ValueError, match="case 0 must be a dict with an 'image' path"):
        check_cases([{"label": "x.nii.gz"}])


# --- report, errors, bundle entry point, command line ------------------------------------------------------


def test_raise_on_errors_lists_every_error_with_its_fix_and_the_report(dataset, tmp_path):
    truncate(dataset / image_path("001"))
    _, mask = synthetic_case(shape=(40, 48, 30), seed=1)
    write_nifti(dataset / mask_path("002"), mask)
    (dataset / mask_path("003")).unlink()  # a warning: not listed
    report = check_dataset(dataset, patch_size=PATCH)
    with pytest.raises(ValueError, match=r"found 2 error\(s\); full report") as raised:
        raise_on_errors(report, tmp_path / "report.json")
    text = str(raised.value)
    assert str(tmp_path / "report.json") in text
    assert f"[truncated] {image_path('001')}: " in text
    assert f"[shape_mismatch] {mask_path('002')}: " in text
    assert text.count("Fix: ") == 2
    assert "image_without_label" not in text


def test_raise_on_errors_passes_warnings(tmp_path):
    root = make_bids_dataset(tmp_path / "ds", subjects=("001", "002"), empty=("002",))
    raise_on_errors(check_dataset(root, patch_size=PATCH), tmp_path / "report.json")


def test_write_report_writes_the_findings_as_json(dataset, tmp_path):
    truncate(dataset / image_path("001"))
    path = write_report(check_dataset(dataset, patch_size=PATCH), tmp_path / "out" / "data_check.json")
    saved = json.loads(path.read_text())
    assert saved["counts"] == {"error": 1, "warning": 0}
    assert saved["problems"] == {"truncated": 1}
    assert saved["findings"][0]["file"] == image_path("001")
    assert set(saved["findings"][0]) == {"file", "severity", "problem", "message", "fix"}
    assert len(saved["files_checked"]) == 6
    assert saved["settings"]["patch_size"] == list(PATCH)
    assert [p.name for p in path.parent.iterdir()] == ["data_check.json"]  # no temporary file left


def test_run_check_writes_the_report_then_raises_on_errors(dataset, tmp_path):
    (dataset / mask_path("001")).write_bytes(b"junk")
    report_file = tmp_path / "eval" / "data_check.json"
    with pytest.raises(ValueError, match=r"\[unreadable\]"):
        run_check(dataset, report_file, patch_size=PATCH)
    assert json.loads(report_file.read_text())["problems"] == {"unreadable": 1}


def test_run_check_returns_the_report_when_clean(dataset, tmp_path):
    result = run_check(dataset, tmp_path / "data_check.json", patch_size=PATCH)
    assert result["counts"] == {"error": 0, "warning": 0}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scripts.data.check", *args],
        cwd=BUNDLE_ROOT,
        env=bundle_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_cli_exits_0_on_a_clean_dataset(dataset):
    proc = run_cli("--dataset_dir", str(dataset), "--patch_size", "[32,32,32]")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 files checked, 0 error(s), 0 warning(s)" in proc.stdout


@pytest.mark.slow
def test_cli_exits_2_on_a_missing_dataset(tmp_path):
    proc = run_cli("--dataset_dir", str(tmp_path / "absent"))
    assert proc.returncode == 2
    assert "dataset_dir must be an existing directory" in proc.stderr


# --- every fault at once ------------------------------------------------------------------------------------


def plant_faults(root: Path) -> set[tuple[str, str, str]]:
    """Break a clean 12-subject dataset in 17 ways (15 kinds); return the (file, problem, severity) of each."""
    image, mask = synthetic_case(seed=99)
    truncate(root / image_path("001"))
    (root / mask_path("002")).write_bytes(b"<html>Not Found</html>" * 20)
    write_nifti(root / mask_path("003"), mask * 255)
    write_nifti(root / mask_path("004"), np.where(np.arange(mask.size).reshape(mask.shape) % 7 == 0, 2, mask))
    write_nifti(root / mask_path("005"), synthetic_case(shape=(40, 48, 30), seed=5)[1])
    write_nifti(root / mask_path("006"), mask, affine_for(origin=(-20.0, -28.0, -10.0)))
    write_float(root / image_path("007"), np.where(mask > 0, np.nan, image))
    write_nifti(root / image_path("008"), np.stack([image, image], axis=-1))
    write_nifti(root / image_path("002", ".nii"), image)
    (root / image_path("003", ".mgz")).write_bytes(b"\x00" * 64)
    (root / mask_path("004", ".nii.zip")).write_bytes(b"PK\x03\x04" * 16)
    write_nifti(root / mask_path("009"), np.zeros_like(mask))
    (root / mask_path("010")).unlink()
    (root / image_path("011")).unlink()
    small_image, small_mask = synthetic_case(shape=(24, 40, 36), seed=12)
    write_nifti(root / image_path("012"), small_image)
    write_nifti(root / mask_path("012"), small_mask)
    write_nifti(root / "sub-006/anat/sub006_T2w.nii.gz", image)
    damage(root / image_path("005"))
    return {
        (image_path("001"), "truncated", "error"),
        (mask_path("002"), "unreadable", "error"),
        (mask_path("003"), "non_binary_label", "warning"),
        (mask_path("004"), "non_binary_label", "warning"),
        (mask_path("005"), "shape_mismatch", "error"),
        (mask_path("006"), "affine_mismatch", "error"),
        (image_path("007"), "non_finite", "error"),
        (image_path("008"), "not_3d", "error"),
        (image_path("002", ".nii"), "duplicate", "error"),
        (image_path("003", ".mgz"), "not_nifti", "warning"),
        (mask_path("004", ".nii.zip"), "not_nifti", "warning"),
        (mask_path("009"), "empty_mask", "warning"),
        (image_path("010"), "image_without_label", "warning"),
        (mask_path("011"), "label_without_image", "warning"),
        (image_path("012"), "too_small", "warning"),
        ("sub-006/anat/sub006_T2w.nii.gz", "bids_name", "error"),
        (image_path("005"), "corrupt", "error"),
    }


@pytest.fixture
def broken_dataset(tmp_path: Path) -> tuple[Path, set[tuple[str, str, str]]]:
    root = make_bids_dataset(tmp_path / "ds", subjects=tuple(f"{i:03d}" for i in range(1, 13)))
    return root, plant_faults(root)


def test_every_planted_fault_is_found_in_one_pass(broken_dataset):
    root, planted = broken_dataset
    report = check_dataset(root, patch_size=PATCH)
    assert {(f.file, f.problem, f.severity) for f in report.findings} == planted
    assert len(report.findings) == len(planted)
    assert report.counts() == {
        "error": sum(s == "error" for *_, s in planted),
        "warning": sum(s == "warning" for *_, s in planted),
    }


@pytest.mark.slow
def test_cli_finds_every_planted_fault_writes_the_report_and_exits_1(broken_dataset, tmp_path):
    root, planted = broken_dataset
    report_file = tmp_path / "data_check.json"
    proc = run_cli("--dataset_dir", str(root), "--report", str(report_file), "--patch_size", "[32,32,32]")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    found = {(f["file"], f["problem"], f["severity"]) for f in json.loads(report_file.read_text())["findings"]}
    assert found == planted
    for file, problem, severity in planted:
        assert f"{severity.upper():7} [{problem}] {file}: " in proc.stdout
    assert f"Report: {report_file}" in proc.stdout
