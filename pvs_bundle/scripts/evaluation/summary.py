"""The summary of an evaluation over its cases, and everything an evaluation writes.

:func:`summarize` gives the mean, standard deviation, median and counts of every per-case metric
(:mod:`scripts.evaluation.case_metrics`), ignoring NaN; :func:`write_results` writes the per-case tables, the summary
with the cohort agreement of counts and volumes (:mod:`scripts.agreement`) and the detection pooled by PVS size
(:mod:`scripts.evaluation.stratified`), and the agreement figure (:mod:`scripts.reports.agreement_plot`). Tables,
rounding and the NaN rule are those of :mod:`scripts.tables`.

A case whose reference holds no PVS scores Dice 1.0 when nothing is predicted and 0.0 when a single speck is
(:mod:`scripts.evaluation.metrics`), so each such case moves a mean over n cases by up to 1/n, and its 0-against-0
count widens the range a count ICC is judged against. :func:`by_reference` therefore also summarises the cases with
reference PVS on their own (``with_pvs``) and says what was predicted in the others (``pvs_free``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scripts.agreement import cohort_agreement
from scripts.evaluation.stratified import pooled_by_size
from scripts.reports.agreement_plot import save_agreement_figure
from scripts.tables import (
    RATIO_DECIMALS,
    SUBJECT_KEY,
    VOLUME_DECIMALS,
    decimals_for,
    metric_names,
    rounded,
    write_case_table,
    write_json,
)

SUMMARY_STATS: tuple[str, ...] = ("mean", "std", "median", "n", "n_nan")
RESULT_FILES: tuple[str, ...] = ("per_case_csv", "per_case_json", "summary", "agreement_figure")


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation, median and counts of every numeric metric over cases, ignoring NaN.

    The standard deviation is the population one (``ddof=0``). ``n`` counts the cases with a value and
    ``n_nan`` those without (e.g. ``hd95_mm`` when exactly one mask is empty); a metric that is NaN in every
    case gets NaN statistics.

    Args:
        rows: one dict per case, as built from :func:`case_metrics` plus a subject id.

    Returns:
        A dict metric name -> {"mean", "std", "median", "n", "n_nan"}.

    Raises:
        ValueError: if ``rows`` is empty or the rows do not all hold the same metrics.
    """
    summary: dict[str, dict[str, float]] = {}
    for name in metric_names(rows):
        values = np.array([float(row[name]) for row in rows], dtype=np.float64)
        valid = values[~np.isnan(values)]
        stats = (float(valid.mean()), float(valid.std()), float(np.median(valid))) if valid.size else (math.nan,) * 3
        summary[name] = {
            "mean": stats[0],
            "std": stats[1],
            "median": stats[2],
            "n": int(valid.size),
            "n_nan": int(values.size - valid.size),
        }
    return summary


