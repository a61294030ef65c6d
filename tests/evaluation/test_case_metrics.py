import csv
import json
import math

import numpy as np
import pytest

from scripts.evaluation.case_metrics import CASE_METRICS, case_metrics, hausdorff95_mm, volume_metrics
from scripts.evaluation.summary import by_reference, summarize, write_summary
from scripts.tables import write_case_table

SHAPE = (10, 20, 30)
SPACING = (0.5, 2.0, 3.0)


def voxels(*points: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    for point in points:
        mask[point] = 1
    return mask


def rows_with_hd(values: list[float]) -> list[dict]:
    return [{"subject": f"sub-{i:03d}", "dice": 0.5, "hd95_mm": v} for i, v in enumerate(values)]


def test_case_metrics_keys_in_documented_order():
    mask = voxels((1, 2, 3))
    assert tuple(case_metrics(mask, mask, SPACING)) == CASE_METRICS


def test_perfect_prediction():
    mask = voxels((1, 2, 3), (5, 10, 20))
    result = case_metrics(mask, mask, SPACING)
    assert result["dice"] == result["det_f1"] == 1.0
    assert result["hd95_mm"] == result["abs_volume_diff_mm3"] == result["volume_diff_mm3"] == 0.0


def test_volumes_use_the_anisotropic_voxel_volume_and_keep_the_sign():
    # pred 10 voxels, ref 4 voxels, 0.5 x 2 x 3 = 3 mm³ each: 30 and 12 mm³, difference +18, absolute 18.
    pred = np.zeros(SHAPE, dtype=bool)
    pred[0:2, 0:5, 0] = True
    ref = voxels((5, 5, 5), (5, 5, 6), (5, 5, 7), (5, 5, 8)).astype(bool)
    volumes = volume_metrics(pred, ref, SPACING)
    assert volumes == pytest.approx(
        {"pred_volume_mm3": 30.0, "ref_volume_mm3": 12.0, "volume_diff_mm3": 18.0, "abs_volume_diff_mm3": 18.0}
    )
    assert volume_metrics(ref, pred, SPACING)["volume_diff_mm3"] == pytest.approx(-18.0)


def test_case_metrics_binarise_prediction_at_0_5_inclusive():
    pred = np.zeros(SHAPE)
    pred[1, 2, 3], pred[5, 10, 20] = 0.5, 0.4999
    assert case_metrics(pred, voxels((1, 2, 3)), SPACING)["dice"] == 1.0


@pytest.mark.parametrize(("shifted", "expected_mm"), [((8, 5, 5), 3.0), ((2, 8, 5), 6.0), ((2, 5, 8), 9.0)])
def test_hd95_uses_per_axis_spacing(shifted, expected_mm):
    assert hausdorff95_mm(voxels(shifted), voxels((2, 5, 5)), SPACING) == pytest.approx(expected_mm)


def test_hd95_both_empty_is_zero():
    assert hausdorff95_mm(np.zeros(SHAPE), np.zeros(SHAPE), SPACING) == 0.0


def test_hd95_one_empty_is_nan():
    assert math.isnan(hausdorff95_mm(np.zeros(SHAPE), voxels((1, 1, 1)), SPACING))


def test_case_metrics_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        case_metrics(np.zeros(SHAPE), np.zeros((10, 20, 31)), SPACING)


def test_case_metrics_bad_spacing_raises():
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(np.zeros(SHAPE), np.zeros(SHAPE), (1.0, 0.0, 1.0))


def test_summarize_ignores_nan():
    summary = summarize(rows_with_hd([1.0, math.nan, 3.0]))
    assert summary["hd95_mm"] == {"mean": 2.0, "std": 1.0, "median": 2.0, "n": 2, "n_nan": 1}


def test_summarize_all_nan_metric():
    stats = summarize(rows_with_hd([math.nan, math.nan]))["hd95_mm"]
    assert math.isnan(stats["mean"]) and stats["n"] == 0 and stats["n_nan"] == 2


def test_summarize_skips_subject():
    assert list(summarize(rows_with_hd([1.0]))) == ["dice", "hd95_mm"]


def test_summarize_rows_with_different_metrics_raise():
    rows = rows_with_hd([1.0, 2.0])
    del rows[1]["dice"]
    with pytest.raises(ValueError, match="every row"):
        summarize(rows)


def test_summarize_empty_raises():
    with pytest.raises(ValueError, match="at least one case"):
        summarize([])


def test_write_case_table_rounds_and_keeps_counts_integer(tmp_path):
    rows = [{"subject": "sub-001", "pred_count": 82, "dice": 0.123456, "pred_volume_mm3": 12.3456, "hd95_mm": 1.23456}]
    write_case_table(rows, tmp_path / "cases.csv", tmp_path / "cases.json")
    assert (tmp_path / "cases.csv").read_text().splitlines()[1] == "sub-001,82,0.1235,12.3,1.23"
    written = json.loads((tmp_path / "cases.json").read_text())[0]
    assert written == {"subject": "sub-001", "pred_count": 82, "dice": 0.1235, "pred_volume_mm3": 12.3, "hd95_mm": 1.23}
    assert type(written["pred_count"]) is int


def test_write_case_table_columns_and_nan(tmp_path):
    rows = [{"dice": 0.5, "subject": "sub-001", "hd95_mm": math.nan}]
    write_case_table(rows, tmp_path / "cases.csv", tmp_path / "cases.json")
    with open(tmp_path / "cases.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["subject", "dice", "hd95_mm"]
    assert json.loads((tmp_path / "cases.json").read_text()) == [{"subject": "sub-001", "dice": 0.5, "hd95_mm": None}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.csv", "cases.json"]


def test_write_case_table_requires_subject(tmp_path):
    with pytest.raises(ValueError, match="subject"):
        write_case_table([{"dice": 0.5}], tmp_path / "cases.csv", tmp_path / "cases.json")


def test_write_summary_extra_first_indent_four(tmp_path):
    path = tmp_path / "out" / "summary.json"
    write_summary(summarize(rows_with_hd([1.0])), path, extra={"threshold": np.float32(0.25)})
    text = path.read_text()
    assert list(json.loads(text)) == ["threshold", "metrics"]
    assert '\n    "metrics": {\n        "dice": {' in text


def test_write_summary_rejects_metrics_in_extra(tmp_path):
    with pytest.raises(ValueError, match="metrics"):
        write_summary({}, tmp_path / "summary.json", extra={"metrics": 1})


def test_write_summary_puts_rounded_agreement_last(tmp_path):
    agreement = {"icc_form": "ICC(A,1)", "volume_mm3": {"n": 4, "icc_a1": 0.876543, "mean_diff": -12.345}}
    path = tmp_path / "summary.json"
    write_summary(summarize(rows_with_hd([1.0, 2.0])), path, extra={"method": "x"}, agreement=agreement)
    written = json.loads(path.read_text())
    assert list(written) == ["method", "metrics", "agreement"]
    assert written["agreement"]["volume_mm3"] == {"n": 4, "icc_a1": 0.8765, "mean_diff": -12.3}
    assert written["metrics"]["hd95_mm"] == {"mean": 1.5, "std": 0.5, "median": 1.5, "n": 2, "n_nan": 0}


def test_hd95_ignores_the_farthest_five_percent():
    ref = np.zeros(SHAPE)
    ref[2, 5, 0:20] = 1
    pred = ref.copy()
    pred[8, 5, 25] = 1
    assert hausdorff95_mm(pred, ref, SPACING) == 0.0


def test_cases_without_reference_pvs_are_summarised_apart(tmp_path):
    # two cases with PVS (Dice 1 and 2/3) and two without: one predicted empty (Dice 1), one with a 2-voxel speck
    # (Dice 0, 6 mm³ at 3 mm³ a voxel). Over all four the mean Dice is 2/3; over the two with PVS, 5/6.
    ref, half = voxels((1, 1, 1), (1, 1, 2)), voxels((1, 1, 1))
    empty, speck = np.zeros(SHAPE, np.uint8), voxels((5, 5, 5), (5, 5, 6))
    cases = [(ref, ref), (half, ref), (empty, empty), (speck, empty)]
    rows = [{"subject": f"sub-{i}", **case_metrics(p, r, SPACING)} for i, (p, r) in enumerate(cases)]
    assert [row["dice"] for row in rows] == pytest.approx([1.0, 2 / 3, 1.0, 0.0])
    split = by_reference(rows)
    assert split["with_pvs"]["n_cases"] == 2
    assert split["with_pvs"]["metrics"]["dice"]["mean"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert split["with_pvs"]["metrics"]["ref_count"]["mean"] == 1.0
    assert split["pvs_free"] == {
        "n_cases": 2,
        "cases_with_prediction": ["sub-3"],
        "pred_count": 1,
        "pred_volume_mm3": 6.0,
    }
    path = tmp_path / "summary.json"
    write_summary(summarize(rows), path, by_ref=split)
    written = json.loads(path.read_text())
    assert list(written) == ["metrics", "with_pvs", "pvs_free"]
    assert written["metrics"]["dice"]["mean"] == pytest.approx(0.6667, abs=1e-4)
    assert written["with_pvs"]["metrics"]["dice"]["mean"] == pytest.approx(0.8333, abs=1e-4)
    assert math.isnan(split["with_pvs"]["agreement"]["count"]["icc_a1"])  # fewer than 3 cases
    with pytest.raises(ValueError, match="ref_volume_mm3"):
        by_reference([{"subject": "sub-0", "dice": 1.0}])
