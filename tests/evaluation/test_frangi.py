import csv
import json

import nibabel as nib
import numpy as np
import pytest

from scripts.evaluation.case_metrics import CASE_METRICS
from scripts.evaluation.frangi import (
    AGREEMENT_FIGURE_FILE,
    PER_CASE_CSV,
    PER_CASE_JSON,
    SUMMARY_FILE,
    choose_threshold,
    default_candidates,
    dice_per_threshold,
    frangi_vesselness,
    run_frangi_baseline,
    sigmas_in_voxels,
)

SHAPE = (20, 24, 32)
SPACING = (1.0, 1.0, 1.0)


def tube_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy 'head' block with a bright tube of radius 1.5 voxels along axis 2, and the tube as label."""
    rng = np.random.default_rng(seed)
    image = np.zeros(SHAPE, dtype=np.float32)
    image[2:-2, 2:-2, 2:-2] = 0.3
    rows, columns = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    disc = (rows - 10) ** 2 + (columns - 12) ** 2 <= 1.5**2
    label = np.zeros(SHAPE, dtype=bool)
    label[..., 4:-4] = disc[..., None]
    image[label] = 1.0
    image += rng.normal(0.0, 0.05, SHAPE).astype(np.float32)
    return image, label


def write_case(directory, subject: str, seed: int) -> dict[str, str]:
    image, label = tube_case(seed)
    affine = np.diag([*SPACING, 1.0])
    paths = {"image": str(directory / f"{subject}_T2w.nii.gz"), "label": str(directory / f"{subject}_PVS.nii.gz")}
    nib.save(nib.Nifti1Image(image, affine), paths["image"])
    nib.save(nib.Nifti1Image(label.astype(np.int16), affine), paths["label"])
    return {"subject": subject, **paths}


def test_tube_is_brighter_in_vesselness_than_background():
    image, label = tube_case(0)
    vesselness = frangi_vesselness(image, SPACING)
    head = image > 0.15
    assert vesselness.dtype == np.float32 and vesselness.shape == SHAPE
    assert vesselness[label].mean() > 5 * vesselness[head & ~label].mean()


def test_vesselness_is_zero_outside_the_mask():
    image, _ = tube_case(0)
    mask = np.zeros(SHAPE, dtype=bool)
    mask[5:15, 5:20, 5:25] = True
    assert not frangi_vesselness(image, SPACING, mask=mask)[~mask].any()


def test_mask_shape_mismatch_raises():
    image, _ = tube_case(0)
    with pytest.raises(ValueError, match="mask must have"):
        frangi_vesselness(image, SPACING, mask=np.ones((20, 24, 31), dtype=bool))


def test_sigmas_in_voxels_floor_and_deduplicate():
    assert sigmas_in_voxels((0.8, 0.8, 0.8)) == [0.625, 1.25, 1.875]
    assert sigmas_in_voxels((2.0, 2.0, 2.0), (0.25, 0.5, 1.5)) == [0.5, 0.75]


def test_choose_threshold_reaches_good_dice_on_a_tube():
    image, label = tube_case(0)
    vesselness = frangi_vesselness(image, SPACING)
    threshold, dice = choose_threshold([vesselness], [label])
    candidates = default_candidates([vesselness])
    per_threshold = dice_per_threshold(vesselness, label, candidates)
    assert threshold in candidates and dice == pytest.approx(per_threshold.max())  # the best candidate, not another
    assert dice > 0.5


def test_choose_threshold_among_given_candidates():
    vesselness = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    label = vesselness >= 5000
    assert choose_threshold([vesselness], [label], candidates=[6000.5, 2000.5, 4999.5]) == (4999.5, 1.0)


def test_choose_threshold_length_mismatch_raises():
    with pytest.raises(ValueError, match="equal length"):
        choose_threshold([np.zeros(SHAPE)], [])


def test_baseline_end_to_end_writes_its_files(tmp_path):
    train = [write_case(tmp_path, "sub-001", 1), write_case(tmp_path, "sub-002", 2)]
    test = [write_case(tmp_path, "sub-003", 3)]
    summary = run_frangi_baseline(train, test, tmp_path / "eval", max_train_cases=1)
    written = json.loads((tmp_path / "eval" / SUMMARY_FILE).read_text())
    assert written["n_train_cases"] == 1 and written["threshold"] > 0 and written["training_dice"] > 0.5
    assert list(written["metrics"]) == list(summary) == list(CASE_METRICS)
    with open(tmp_path / "eval" / PER_CASE_CSV, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["subject"] for row in table] == ["sub-003"]
    assert list(table[0]) == ["subject", *CASE_METRICS]
    assert json.loads((tmp_path / "eval" / PER_CASE_JSON).read_text())[0]["subject"] == "sub-003"
    # one test case: agreement statistics are NaN (null) with a note, and the figure is still drawn
    assert written["agreement"]["count"]["n"] == 1 and written["agreement"]["count"]["icc_a1"] is None
    assert "at least 3 cases" in written["agreement"]["volume_mm3"]["note"]
    assert (tmp_path / "eval" / AGREEMENT_FIGURE_FILE).is_file()
