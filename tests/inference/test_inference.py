"""The inference workflow run for real through `python -m monai.bundle run` on tiny non-cubic NIfTI inputs."""

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, make_bids_dataset, run_bundle, synthetic_case, write_nifti
from inference_helpers import (
    SHAPE,
    SPACING,
    TINY_INFERENCE,
    infer,
    load,
    lps_copy,
    output,
    permuted_copy,
    ras_affine,
    save_tiny_model,
)
from monai.transforms import EnsureChannelFirstd
from scipy import ndimage

from scripts.data.transforms import SelectVolumed, preprocessing
from scripts.inference.inference_inputs import (
    check_image,
    inference_datalist,
    list_inputs,
)
from scripts.inference.prediction_writer import ID_COLUMNS
from scripts.measurement.pvs_burden import BURDEN_COLUMNS, pvs_burden
from scripts.measurement.roi import ROI_COLUMNS
from scripts.nifti import voxel_volume_mm3
from scripts.settings import as_volume_index


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model")
    image = write_nifti(root / "calibration.nii.gz", synthetic_case(SHAPE)[0], ras_affine())
    return save_tiny_model(root / "model.pt", image)


@pytest.fixture(scope="module")
def oriented_run(tmp_path_factory, model_file):
    """One image stored three ways (RAS, LPS, permuted axes) in a folder, segmented with probabilities."""
    root = tmp_path_factory.mktemp("oriented")
    data, affine = synthetic_case(SHAPE)[0], ras_affine()
    write_nifti(root / "in" / "ras.nii.gz", data, affine)
    write_nifti(root / "in" / "lps.nii.gz", *lps_copy(data, affine))
    write_nifti(root / "in" / "sra.nii", *permuted_copy(data, affine))
    (root / "in" / "notes.txt").write_text("not an image")
    proc = infer(
        "--input_dir",
        str(root / "in"),
        "--output_dir",
        str(root / "out"),
        "--model_file",
        str(model_file),
        "--save_probabilities",
        "true",
    )
    assert proc.returncode == 0, output(proc)
    return root / "in", root / "out", proc


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ras.nii.gz", "lps.nii.gz", "sra.nii"])
def test_outputs_have_the_geometry_of_their_input(oriented_run, name):
    inputs, outputs, _ = oriented_run
    source = nib.load(str(inputs / name))
    stem = name.split(".")[0]
    for suffix, dtype in (("mask", np.uint8), ("probseg", np.float32)):
        written = nib.load(str(outputs / f"{stem}_desc-pvs_{suffix}.nii.gz"))
        assert written.shape == source.shape
        assert np.array_equal(written.affine, source.affine)
        assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(source.affine)
        assert written.get_data_dtype() == dtype
    assert set(np.unique(load(outputs / f"{stem}_desc-pvs_mask.nii.gz"))) <= {0, 1}


@pytest.mark.slow
def test_probabilities_are_written_beside_the_mask_not_thresholded(oriented_run):
    _, outputs, _ = oriented_run
    prob = load(outputs / "ras_desc-pvs_probseg.nii.gz")
    mask = load(outputs / "ras_desc-pvs_mask.nii.gz")
    assert ((prob > 0.01) & (prob < 0.99)).any()  # probabilities, not a second copy of the mask
    assert (prob[mask > 0] >= 0.5).all()  # the mask is the thresholded probability (inside the head)


@pytest.mark.slow
def test_masks_agree_whatever_the_storage_order(oriented_run):
    _, outputs, _ = oriented_run
    canonical = {
        stem: [
            np.asarray(nib.as_closest_canonical(nib.load(str(outputs / f"{stem}_desc-pvs_{s}.nii.gz"))).dataobj)
            for s in ("mask", "probseg")
        ]
        for stem in ("ras", "lps", "sra")
    }
    ras_mask, ras_prob = canonical["ras"]
    assert 0 < ras_mask.sum() < ras_mask.size / 4
    for stem in ("lps", "sra"):
        mask, prob = canonical[stem]
        assert np.array_equal(mask, ras_mask), stem
        np.testing.assert_allclose(prob, ras_prob, atol=1e-5)


