"""Detection by PVS size, fragments against specks, and fragmentation, on hand-built cases."""

import json
import math

import numpy as np
import pytest

from scripts.evaluation.case_metrics import CASE_METRICS, case_metrics
from scripts.evaluation.stratified import pooled_by_size, size_bins, stratified_detection
from scripts.evaluation.summary import write_results

SPACING = (1.0, 1.0, 1.0)  # 1 mm³ voxels: sizes in voxels are sizes in mm³


def bar(mask: np.ndarray, x: int, y: int, z0: int, z1: int) -> None:
    mask[x, y, z0:z1] = True


def hand_built() -> tuple[np.ndarray, np.ndarray]:
    """Reference: a 1-voxel PVS, a 3-voxel one, a 20-voxel one (broken in two by the prediction) and a 60-voxel one
    (missed). Prediction: the 1-voxel PVS, a speck far from everything, the 20-voxel one in pieces of 12 and 7."""
    ref, pred = np.zeros((40, 40, 80), bool), np.zeros((40, 40, 80), bool)
    bar(ref, 2, 2, 2, 3)  # 1 mm³
    bar(ref, 10, 10, 2, 5)  # 3 mm³, missed
    bar(ref, 20, 20, 2, 22)  # 20 mm³
    ref[30:33, 30:33, 2:9] = True  # 63 mm³, missed
    bar(pred, 2, 2, 2, 3)
    bar(pred, 20, 20, 2, 14)  # 12 voxels: the true positive (IoU 0.6)
    bar(pred, 20, 20, 15, 22)  # 7 voxels: a fragment
    bar(pred, 35, 5, 60, 62)  # 2 voxels overlapping nothing: a speck
    return pred, ref


def test_bins_are_named_by_their_edges():
    assert size_bins() == ["lt2mm3", "2to5mm3", "5to10mm3", "10to50mm3", "ge50mm3"]
    assert size_bins((0.5, 4)) == ["lt0p5mm3", "0p5to4mm3", "ge4mm3"]
    with pytest.raises(ValueError, match="increasing"):
        size_bins((5, 2))


def test_hand_built_case():
    pred, ref = hand_built()
    row = stratified_detection(pred, ref, SPACING)
    assert row["det_fragments"] == 1 and row["det_specks"] == 1
    # overlapped references: the 1-voxel PVS (one prediction) and the 20-voxel one (two pieces)
    assert row["det_fragmentation"] == pytest.approx(1.5)
    assert (row["ref_n_lt2mm3"], row["ref_found_lt2mm3"]) == (1, 1)
    assert (row["ref_n_2to5mm3"], row["ref_found_2to5mm3"]) == (1, 0)
    assert (row["ref_n_10to50mm3"], row["ref_found_10to50mm3"]) == (1, 1)
    assert (row["ref_n_ge50mm3"], row["ref_found_ge50mm3"]) == (1, 0)
    # predictions by their own size: 1 (TP) and 2 (speck) voxels; 7 (fragment); 12 (TP)
    assert (row["pred_n_lt2mm3"], row["pred_tp_lt2mm3"]) == (1, 1)
    assert (row["pred_n_2to5mm3"], row["pred_tp_2to5mm3"]) == (1, 0)
    assert (row["pred_n_5to10mm3"], row["pred_tp_5to10mm3"]) == (1, 0)
    assert (row["pred_n_10to50mm3"], row["pred_tp_10to50mm3"]) == (1, 1)
    full = case_metrics(pred, ref, SPACING)
    assert full["det_fp"] == row["det_fragments"] + row["det_specks"]
    assert tuple(full) == CASE_METRICS


def test_sizes_follow_the_voxel_volume():
    pred, ref = hand_built()
    # 0.5 mm voxels (0.125 mm³): the 20-voxel PVS is 2.5 mm³, the 63-voxel one 7.9 mm³
    row = stratified_detection(pred, ref, (0.5, 0.5, 0.5))
    assert row["ref_n_lt2mm3"] == 2 and row["ref_n_2to5mm3"] == 1 and row["ref_n_5to10mm3"] == 1


def test_pooled_rates_and_empty_bins():
    pred, ref = hand_built()
    rows = [stratified_detection(pred, ref, SPACING), stratified_detection(ref, ref, SPACING)]
    pooled = pooled_by_size(rows)
    small = pooled["lt2mm3"]
    assert (small["reference_pvs"], small["found"], small["predicted_pvs"], small["true_positives"]) == (2, 2, 2, 2)
    assert pooled["2to5mm3"]["recall"] == pytest.approx(0.5)  # found in the perfect case only
    assert pooled["2to5mm3"]["precision"] == pytest.approx(0.5)  # the speck, and the perfect case's 3-voxel PVS
    assert pooled["5to10mm3"]["recall"] != pooled["5to10mm3"]["recall"]  # NaN: no reference PVS of that size
    assert pooled["5to10mm3"]["precision"] == 0.0 and math.isnan(pooled["5to10mm3"]["f1"])
    assert pooled["ge50mm3"]["recall"] == pytest.approx(0.5) and pooled["ge50mm3"]["f1"] == pytest.approx(2 / 3)


def test_no_overlap_means_no_fragmentation():
    ref = np.zeros((10, 10, 10), bool)
    bar(ref, 2, 2, 2, 5)
    pred = np.zeros_like(ref)
    bar(pred, 7, 7, 2, 5)
    row = stratified_detection(pred, ref, SPACING)
    assert math.isnan(row["det_fragmentation"]) and row["det_specks"] == 1 and row["det_fragments"] == 0


def test_the_summary_holds_the_pooled_table(tmp_path):
    pred, ref = hand_built()
    rows = [{"subject": f"sub-{k}", **case_metrics(pred, ref, SPACING)} for k in range(3)]
    files = {
        "per_case_csv": "cases.csv",
        "per_case_json": "cases.json",
        "summary": "summary.json",
        "agreement_figure": "agreement.png",
    }
    write_results(rows, tmp_path, files)
    by_size = json.loads((tmp_path / "summary.json").read_text())["by_size"]
    assert by_size["edges_mm3"] == [2.0, 5.0, 10.0, 50.0]
    assert by_size["10to50mm3"]["reference_pvs"] == 3 and by_size["10to50mm3"]["recall"] == 1.0
    assert by_size["2to5mm3"]["found"] == 0


def test_the_agreement_figure_shows_detection_by_size_and_the_extra_components():
    from scripts.reports.agreement_plot import agreement_figure

    pred, ref = hand_built()
    rows = [case_metrics(pred, ref, SPACING) for _ in range(3)]
    by_size = pooled_by_size(rows)
    figure = agreement_figure(rows, "test", by_size)
    assert len(figure.axes) == 6 and len(agreement_figure(rows, "test").axes) == 4
    size_panel, extras_panel = figure.axes[4], figure.axes[5]
    bins = [name for name in by_size if name != "edges_mm3"]
    heights = [bar.get_height() for bar in size_panel.patches]
    expected_recall = [0.0 if math.isnan(by_size[b]["recall"]) else by_size[b]["recall"] for b in bins]
    assert heights[: len(bins)] == pytest.approx(expected_recall)  # recall bars first, then precision
    extras = [bar.get_height() for bar in extras_panel.patches]
    assert extras == [sum(r["det_fragments"] for r in rows), sum(r["det_specks"] for r in rows)]
