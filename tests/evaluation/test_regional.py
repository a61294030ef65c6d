"""Evaluation by brain region on a hand-built case: Dice, detection F1 and counts per region, NaN without a
parcellation, and the summary's by_region."""

import math

import nibabel as nib
import numpy as np
import pytest

from scripts.evaluation.regional import RegionalScores, summarize_by_region
from scripts.regions import DEFAULT_REGIONS

AFFINE = np.diag([0.8, 0.8, 0.8, 1.0])
SHAPE = (20, 20, 20)


@pytest.fixture()
def case(tmp_path):
    """White matter (label 2) in x < 10, putamen (12, basal ganglia) in x >= 10, background at the border.
    Reference: two tubes in white matter, one in the putamen. Prediction: both white-matter tubes, and a speck in
    the putamen away from its tube."""
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[1:10, 1:19, 1:19] = 2
    labels[10:19, 1:19, 1:19] = 12
    ref = np.zeros(SHAPE, dtype=bool)
    ref[3, 3, 4:12] = ref[6, 12, 4:12] = True
    ref[14, 5, 4:12] = True
    pred = ref.copy()
    pred[14, 5, 4:12] = False
    pred[16, 15, 15] = True
    folder = tmp_path / "seg" / "sub-001" / "anat"
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(labels, AFFINE), folder / "sub-001_desc-synthseg_dseg.nii.gz")
    label_file = tmp_path / "sub-001_desc-mask_PVS.nii.gz"
    nib.save(nib.Nifti1Image(ref.astype(np.uint8), AFFINE), label_file)
    image_file = tmp_path / "sub-001_T2w.nii.gz"
    return tmp_path / "seg", image_file, label_file, pred, ref


def test_scores_by_region_on_a_hand_built_case(case):
    seg_dir, image_file, label_file, pred, ref = case
    scores = RegionalScores(DEFAULT_REGIONS, parcellation_dir=seg_dir)
    row = scores.score("sub-001", image_file, label_file, pred, ref)
    assert list(row) == scores.columns() and "dice_outside" not in row
    wm, bg = "cerebral_white_matter", "basal_ganglia"
    assert (row[f"dice_{wm}"], row[f"det_f1_{wm}"], row[f"ref_count_{wm}"], row[f"pred_count_{wm}"]) == (1, 1, 2, 2)
    assert (row[f"dice_{bg}"], row[f"det_f1_{bg}"], row[f"ref_count_{bg}"], row[f"pred_count_{bg}"]) == (0, 0, 1, 1)
    assert row["dice_thalamus"] == 1.0 and math.isnan(row["det_f1_thalamus"]) and row["ref_count_thalamus"] == 0


def test_a_case_without_parcellation_is_nan_and_the_summary_leaves_it_out(case, tmp_path):
    seg_dir, image_file, label_file, pred, ref = case
    scores = RegionalScores(DEFAULT_REGIONS, parcellation_dir=seg_dir)
    rows = [scores.score("sub-001", image_file, label_file, pred, ref)]
    rows.append(scores.score("sub-002", tmp_path / "sub-002_T2w.nii.gz", label_file, pred, ref))
    assert all(math.isnan(v) for v in rows[1].values())
    summary = summarize_by_region(rows, scores.names)
    assert summary["basal_ganglia"]["n_cases"] == 1 and summary["basal_ganglia"]["dice_mean"] == 0.0
    assert summary["cerebral_white_matter"]["det_f1_mean"] == 1.0
    assert summary["cerebral_white_matter"]["ref_pvs"] == 2 and summary["basal_ganglia"]["pred_pvs"] == 1
    assert math.isnan(summary["basal_ganglia"]["count_icc_a1"])  # one case: no agreement statistic


def test_no_parcellation_source_means_no_regional_columns():
    assert not RegionalScores(DEFAULT_REGIONS).enabled
    with pytest.raises(ValueError, match="parcellation_files must exist"):
        RegionalScores(DEFAULT_REGIONS, parcellation_files={"sub-001": "/no/such/file.nii.gz"})