@pytest.mark.slow
def test_table_matches_the_written_masks(oriented_run):
    inputs, outputs, _ = oriented_run
    rows = list(csv.DictReader((outputs / "pvs_burden.csv").open()))
    assert list(rows[0]) == [*ID_COLUMNS, *BURDEN_COLUMNS, *ROI_COLUMNS[1:], "brain_from_parcellation", "roi"]
    assert sorted((r["subject"], r["session"], r["image"]) for r in rows) == [
        ("lps", "", "lps.nii.gz"),
        ("ras", "", "ras.nii.gz"),
        ("sra", "", "sra.nii"),
    ]
    assert json.loads((outputs / "pvs_burden.json").read_text()) == [
        {
            k: (
                int(v)
                if k in ("pvs_count", "outside_roi_count", "brain_from_parcellation")
                else v
                if k in (*ID_COLUMNS, "roi")
                else float(v)
            )
            for k, v in r.items()
        }
        for r in rows
    ]
    for row in rows:
        name = "sra.nii" if row["subject"] == "sra" else f"{row['subject']}.nii.gz"
        mask = load(outputs / f"{row['subject']}_desc-pvs_mask.nii.gz")
        labels, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 3))
        voxel = float(np.prod(SPACING))  # the header stores it in float32: compare to 1e-6
        # PVS are counted inside the brain (the ROI); the parts outside it are counted apart, never together
        assert row["roi"] == "estimated brain, not eroded"
        assert int(row["pvs_count"]) > 1 and int(row["pvs_count"]) + int(row["outside_roi_count"]) >= count > 1
        # the table rounds volumes to 0.1 mm³ and fractions to 6 decimals
        inside_and_outside = float(row["pvs_volume_mm3"]) + float(row["outside_roi_volume_mm3"])
        assert abs(inside_and_outside - mask.sum() * voxel) <= 0.1
        assert float(row["largest_pvs_mm3"]) <= np.bincount(labels.ravel())[1:].max() * voxel + 0.05
        assert float(row["pvs_volume_mm3"]) <= float(row["roi_volume_mm3"]) <= float(row["brain_volume_mm3"])
        assert 0 < float(row["pvs_volume_mm3"]) < float(row["brain_volume_mm3"]) < np.prod(SHAPE) * voxel
        assert math.isclose(
            float(row["pvs_volume_fraction"]),
            float(row["pvs_volume_mm3"]) / float(row["brain_volume_mm3"]),
            rel_tol=1e-3,
        )
        assert row["brain_from_parcellation"] == "0"
        assert nib.load(str(inputs / name)).shape[:3] == mask.shape


@pytest.mark.slow
def test_progress_bar_counts_the_inputs_and_other_files_are_ignored(oriented_run):
    _, _, proc = oriented_run
    assert "[3/3]" in proc.stderr
    assert "Ignoring 1 file(s)" in proc.stdout and "notes.txt" in proc.stdout


