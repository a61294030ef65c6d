"""Inference with the measurement stage, run for real: census with regions, region table, report, overwrite guard."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from conftest import affine_for, make_bids_dataset, write_nifti
from inference_helpers import infer, output, save_tiny_model

SHAPE = (40, 48, 36)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Three subjects: sub-001's parcellation in its own grid, sub-002's in a 2 mm grid, none for sub-003."""
    root = tmp_path_factory.mktemp("measured")
    dataset = make_bids_dataset(root / "ds", subjects=("001", "002", "003"), shape=SHAPE)
    model = save_tiny_model(root / "model.pt", dataset / "sub-001" / "anat" / "sub-001_T2w.nii.gz")
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[2:-2, 2:-2, 2:-2] = 2
    labels[10:30, 12:36, 8:28] = 12
    seg_dir = root / "ds" / "derivatives" / "synthseg"
    write_nifti(seg_dir / "sub-001" / "anat" / "sub-001_desc-synthseg_dseg.nii.gz", labels)
    coarse = affine_for()
    coarse[:3, :3] *= 2
    write_nifti(seg_dir / "sub-002" / "anat" / "sub-002_dseg.nii.gz", labels[::2, ::2, ::2], coarse)
    args = ["--input_dir", str(dataset), "--output_dir", str(root / "out"), "--model_file", str(model)]
    proc = infer(*args, "--parcellation_dir", str(seg_dir))
    assert proc.returncode == 0, output(proc)
    return root, args, proc


def test_census_has_regions_where_a_parcellation_was_found(run):
    root, _, _ = run
    census = list(csv.DictReader((root / "out" / "pvs_census.csv").open()))
    regions = {case: {r["region"] for r in census if r["case"] == case} for case in ("sub-001", "sub-002", "sub-003")}
    assert regions["sub-003"] <= {"unknown", "outside"}  # no parcellation; "outside": parts outside the brain estimate
    assert regions["sub-001"] and "unknown" not in regions["sub-001"] | regions["sub-002"]
    assert all(0.5 <= float(r["prob_mean"]) <= float(r["prob_max"]) <= 1 for r in census)
    burden = {r["subject"]: r for r in json.loads((root / "out" / "pvs_burden.json").read_text())}
    assert [burden[c]["brain_from_parcellation"] for c in ("sub-001", "sub-002", "sub-003")] == [1, 1, 0]
    voxel = float(np.prod(np.diag(affine_for())[:3]))
    assert burden["sub-001"]["brain_volume_mm3"] == pytest.approx((36 * 44 * 32) * voxel, rel=1e-5)
    counts = [r for r in json.loads((root / "out" / "pvs_regions.json").read_text()) if r["case"] == "sub-001"]
    assert sum(r["pvs_count"] for r in counts if r["region"] != "outside") == burden["sub-001"]["pvs_count"]
    outside = next(r for r in counts if r["region"] == "outside")
    assert outside["pvs_count"] == burden["sub-001"]["outside_roi_count"]
    image = nib.load(str(root / "ds" / "sub-001" / "anat" / "sub-001_T2w.nii.gz"))
    assert image.shape == SHAPE


def test_report_names_the_subject_without_parcellation(run):
    root, _, _ = run
    text = (root / "out" / "qc_report.html").read_text()
    assert "No parcellation for 1 case(s)" in text and "sub-003_T2w.nii.gz" in text
    assert text.count("data:image/png;base64,") == 4


def test_nothing_is_overwritten_without_overwrite(run):
    root, args, _ = run
    before = (root / "out" / "qc_report.html").read_bytes()
    proc = infer(*args)
    assert proc.returncode != 0 and "10 output file(s) already exist" in output(proc) and "--overwrite" in output(proc)
    assert (root / "out" / "qc_report.html").read_bytes() == before
