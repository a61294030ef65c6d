"""The BIDS layout scan that the datalist, the data check and inference's inputs share, on tiny datasets."""

from pathlib import Path

from conftest import make_bids_dataset, synthetic_case, write_nifti

from scripts.bids import case_dir, find_images, find_labels, in_image_folder, named_contrast
from scripts.data.check.run import check_dataset


def relative(root: Path, files: list[Path]) -> list[str]:
    return [f.relative_to(root).as_posix() for f in files]


def test_images_are_those_of_the_anat_folders_with_sessions(tmp_path):
    root = make_bids_dataset(tmp_path / "ds", subjects=("01", "02"), sessions=("1",))
    image, _ = synthetic_case(seed=3)
    write_nifti(root / "sub-01/ses-1/anat/extra/sub-01_ses-1_run-2_T2w.nii.gz", image)  # too deep: not an image
    write_nifti(root / "sub-01/ses-1/func/sub-01_ses-1_T2w.nii.gz", image)  # not anat
    assert relative(root, find_images(root)) == [
        "sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz",
        "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii.gz",
    ]
    assert relative(root, find_labels(root, "derivatives/mask")) == [
        "derivatives/mask/sub-01/ses-1/sub-01_ses-1_desc-mask_PVS.nii.gz",
        "derivatives/mask/sub-02/ses-1/sub-02_ses-1_desc-mask_PVS.nii.gz",
    ]


def test_hidden_files_are_left_out_by_the_datalist_and_the_check_alike(tmp_path):
    root = make_bids_dataset(tmp_path / "ds", subjects=("001", "002"))
    (root / "sub-001/anat/._sub-001_T2w.nii.gz").write_bytes(b"\x00" * 64)  # a macOS resource fork
    (root / "derivatives/mask/sub-001/.hidden").mkdir()
    (root / "derivatives/mask/sub-001/.hidden/sub-001_desc-mask_PVS.nii.gz").write_bytes(b"\x00" * 64)
    assert relative(root, find_images(root)) == ["sub-001/anat/sub-001_T2w.nii.gz", "sub-002/anat/sub-002_T2w.nii.gz"]
    assert len(find_labels(root, "derivatives/mask")) == 2
    assert check_dataset(root, patch_size=(32, 32, 32)).findings == []


def test_a_linked_anat_folder_is_followed_by_the_datalist_and_the_check_alike(tmp_path):
    root = make_bids_dataset(tmp_path / "ds", subjects=("001", "002"))
    elsewhere = tmp_path / "store" / "anat"
    elsewhere.parent.mkdir()
    (root / "sub-002/anat").rename(elsewhere)
    (root / "sub-002/anat").symlink_to(elsewhere, target_is_directory=True)
    assert relative(root, find_images(root)) == ["sub-001/anat/sub-001_T2w.nii.gz", "sub-002/anat/sub-002_T2w.nii.gz"]
    report = check_dataset(root, patch_size=(32, 32, 32))
    assert report.findings == []
    assert "sub-002/anat/sub-002_T2w.nii.gz" in report.files_checked


def test_image_folders_and_case_folders():
    assert in_image_folder(Path("sub-1/anat/a_T2w.nii.gz")) and in_image_folder(Path("sub-1/ses-2/anat/a.nii"))
    assert not in_image_folder(Path("sub-1/x/anat/a_T2w.nii.gz")) and not in_image_folder(Path("anat/a_T2w.nii"))
    assert case_dir({"sub": "1", "ses": "2", "run": "3"}) == "sub-1/ses-2"


def test_named_contrast_reads_bids_names_and_known_suffixes_only():
    assert named_contrast(Path("sub-1_ses-2_T1w.nii.gz")) == "T1w"
    assert named_contrast(Path("case7_FLAIR.nii")) == "FLAIR"
    assert named_contrast(Path("case7.nii")) is None
    assert named_contrast(Path("scan_final.nii.gz")) is None