@pytest.mark.slow
def test_bids_outputs_mirror_the_dataset_with_plain_run_from_the_repo_root(tmp_path, model_file):
    dataset = make_bids_dataset(tmp_path / "ds", subjects=("001", "002"), sessions=("1",), shape=SHAPE)
    args = ["--bundle_root", "pvs_bundle", "--input_dir", str(dataset), "--output_dir", str(tmp_path / "out")]
    proc = run_bundle(
        [
            "run",
            "--config_file",
            "pvs_bundle/configs/inference.json",
            *TINY_INFERENCE,
            *args,
            "--model_file",
            str(model_file),
        ],
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, output(proc)
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.nii.gz"))
    assert written == [
        "sub-001/ses-1/anat/sub-001_ses-1_desc-pvs_mask.nii.gz",
        "sub-002/ses-1/anat/sub-002_ses-1_desc-pvs_mask.nii.gz",
    ]
    rows = json.loads((tmp_path / "out" / "pvs_burden.json").read_text())
    assert [(r["subject"], r["session"]) for r in rows] == [("sub-001", "ses-1"), ("sub-002", "ses-1")]


@pytest.mark.slow
def test_file_list_with_a_4d_image_and_volume_index(tmp_path, model_file):
    data, affine = synthetic_case(SHAPE)[0], ras_affine()
    single = write_nifti(tmp_path / "a" / "single.nii.gz", data, affine)
    volumes = np.stack([np.zeros(SHAPE), data, data[::-1]], axis=-1)
    series = write_nifti(tmp_path / "b" / "series_T2w.nii.gz", volumes, affine)
    files = f"['{single}','{series}']"
    proc = infer(
        "--input_files",
        files,
        "--volume_index",
        "1",
        "--output_dir",
        str(tmp_path / "out"),
        "--model_file",
        str(model_file),
    )
    assert proc.returncode == 0, output(proc)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == [
        "series_desc-pvs_mask.nii.gz",
        "single_desc-pvs_mask.nii.gz",
    ]
    mask_4d = nib.load(str(tmp_path / "out" / "series_desc-pvs_mask.nii.gz"))
    assert mask_4d.shape == SHAPE and np.array_equal(mask_4d.affine, nib.load(str(series)).affine)
    assert np.array_equal(np.asarray(mask_4d.dataobj), load(tmp_path / "out" / "single_desc-pvs_mask.nii.gz"))


@pytest.mark.slow
def test_bad_inputs_are_all_named_before_any_inference(tmp_path, model_file):
    four_d = write_nifti(tmp_path / "series.nii.gz", np.zeros((*SHAPE, 3)), ras_affine())
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    nan = tmp_path / "nan.nii.gz"
    values = np.ones(SHAPE, dtype=np.float32)
    values[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(values, ras_affine()), str(nan))
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    truncated = write_nifti(tmp_path / "truncated.nii.gz", synthetic_case(SHAPE)[0])
    truncated.write_bytes(truncated.read_bytes()[:2000])
    files = "[" + ",".join(f"'{f}'" for f in (four_d, text, nan, broken, truncated)) + "]"
    proc = infer("--input_files", files, "--output_dir", str(tmp_path / "out"), "--model_file", str(model_file))
    assert proc.returncode != 0
    assert "5 of 5 input(s) cannot be segmented" in proc.stderr
    assert f"{four_d}: must be a 3D image, not 4D of shape (20, 24, 18, 3)" in proc.stderr
    assert "--volume_index N (0 <= N < 3)" in proc.stderr
    assert f"{text}: must be a NIfTI file (.nii or .nii.gz), not .txt" in proc.stderr
    assert f"{nan}: must hold finite intensities, not 1 NaN/Inf voxel(s)" in proc.stderr
    assert f"{broken}: cannot be read as NIfTI" in proc.stderr
    assert f"{truncated}: has a readable header but its voxel data cannot be read" in proc.stderr
    assert "Restored all variables" not in proc.stdout  # failed before the model was even loaded
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_existing_mask_is_never_overwritten_silently(tmp_path, model_file):
    image = write_nifti(tmp_path / "in" / "sub-001_T2w.nii.gz", synthetic_case(SHAPE)[0], ras_affine())
    existing = tmp_path / "out" / "sub-001_desc-pvs_mask.nii.gz"
    existing.parent.mkdir()
    existing.write_bytes(b"an earlier result")
    args = ["--input_files", f"['{image}']", "--output_dir", str(tmp_path / "out"), "--model_file", str(model_file)]
    refused = infer(*args)
    assert refused.returncode != 0
    assert f"already exist and would be overwritten: {existing}" in refused.stderr
    assert "--overwrite true to replace them" in refused.stderr and "--skip_existing true" in refused.stderr
    assert existing.read_bytes() == b"an earlier result"
    replaced = infer(*args, "--overwrite", "true")
    assert replaced.returncode == 0, output(replaced)
    assert nib.load(str(existing)).shape == SHAPE
    assert not list(existing.parent.glob(".*.tmp"))


@pytest.mark.slow
def test_threshold_stored_with_the_model_and_small_component_removal_reach_the_mask(tmp_path, model_file):
    model = tmp_path / "model" / "model.pt"
    model.parent.mkdir()
    model.write_bytes(model_file.read_bytes())
    (tmp_path / "model" / "model.json").write_text(json.dumps({"threshold": 0.3}))
    image = write_nifti(tmp_path / "in" / "case.nii.gz", synthetic_case(SHAPE)[0], ras_affine())
    out = tmp_path / "out"
    args = ["--input_files", f"['{image}']", "--output_dir", str(out), "--model_file", str(model)]
    args += ["--save_probabilities", "true"]
    stored = infer(*args)
    assert stored.returncode == 0, output(stored)
    assert "Probability threshold 0.3 (threshold auto: chosen on validation, stored in" in stored.stdout
    assert stored.stdout.count("Probability threshold") == 1  # said once, though the mask and sidecar both use it
    prob = load(out / "case_desc-pvs_probseg.nii.gz")
    low = load(out / "case_desc-pvs_mask.nii.gz")
    assert np.array_equal(low, prob >= 0.3)
    sidecar = out / "case_desc-pvs_mask.json"
    assert json.loads(sidecar.read_text())["Threshold"] == 0.3
    # another threshold and a minimum size: --skip_existing must segment the input again, not keep the 0.3 mask
    given = infer(*args, "--threshold", "0.5", "--min_pvs_voxels", "3", "--skip_existing", "true")
    assert given.returncode == 0, output(given)
    assert "differ from this run's; segmenting it again" in given.stdout
    high = load(out / "case_desc-pvs_mask.nii.gz")
    labels, _ = ndimage.label(prob >= 0.5, structure=ndimage.generate_binary_structure(3, 3))
    sizes = np.bincount(labels.ravel())
    assert (sizes[1:] < 3).any() and (sizes[1:] >= 3).any()  # the removal has something to remove, and to keep
    assert np.array_equal(high, np.isin(labels, np.flatnonzero(sizes >= 3)) & (labels > 0))
    record = json.loads(sidecar.read_text())
    assert record["Threshold"] == 0.5 and record["Settings"]["min_pvs_voxels"] == 3
    burden = record["PVSBurden"]  # the kept components, counted inside the brain and apart outside it
    assert burden["pvs_count"] > 0 and int((sizes[1:] >= 3).sum()) <= burden["pvs_count"] + burden["outside_roi_count"]
    assert burden["pvs_volume_mm3"] + burden["outside_roi_volume_mm3"] == pytest.approx(
        high.sum() * float(np.prod(np.diag(ras_affine())[:3])), abs=0.1
    )


@pytest.mark.slow
def test_missing_model_file_fails_first_with_the_fix(tmp_path):
    image = write_nifti(tmp_path / "in" / "case.nii.gz", synthetic_case(SHAPE)[0], ras_affine())
    absent = tmp_path / "models" / "model.pt"
    proc = infer("--input_files", f"['{image}']", "--output_dir", str(tmp_path / "out"), "--model_file", str(absent))
    assert proc.returncode != 0
    assert f"model file {absent} does not exist: run training first" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_folder_listing_names_outputs_and_refuses_two_inputs_with_one_name(tmp_path):
    write_nifti(tmp_path / "in" / "sub-07_T2w.nii.gz", np.ones(SHAPE))
    write_nifti(tmp_path / "in" / "case.nii", np.ones(SHAPE))
    items = inference_datalist(tmp_path / "in", tmp_path / "out")
    assert [(Path(i["image"]).name, i["case"], Path(i["mask"]).name, Path(i["probseg"]).name) for i in items] == [
        ("case.nii", "case", "case_desc-pvs_mask.nii.gz", "case_desc-pvs_probseg.nii.gz"),
        ("sub-07_T2w.nii.gz", "sub-07", "sub-07_desc-pvs_mask.nii.gz", "sub-07_desc-pvs_probseg.nii.gz"),
    ]
    write_nifti(tmp_path / "in" / "case.nii.gz", np.ones(SHAPE))
    with pytest.raises(ValueError, match="must have different names"):
        inference_datalist(tmp_path / "in", tmp_path / "out")


def test_missing_or_empty_input_dir_says_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"input_dir {tmp_path / 'absent'} does not exist"):
        list_inputs(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"holds no image: looked for T2w images sub-\*"):
        list_inputs(tmp_path)
    with pytest.raises(FileNotFoundError, match="input_files must exist"):
        list_inputs(tmp_path, [str(tmp_path / "nope.nii.gz")])