def by_reference(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The cases with reference PVS summarised on their own, and what was predicted in the cases without.

    A case has PVS when its reference volume (``ref_volume_mm3``) is above zero.

    Args:
        rows: one dict per case, a ``subject`` id and every metric of :data:`CASE_METRICS`.

    Returns:
        ``{"with_pvs": {"n_cases", "metrics", "agreement"}, "pvs_free": {"n_cases", "cases_with_prediction",
        "pred_count", "pred_volume_mm3"}}``: ``metrics`` as :func:`summarize` (empty when no case has PVS),
        ``agreement`` as :func:`scripts.agreement.cohort_agreement` over those cases; ``cases_with_prediction``
        names the PVS-free cases where something was predicted, ``pred_count`` and ``pred_volume_mm3`` sum it.

    Raises:
        ValueError: if a row lacks ``ref_volume_mm3``, ``pred_volume_mm3`` or ``pred_count``.
    """
    lacking = [i for i, row in enumerate(rows) if not {"ref_volume_mm3", "pred_volume_mm3", "pred_count"} <= set(row)]
    if lacking:
        raise ValueError(f"every row must have ref_volume_mm3, pred_volume_mm3 and pred_count, not rows {lacking}.")
    kept = [row for row in rows if float(row["ref_volume_mm3"]) > 0]
    free = [row for row in rows if float(row["ref_volume_mm3"]) <= 0]
    return {
        "with_pvs": {
            "n_cases": len(kept),
            "metrics": summarize(kept) if kept else {},
            "agreement": cohort_agreement(kept),
        },
        "pvs_free": {
            "n_cases": len(free),
            "cases_with_prediction": [row.get(SUBJECT_KEY) for row in free if float(row["pred_volume_mm3"]) > 0],
            "pred_count": int(sum(int(row["pred_count"]) for row in free)),
            "pred_volume_mm3": float(sum(float(row["pred_volume_mm3"]) for row in free)),
        },
    }


def rounded_summary(summary: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Round every statistic of a :func:`summarize` result like its metric (``n`` and ``n_nan`` stay integers)."""
    return {
        name: {stat: rounded(value, decimals_for(name)) for stat, value in stats.items()}
        for name, stats in summary.items()
    }


def rounded_agreement(agreement: dict[str, Any]) -> dict[str, Any]:
    """Round a :func:`scripts.agreement.cohort_agreement` result: differences in the quantity's unit."""
    result: dict[str, Any] = {}
    for quantity, stats in agreement.items():
        if not isinstance(stats, dict):
            result[quantity] = stats
            continue
        in_unit = ("mean_diff", "sd_diff", "loa_lower", "loa_upper")
        result[quantity] = {
            stat: rounded(value, decimals_for(quantity) if stat in in_unit else RATIO_DECIMALS)
            for stat, value in stats.items()
        }
    return result


def write_summary(
    summary: dict[str, dict[str, float]],
    path: str | os.PathLike[str],
    extra: dict[str, Any] | None = None,
    agreement: dict[str, Any] | None = None,
    by_size: dict[str, Any] | None = None,
    by_region: dict[str, Any] | None = None,
    by_ref: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Write a metric summary as JSON: what was run, the statistics, the agreement and the breakdowns.

    Its keys, in order: those of ``extra``, ``metrics``, ``agreement``, ``with_pvs``, ``pvs_free``, ``by_size``,
    ``by_region`` (each optional one only when given).

    Statistics are rounded like their metric (:func:`rounded_summary`, :func:`rounded_agreement`).

    Args:
        summary: the output of :func:`summarize`.
        path: destination JSON file.
        extra: run information to record first (method, thresholds, number of cases...).
        agreement: the cohort agreement of :func:`scripts.agreement.cohort_agreement`, if any.
        by_size: detection pooled by PVS size (:func:`scripts.evaluation.stratified.pooled_by_size`), if any.
        by_region: scores by brain region (:func:`scripts.evaluation.regional.summarize_by_region`), if any.
        by_ref: the cases with and without reference PVS (:func:`by_reference`), if any.

    Raises:
        ValueError: if ``extra`` has one of the summary's own keys.
    """
    extra = dict(extra or {})
    own = {"metrics", "agreement", "with_pvs", "pvs_free", "by_size", "by_region"}
    if own & set(extra):
        raise ValueError(f"extra must not have a key among {sorted(own)}, not keys {list(extra)}.")
    payload = {**extra, "metrics": rounded_summary(summary)}
    if agreement is not None:
        payload["agreement"] = rounded_agreement(agreement)
    if by_ref is not None:
        kept, free = by_ref["with_pvs"], by_ref["pvs_free"]
        payload["with_pvs"] = {
            "n_cases": kept["n_cases"],
            "metrics": rounded_summary(kept["metrics"]),
            "agreement": rounded_agreement(kept["agreement"]),
        }
        payload["pvs_free"] = {**free, "pred_volume_mm3": rounded(free["pred_volume_mm3"], VOLUME_DECIMALS)}
    if by_size is not None:
        payload["by_size"] = {
            name: {key: rounded(value, RATIO_DECIMALS) for key, value in stats.items()}
            if isinstance(stats, dict)
            else stats
            for name, stats in by_size.items()
        }
    if by_region is not None:
        payload["by_region"] = {
            name: {key: rounded(value, RATIO_DECIMALS) for key, value in stats.items()}
            for name, stats in by_region.items()
        }
    write_json(path, payload)


def write_results(
    rows: Sequence[dict[str, Any]],
    output_dir: str | os.PathLike[str],
    files: Mapping[str, str],
    extra: dict[str, Any] | None = None,
    dpi: int = 300,
    title: str = "",
    by_region: dict[str, Any] | None = None,
    by_ref: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, float]]:
    """Write everything an evaluation produces: per-case tables, summary with cohort agreement, agreement figure.

    Args:
        rows: one dict per case, a ``subject`` id and every metric of :data:`CASE_METRICS`.
        output_dir: folder of the files.
        files: file names under the keys ``per_case_csv``, ``per_case_json``, ``summary`` and ``agreement_figure``.
        extra: run information written first in the summary.
        dpi: resolution of the agreement figure.
        title: title of the agreement figure (what was evaluated).
        by_region: scores by brain region, written in the summary (None: none).
        by_ref: the cases with and without reference PVS (:func:`by_reference`), when the caller has it already;
            None: computed here.

    Returns:
        The (unrounded) summary of :func:`summarize`.

    Raises:
        ValueError: if ``rows`` is empty or inconsistent, or ``files`` lacks a name.
    """
    missing = [key for key in RESULT_FILES if key not in files]
    if missing:
        raise ValueError(f"files must name {RESULT_FILES}, not {dict(files)} (lacks {missing}).")
    output = Path(output_dir)
    write_case_table(rows, output / files["per_case_csv"], output / files["per_case_json"])
    summary, by_size = summarize(rows), pooled_by_size(rows)
    write_summary(
        summary,
        output / files["summary"],
        extra=extra,
        agreement=cohort_agreement(rows),
        by_size=by_size,
        by_region=by_region,
        by_ref=by_ref if by_ref is not None else by_reference(rows),
    )
    save_agreement_figure(rows, output / files["agreement_figure"], dpi=dpi, title=title, by_size=by_size)
    return summary
