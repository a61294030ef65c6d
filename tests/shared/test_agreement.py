"""Cohort agreement statistics against values worked out by hand."""

import math

import pytest
from PIL import Image

from scripts.agreement import AGREEMENT_STATS, ICC_FORM, agreement, cohort_agreement
from scripts.reports.agreement_plot import save_agreement_figure

# 4 cases: predicted x = [2, 4, 6, 8], reference y = [1, 3, 7, 5].
PRED, REF = [2, 4, 6, 8], [1, 3, 7, 5]
# d = x - y = [1, 1, -1, 3]: mean 1; deviations [0, 0, -2, 2], sum of squares 8, SD (n - 1) = sqrt(8/3) = 1.632993;
# limits of agreement 1 -/+ 1.96 * 1.632993 = [-2.200667, 4.200667].
# Means 5 and 4; centred x [-3, -1, 1, 3], centred y [-3, -1, 3, 1]: Sxy = 9 + 1 + 3 + 3 = 16, Sxx = Syy = 20.
# Pearson r = 16 / 20 = 0.8.
# Ranks x [1, 2, 3, 4], ranks y [1, 2, 4, 3]: sum d² = 2, Spearman = 1 - 6 * 2 / (4 * 15) = 0.8.
# Lin's CCC (moments over n): 2 * (16/4) / (20/4 + 20/4 + (5 - 4)²) = 8 / 11.
# ICC(A,1), n = 4, k = 2: rows (2,1) (4,3) (6,7) (8,5), row means 1.5 3.5 6.5 6.5, grand mean 4.5, column means 5, 4.
# SSR = 2 * (9 + 1 + 4 + 4) = 36, MSR = 12; SSC = 4 * (0.25 + 0.25) = 2, MSC = 2;
# SST = 6.25 + 12.25 + 0.25 + 2.25 + 2.25 + 6.25 + 12.25 + 0.25 = 42, SSE = 42 - 36 - 2 = 4, MSE = 4 / 3.
# ICC = (12 - 4/3) / (12 + 4/3 + 2 * (2 - 4/3) / 4) = (32/3) / (41/3) = 32/41.
EXPECTED = {
    "n": 4,
    "icc_a1": 32 / 41,
    "ccc": 8 / 11,
    "pearson_r": 0.8,
    "spearman_r": 0.8,
    "mean_diff": 1.0,
    "sd_diff": math.sqrt(8 / 3),
    "loa_lower": 1 - 1.96 * math.sqrt(8 / 3),
    "loa_upper": 1 + 1.96 * math.sqrt(8 / 3),
}


def test_four_case_example_matches_the_hand_computation():
    result = agreement(PRED, REF)
    assert tuple(result) == AGREEMENT_STATS
    for name, value in EXPECTED.items():
        assert result[name] == pytest.approx(value, rel=1e-12), name


def test_perfect_agreement_is_one_with_zero_bias():
    result = agreement([1, 5, 2, 9], [1, 5, 2, 9])
    assert result["icc_a1"] == result["ccc"] == pytest.approx(1.0)
    assert result["mean_diff"] == result["loa_lower"] == result["loa_upper"] == 0.0


def test_a_constant_bias_lowers_icc_and_ccc_but_not_the_correlations():
    # y + 10 on y = [1, 2, 3, 4]: r = rho = 1; bias 10 with SD 0; CCC = 2 * 1.25 / (1.25 + 1.25 + 100) < 0.03.
    result = agreement([11, 12, 13, 14], [1, 2, 3, 4])
    assert result["pearson_r"] == pytest.approx(1.0) and result["spearman_r"] == pytest.approx(1.0)
    assert result["ccc"] == pytest.approx(2.5 / 102.5)
    assert result["icc_a1"] < 0.1 and result["mean_diff"] == 10.0 and result["sd_diff"] == 0.0


def test_constant_values_give_nan_correlations():
    result = agreement([3, 3, 3], [1, 2, 4])
    assert math.isnan(result["pearson_r"]) and math.isnan(result["spearman_r"])
    assert math.isnan(agreement([2, 2, 2], [2, 2, 2])["icc_a1"])


@pytest.mark.parametrize("n_cases", [0, 1, 2])
def test_fewer_than_three_cases_give_nan_and_a_note(n_cases):
    result = agreement(PRED[:n_cases], REF[:n_cases])
    assert result["n"] == n_cases
    assert all(math.isnan(result[name]) for name in AGREEMENT_STATS if name != "n")
    assert result["note"] == f"agreement needs at least 3 cases, not {n_cases}: every statistic is NaN."


def test_bad_input_raises():
    with pytest.raises(ValueError, match="one value per case"):
        agreement([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        agreement([1, 2, math.nan], [1, 2, 3])
    with pytest.raises(ValueError, match="pred_volume_mm3"):
        cohort_agreement([{"pred_count": 1, "ref_count": 1}])


def rows(pred: list, ref: list) -> list[dict]:
    return [
        {"subject": f"sub-{i}", "pred_count": p, "ref_count": r, "pred_volume_mm3": 2.5 * p, "ref_volume_mm3": 2.5 * r}
        for i, (p, r) in enumerate(zip(pred, ref, strict=True))
    ]


def test_cohort_agreement_of_counts_and_volumes():
    # volumes are 2.5 x the counts: same correlations, ICC and CCC; differences 2.5 x larger.
    result = cohort_agreement(rows(PRED, REF))
    assert result["icc_form"] == ICC_FORM and "absolute agreement" in ICC_FORM
    assert result["count"]["icc_a1"] == pytest.approx(32 / 41)
    assert result["volume_mm3"]["icc_a1"] == pytest.approx(32 / 41)
    assert result["volume_mm3"]["mean_diff"] == pytest.approx(2.5)


@pytest.mark.parametrize("n_cases", [4, 2])
def test_agreement_figure_is_a_300_dpi_png(tmp_path, n_cases):
    path = tmp_path / "figs" / "agreement.png"
    save_agreement_figure(rows(PRED[:n_cases], REF[:n_cases]), path, dpi=300, title="test")
    with Image.open(path) as figure:
        assert figure.format == "PNG"
        assert tuple(round(d) for d in figure.info["dpi"]) == (300, 300)
        assert figure.width > 2000 and figure.height > 2000  # 9 x 8.5 inches at 300 dpi