def test_volume_index_applies_to_4d_images_only(tmp_path):
    three_d = write_nifti(tmp_path / "a.nii.gz", np.ones(SHAPE))
    single_volume = write_nifti(tmp_path / "b.nii.gz", np.ones((*SHAPE, 1)))
    four_d = write_nifti(tmp_path / "c.nii.gz", np.ones((*SHAPE, 2)))
    assert (
        check_image(three_d, 5) is None and check_image(single_volume) is None and check_image(single_volume, 3) is None
    )
    assert check_image(four_d, 1) is None
    assert "volume_index must be below the number of volumes 2" in check_image(four_d, 2)


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("null", None), (2, 2), ("3", 3)])
def test_volume_index_as_the_command_line_gives_it(value, expected):
    assert as_volume_index(value) == expected


@pytest.mark.parametrize("value", [-1, "one", 1.5, True])
def test_bad_volume_index_is_refused(value):
    with pytest.raises(ValueError, match="volume_index must be a non-negative int or null"):
        as_volume_index(value)


def test_volume_selection_follows_ensure_channel_first():
    intensity = {"mode": "percentile", "lower": 0.5, "upper": 99.5}
    assert not any(isinstance(t, SelectVolumed) for t in preprocessing([0.8] * 3, intensity, keys=["image"]))
    selected = preprocessing([0.8] * 3, intensity, keys=["image"], volume_index="1")
    assert isinstance(selected[1], EnsureChannelFirstd)
    assert isinstance(selected[2], SelectVolumed) and selected[2].index == 1
    item = selected[2]({"image": torch.arange(3.0)[:, None, None, None].expand(3, 2, 3, 4)})
    assert item["image"].shape == (1, 2, 3, 4) and float(item["image"].max()) == 1.0


