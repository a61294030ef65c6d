import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_bids_dataset, synthetic_case, write_nifti

from scripts.bids import parse_entities
from scripts.data.datalist import (
    SPLITS,
    create_datalist,
    find_pairs,
    load_or_create_datalist,
    split_subjects,
)


def test_parse_entities_reads_key_value_pairs_and_suffix():
    entities, suffix = parse_entities("sub-01/ses-2/anat/sub-01_ses-2_acq-hires_run-3_T2w.nii.gz")
    assert entities == {"sub": "01", "ses": "2", "acq": "hires", "run": "3"}
    assert suffix == "T2w"


def test_parse_entities_rejects_non_nifti():
    with pytest.raises(ValueError, match="must be a NIfTI file"):
        parse_entities("sub-01_T2w.mgz")


def test_pairs_by_entities_with_sessions_and_mixed_extensions(tmp_path):
    root = make_bids_dataset(tmp_path / "ds", subjects=("01", "02"), sessions=("1", "2"))
    # Re-save one mask as .nii: the pair must still be found by its entities.
    gz = root / "derivatives/mask/sub-02/ses-1/sub-02_ses-1_desc-mask_PVS.nii.gz"
    _, mask = synthetic_case(seed=1)
    write_nifti(gz.with_name("sub-02_ses-1_desc-mask_PVS.nii"), mask)
    gz.unlink()
    cases, report = find_pairs(root)
    assert [c["id"] for c in cases] == ["sub-01_ses-1", "sub-01_ses-2", "sub-02_ses-1", "sub-02_ses-2"]
    paired = {c["id"]: c for c in cases}
    assert paired["sub-02_ses-1"]["label"].endswith("sub-02_ses-1_desc-mask_PVS.nii")
    assert paired["sub-02_ses-1"]["image"] == "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii.gz"
    assert report.images_without_label == [] and report.labels_without_image == []


def test_unpaired_files_are_reported_not_used(tmp_path):
    root = make_bids_dataset(tmp_path / "ds", subjects=("001", "002", "003"))
    (root / "derivatives/mask/sub-002/sub-002_desc-mask_PVS.nii.gz").unlink()
    _, mask = synthetic_case()
    write_nifti(root / "derivatives/mask/sub-009/sub-009_desc-mask_PVS.nii.gz", mask)
    cases, report = find_pairs(root)
    assert [c["subject"] for c in cases] == ["sub-001", "sub-003"]
    assert report.images_without_label == ["sub-002/anat/sub-002_T2w.nii.gz"]
    assert report.labels_without_image == ["derivatives/mask/sub-009/sub-009_desc-mask_PVS.nii.gz"]


def test_run_entity_distinguishes_cases(tmp_path):
    root = tmp_path / "ds"
    image, mask = synthetic_case()
    for run in ("1", "2"):
        write_nifti(root / f"sub-01/anat/sub-01_run-{run}_T2w.nii.gz", image)
    write_nifti(root / "derivatives/mask/sub-01/sub-01_run-2_desc-mask_PVS.nii.gz", mask)
    cases, report = find_pairs(root)
    assert [c["id"] for c in cases] == ["sub-01_run-2"]
    assert report.images_without_label == ["sub-01/anat/sub-01_run-1_T2w.nii.gz"]


def test_empty_masks_are_skipped_and_logged(bids_dataset, caplog):
    cases, report = find_pairs(bids_dataset)
    assert "sub-006" not in {c["subject"] for c in cases}
    assert report.empty_masks == ["derivatives/mask/sub-006/sub-006_desc-mask_PVS.nii.gz"]
    assert "sub-006_desc-mask_PVS.nii.gz is empty" in caplog.text


def test_duplicate_case_is_an_error_naming_both_files(tmp_path):
    root = make_bids_dataset(tmp_path / "ds", subjects=("001", "002"))
    image, _ = synthetic_case()
    write_nifti(root / "sub-001/anat/sub-001_T2w.nii", image)
    with pytest.raises(ValueError, match=r"sub-001_T2w.nii and sub-001/anat/sub-001_T2w.nii.gz"):
        find_pairs(root)


def test_split_is_deterministic_disjoint_and_complete():
    subjects = [f"sub-{i:03d}" for i in range(1, 201)]
    split = split_subjects(subjects, seed=0, fractions=(0.9, 0.05, 0.05))
    assert split == split_subjects(list(reversed(subjects)), seed=0, fractions=(0.9, 0.05, 0.05))
    assert [len(split[k]) for k in SPLITS] == [180, 10, 10]
    assert sorted(s for names in split.values() for s in names) == subjects
    assert split != split_subjects(subjects, seed=1, fractions=(0.9, 0.05, 0.05))


