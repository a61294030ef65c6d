"""Agreement of predicted and reference PVS burden across a cohort: ICC, concordance, correlation, Bland–Altman.

For one quantity (PVS count, or PVS volume in mm³) measured on n cases by the method (x) and the reference (y):

- ``icc_a1``: ICC(A,1) of McGraw & Wong (1996) — two-way model, absolute agreement, single measures (Shrout &
  Fleiss's ICC(2,1)): ``(MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n)`` with k = 2 raters, from the
  two-way ANOVA of the n x 2 table (MSR: between cases, MSC: between raters, MSE: residual).
- ``ccc``: Lin's (1989) concordance correlation coefficient ``2 s_xy / (s_x² + s_y² + (mean_x - mean_y)²)``
  with moments over n (not n - 1), as Lin defines it.
- ``pearson_r``, ``spearman_r``: correlation coefficients (scipy.stats).
- ``mean_diff``: mean of x - y (method minus reference, the bias); ``sd_diff``: its standard deviation with
  n - 1; ``loa_lower``, ``loa_upper``: the 95 % limits of agreement ``mean_diff ± 1.96 sd_diff`` (Bland & Altman
  1986).

Every statistic is NaN when undefined: all of them with fewer than :data:`MIN_CASES` cases (then ``note`` says
so), a correlation when one side is constant, an ICC or CCC when every value is equal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

MIN_CASES = 3
LOA_Z = 1.96
ICC_FORM = "ICC(A,1): two-way model, absolute agreement, single measures (McGraw & Wong 1996; Shrout & Fleiss ICC(2,1))"
AGREEMENT_STATS: tuple[str, ...] = (
    "n",
    "icc_a1",
    "ccc",
    "pearson_r",
    "spearman_r",
    "mean_diff",
    "sd_diff",
    "loa_lower",
    "loa_upper",
)
# quantity name -> (predicted column, reference column) of the per-case table
COHORT_QUANTITIES: dict[str, tuple[str, str]] = {
    "count": ("pred_count", "ref_count"),
    "volume_mm3": ("pred_volume_mm3", "ref_volume_mm3"),
}


def icc_a1(x: np.ndarray, y: np.ndarray) -> float:
    """ICC(A,1) of two raters (McGraw & Wong): two-way, absolute agreement, single measures.

    Args:
        x: the method's values, one per case.
        y: the reference values, same length.

    Returns:
        The ICC, NaN when every value is equal.
    """
    table = np.column_stack([x, y]).astype(np.float64)
    n, k = table.shape
    grand = table.mean()
    ms_rows = k * np.sum((table.mean(axis=1) - grand) ** 2) / (n - 1)
    ms_columns = n * np.sum((table.mean(axis=0) - grand) ** 2) / (k - 1)
    ss_error = np.sum((table - grand) ** 2) - ms_rows * (n - 1) - ms_columns * (k - 1)
    ms_error = ss_error / ((n - 1) * (k - 1))
    denominator = ms_rows + (k - 1) * ms_error + k * (ms_columns - ms_error) / n
    return float((ms_rows - ms_error) / denominator) if denominator > 0 else math.nan


def concordance(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation coefficient, moments over n; NaN when every value is equal."""
    covariance = np.mean((x - x.mean()) * (y - y.mean()))
    denominator = x.var() + y.var() + (x.mean() - y.mean()) ** 2
    return float(2 * covariance / denominator) if denominator > 0 else math.nan


def agreement(pred: Sequence[float], ref: Sequence[float]) -> dict[str, Any]:
    """Every agreement statistic of :data:`AGREEMENT_STATS` between paired values (see the module docstring).

    Args:
        pred: the method's values, one per case.
        ref: the reference values of the same cases, in the same order.

    Returns:
        A dict statistic -> value (``n`` an int, the others floats, NaN where undefined), plus ``note`` (a string)
        when there are fewer than :data:`MIN_CASES` cases.

    Raises:
        ValueError: if the sequences differ in length or hold a non-finite value.
    """
    x, y = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(ref, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"pred and ref must hold one value per case each, not {x.size} and {y.size} values.")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"pred and ref must be finite numbers, not {x.tolist()} and {y.tolist()}.")
    result: dict[str, Any] = dict.fromkeys(AGREEMENT_STATS, math.nan)
    result["n"] = int(x.size)
    if x.size < MIN_CASES:
        result["note"] = f"agreement needs at least {MIN_CASES} cases, not {x.size}: every statistic is NaN."
        return result
    difference = x - y
    sd = float(difference.std(ddof=1))
    varying = np.ptp(x) > 0 and np.ptp(y) > 0
    result.update(
        icc_a1=icc_a1(x, y),
        ccc=concordance(x, y),
        pearson_r=float(stats.pearsonr(x, y).statistic) if varying else math.nan,
        spearman_r=float(stats.spearmanr(x, y).statistic) if varying else math.nan,
        mean_diff=float(difference.mean()),
        sd_diff=sd,
        loa_lower=float(difference.mean() - LOA_Z * sd),
        loa_upper=float(difference.mean() + LOA_Z * sd),
    )
    return result


def cohort_agreement(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Agreement of PVS count and PVS volume (mm³) between prediction and reference over the cases of a table.

    Args:
        rows: one dict per case with ``pred_count``, ``ref_count``, ``pred_volume_mm3`` and ``ref_volume_mm3``.

    Returns:
        ``{"icc_form": ..., "count": {...}, "volume_mm3": {...}}``, each quantity as :func:`agreement` returns it.

    Raises:
        ValueError: if a row lacks one of the columns.
    """
    result: dict[str, Any] = {"icc_form": ICC_FORM}
    for quantity, (pred_key, ref_key) in COHORT_QUANTITIES.items():
        missing = [i for i, row in enumerate(rows) if pred_key not in row or ref_key not in row]
        if missing:
            raise ValueError(f"every row must have {pred_key!r} and {ref_key!r}, not rows {missing}.")
        result[quantity] = agreement([row[pred_key] for row in rows], [row[ref_key] for row in rows])
    return result