def test_pvs_burden_of_a_known_mask():
    mask = np.zeros((6, 7, 8), dtype=np.uint8)
    mask[0:2, 0:2, 0:2] = 1  # 8 voxels
    mask[4, 4, 4] = mask[5, 5, 5] = 1  # corner neighbours: one PVS with 26-connectivity
    brain = np.ones_like(mask)
    brain[:, :, 7] = 0
    burden = pvs_burden(mask, brain, voxel_mm3=0.5)
    assert burden == {
        "pvs_count": 2,
        "pvs_volume_mm3": 5.0,
        "largest_pvs_mm3": 4.0,
        "brain_volume_mm3": 6 * 7 * 7 * 0.5,
        "pvs_volume_fraction": 5.0 / (6 * 7 * 7 * 0.5),
    }
    assert math.isnan(pvs_burden(mask, np.zeros_like(mask), 0.5)["pvs_volume_fraction"])
    assert pvs_burden(np.zeros_like(mask), brain, 0.5)["largest_pvs_mm3"] == 0.0


def test_voxel_volume_from_a_permuted_anisotropic_affine():
    _, affine = permuted_copy(np.zeros(SHAPE), ras_affine())
    assert math.isclose(voxel_volume_mm3(affine), float(np.prod(SPACING)))
    with pytest.raises(ValueError, match="positive finite volume"):
        voxel_volume_mm3(np.zeros((4, 4)))