def test_split_keeps_every_subject_in_one_split_across_sessions(tmp_path):
    root = make_bids_dataset(tmp_path / "ds", subjects=("01", "02", "03", "04"), sessions=("1", "2"))
    datalist, _ = create_datalist(root, seed=3)
    owner = {}
    for name in SPLITS:
        for case in datalist[name]:
            assert owner.setdefault(case["subject"], name) == name
    assert len(owner) == 4 and all(datalist[k] for k in SPLITS)


def test_split_rejects_too_few_subjects_and_bad_fractions():
    with pytest.raises(ValueError, match="need at least 3 subjects"):
        split_subjects(["sub-1", "sub-2"], seed=0, fractions=(0.9, 0.05, 0.05))
    with pytest.raises(ValueError, match="summing to 1"):
        split_subjects(["a", "b", "c"], seed=0, fractions=(0.5, 0.5, 0.5))


def test_missing_dataset_dir_says_what_was_looked_for_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*sub-\*/\[ses-\*/\]anat/\*_T2w.*--dataset_dir"):
        load_or_create_datalist(tmp_path / "nope", tmp_path / "out/datalist.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no T2w image"):
        load_or_create_datalist(tmp_path / "empty", tmp_path / "out/datalist.json")


def test_datalist_is_written_once_and_reused(bids_dataset, tmp_path):
    file = tmp_path / "out" / "datalist.json"
    first = load_or_create_datalist(bids_dataset, file, seed=0)
    saved = json.loads(file.read_text())
    assert all(not Path(c["image"]).is_absolute() for c in saved["training"])
    assert json.loads((tmp_path / "out" / "datalist_report.json").read_text())["empty_masks_skipped"]
    mtime = file.stat().st_mtime_ns
    again = load_or_create_datalist(bids_dataset, file, seed=99)  # another seed must not re-split
    assert again == first and file.stat().st_mtime_ns == mtime
    assert all(Path(c["image"]).is_file() for k in SPLITS for c in first[k])


def test_user_datalist_with_missing_file_names_it(bids_dataset, tmp_path):
    file = tmp_path / "mine.json"
    items = [{"image": "sub-001/anat/sub-001_T2w.nii.gz", "label": "derivatives/mask/sub-001/x.nii.gz"}]
    file.write_text(json.dumps({"training": items, "validation": [], "test": []}))
    with pytest.raises(FileNotFoundError, match=r"x.nii.gz.*|mine.json"):
        load_or_create_datalist(bids_dataset, file)
    file.write_text(json.dumps({"training": items}))
    with pytest.raises(ValueError, match="missing"):
        load_or_create_datalist(bids_dataset, file)


def test_mask_on_disk_is_int16_like_ds005595(bids_dataset):
    import nibabel as nib

    img = nib.load(str(bids_dataset / "derivatives/mask/sub-001/sub-001_desc-mask_PVS.nii.gz"))
    assert img.get_data_dtype() == np.int16


def test_must_exist_refuses_to_build_a_new_split(bids_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="run training first"):
        load_or_create_datalist(bids_dataset, tmp_path / "datalist.json", must_exist=True)
    assert not (tmp_path / "datalist.json").exists()


def test_relative_dataset_dir_gives_absolute_paths_the_data_check_accepts(bids_dataset, tmp_path, monkeypatch):
    from scripts.data.check.run import check_cases

    monkeypatch.chdir(bids_dataset.parent)
    datalist = load_or_create_datalist(bids_dataset.name, tmp_path / "out" / "datalist.json")
    cases = datalist["training"] + datalist["validation"]
    assert all(Path(c["image"]).is_absolute() and Path(c["image"]).is_file() for c in cases)
    report = check_cases(cases, patch_size=(32, 32, 32), root=bids_dataset.name)
    assert report.errors == []
    assert all(not f.startswith("/") for f in report.files_checked)


def test_split_is_stable_and_says_so_when_a_subject_is_added(bids_dataset, tmp_path, caplog):
    file = tmp_path / "datalist.json"
    first = load_or_create_datalist(bids_dataset, file, seed=0)
    assert "does not list" not in caplog.text  # the skipped empty mask is not "new"
    image, mask = synthetic_case(seed=42)
    write_nifti(bids_dataset / "sub-007/anat/sub-007_T2w.nii.gz", image)
    write_nifti(bids_dataset / "derivatives/mask/sub-007/sub-007_desc-mask_PVS.nii.gz", mask)
    second = load_or_create_datalist(bids_dataset, file, seed=0)
    assert second == first
    assert "1 T2w image(s) that the saved split" in caplog.text and "sub-007/anat/sub-007_T2w.nii.gz" in caplog.text


def test_split_without_training_scores_every_subject():
    subjects = [f"sub-{i:03d}" for i in range(7)]
    split = split_subjects(subjects, seed=0, fractions=(0, 0, 1))
    assert split == {"test": subjects, "validation": [], "training": []}
    held = split_subjects(subjects, seed=0, fractions=(0, 0.3, 0.7))
    assert len(held["validation"]) == 2 and len(held["test"]) == 5 and not held["training"]
