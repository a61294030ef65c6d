"""Every per-case evaluation metric in one call, their summary over cases, and atomic table writers.

Per case (prediction >= 0.5, reference non-zero after rounding to one decimal, as :mod:`scripts.evaluation.masks`
states; scored in the label's own grid with its voxel spacing in mm):

- ``dice``, ``iou``, ``precision``, ``recall``: voxel overlap, from :mod:`scripts.evaluation.metrics` (empty-mask
  conventions documented there).
- ``pred_volume_mm3``, ``ref_volume_mm3``: foreground voxels x voxel volume; ``volume_diff_mm3`` = V_pred - V_ref
  (signed: positive when the prediction is larger) and ``abs_volume_diff_mm3`` = |V_pred - V_ref|.
- ``hd95_mm``: 95th-percentile symmetric Hausdorff distance in mm between the mask surfaces, as MONAI's
  ``compute_hausdorff_distance(..., percentile=95)`` defines it: the larger of the two directed 95th
  percentiles. Both masks empty: 0.0. Exactly one empty: NaN (undefined).
- ``det_tp``, ``det_fp``, ``det_fn``, ``det_precision``, ``det_recall``, ``det_f1``, ``det_matched_dice``,
  ``pred_count``, ``ref_count``, ``count_abs_diff``: PVS detection by VALDO's rules, from
  :mod:`scripts.evaluation.detection` (conventions documented there).

Summaries ignore NaN values and report how many there were; the cohort agreement of counts and volumes comes
from :mod:`scripts.evaluation.agreement`. Files are written atomically with :func:`scripts.io.atomic_write`
(temporary file in the target directory, then ``os.replace``). JSON is pretty-printed with an indent of 4; NaN
is written as ``null`` in JSON and as ``nan`` in CSV. Written values are rounded (:func:`rounded`): counts stay
integers, volumes (``*_mm3``) to 0.1 mm³, distances (``*_mm``) to 0.01 mm, everything else (ratios, scores,
correlations, mean counts) to 4 decimals; the values returned in Python are not rounded.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

from scripts.evaluation.agreement import cohort_agreement
from scripts.evaluation.detection import DEFAULT_IOU_THRESHOLD, DETECTION_METRICS, detection_metrics
from scripts.evaluation.masks import prediction_mask, reference_mask
from scripts.evaluation.metrics import OVERLAP_METRICS, overlap_metrics
from scripts.evaluation.stratified import pooled_by_size, stratified_detection, stratified_metric_names
from scripts.io import atomic_write
from scripts.reports.agreement_plot import save_agreement_figure

SUBJECT_KEY = "subject"
VOLUME_METRICS: tuple[str, ...] = ("pred_volume_mm3", "ref_volume_mm3", "volume_diff_mm3", "abs_volume_diff_mm3")
CASE_METRICS: tuple[str, ...] = (
    *OVERLAP_METRICS,
    *VOLUME_METRICS,
    "hd95_mm",
    *DETECTION_METRICS,
    *stratified_metric_names(),
)
SUMMARY_STATS: tuple[str, ...] = ("mean", "std", "median", "n", "n_nan")
RESULT_FILES: tuple[str, ...] = ("per_case_csv", "per_case_json", "summary", "agreement_figure")
RATIO_DECIMALS = 4
FRACTION_DECIMALS = 6
VOLUME_DECIMALS = 1  # 0.1 mm³
DISTANCE_DECIMALS = 2  # 0.01 mm


def check_spacing(spacing: Sequence[float], ndim: int = 3) -> tuple[float, ...]:
    """Validate a voxel spacing in mm.

    Args:
        spacing: one positive, finite value per spatial axis.
        ndim: the expected number of axes.

    Returns:
        The spacing as a tuple of floats.

    Raises:
        ValueError: if the length is wrong or a value is not positive and finite.
    """
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be {ndim} positive finite values in mm, not {spacing}.")
    return values


def volume_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Foreground volumes of a prediction and its reference, and their signed and absolute difference, in mm³.

    Args:
        pred: boolean prediction mask.
        ref: boolean reference mask.
        spacing: voxel spacing in mm, one value per axis.

    Returns:
        A dict with the keys of :data:`VOLUME_METRICS`; ``volume_diff_mm3`` is V_pred - V_ref.

    Raises:
        ValueError: if the spacing is invalid.
    """
    voxel_mm3 = math.prod(check_spacing(spacing, np.ndim(pred)))
    pred_mm3 = int(np.count_nonzero(pred)) * voxel_mm3
    ref_mm3 = int(np.count_nonzero(ref)) * voxel_mm3
    return {
        "pred_volume_mm3": pred_mm3,
        "ref_volume_mm3": ref_mm3,
        "volume_diff_mm3": pred_mm3 - ref_mm3,
        "abs_volume_diff_mm3": abs(pred_mm3 - ref_mm3),
    }


def hausdorff95_mm(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (0.0 if both masks are empty, NaN if one is).

    Args:
        pred: boolean prediction mask.
        ref: boolean reference mask with the same shape.
        spacing: voxel spacing in mm, one value per axis.

    Returns:
        The larger of the two directed 95th-percentile surface distances, in mm.

    Raises:
        ValueError: if the shapes differ or the spacing is invalid.
    """
    pred_mask, ref_mask = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"pred and ref must have the same shape, not {pred_mask.shape} and {ref_mask.shape}.")
    spacing = check_spacing(spacing, pred_mask.ndim)
    pred_any, ref_any = bool(pred_mask.any()), bool(ref_mask.any())
    if not pred_any and not ref_any:
        return 0.0
    if not pred_any or not ref_any:
        return float("nan")
    distance = compute_hausdorff_distance(
        torch.from_numpy(pred_mask[None, None]),
        torch.from_numpy(ref_mask[None, None]),
        include_background=True,
        percentile=95,
        spacing=list(spacing),
    )
    return float(distance[0, 0])


def case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    min_size: int = 0,
) -> dict[str, float | int]:
    """Compute every per-case metric of :data:`CASE_METRICS` for one case.

    Args:
        pred: 3D prediction (a mask, or probabilities): voxels >= 0.5 are foreground.
        ref: 3D reference with the same shape: voxels non-zero after rounding to one decimal are foreground.
        spacing: voxel spacing in mm of the grid both masks live in.
        iou_threshold: component IoU above which a predicted PVS can be a true positive (VALDO: 0.1).
        min_size: minimum component size in voxels for the detection metrics (0 keeps all).

    Returns:
        A dict metric name -> value, keys in the order of :data:`CASE_METRICS`.

    Raises:
        ValueError: if the masks are not 3D, differ in shape, or the spacing is invalid.
    """
    pred_mask, ref_mask = prediction_mask(pred), reference_mask(ref)
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"pred and ref must have the same shape, not {pred_mask.shape} and {ref_mask.shape}.")
    if pred_mask.ndim != 3:
        raise ValueError(f"pred and ref must be 3D, not of shape {pred_mask.shape}.")
    spacing = check_spacing(spacing)
    row: dict[str, float | int] = dict(overlap_metrics(torch.from_numpy(pred_mask), torch.from_numpy(ref_mask)))
    row.update(volume_metrics(pred_mask, ref_mask, spacing))
    row["hd95_mm"] = hausdorff95_mm(pred_mask, ref_mask, spacing)
    row.update(detection_metrics(pred_mask, ref_mask, iou_threshold=iou_threshold, min_size=min_size))
    row.update(stratified_detection(pred_mask, ref_mask, spacing, iou_threshold=iou_threshold, min_size=min_size))
    return row


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def metric_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Names of the numeric columns of a case table, in the order of the first row.

    Args:
        rows: one dict per case; every row must hold the same numeric metrics.

    Returns:
        The metric names (the subject id and other non-numeric fields excluded).

    Raises:
        ValueError: if ``rows`` is empty or the rows do not all hold the same metrics.
    """
    if not rows:
        raise ValueError("rows must hold at least one case, not none.")
    names = [key for key, value in rows[0].items() if key != SUBJECT_KEY and _is_number(value)]
    for row in rows[1:]:
        row_names = [key for key, value in row.items() if key != SUBJECT_KEY and _is_number(value)]
        if set(row_names) != set(names):
            raise ValueError(
                f"every row must hold the metrics {names}, not {row_names} (subject {row.get(SUBJECT_KEY)!r})."
            )
    return names


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


def decimals_for(name: str) -> int:
    """Decimals a value named ``name`` is written with: 1 for ``*_mm3``, 2 for ``*_mm``, 6 for ``*_fraction``, else 4.

    Volume fractions of PVS are of the order of 1e-3 of the brain, so they keep 6 decimals (3 significant digits).
    """
    if name.endswith("_fraction"):
        return FRACTION_DECIMALS
    if name.endswith("_mm3"):
        return VOLUME_DECIMALS
    if name.endswith("_mm"):
        return DISTANCE_DECIMALS
    return RATIO_DECIMALS


def rounded(value: Any, decimals: int) -> Any:
    """Round a number for a table: integers stay integers, floats get ``decimals`` decimals, NaN stays NaN.

    Args:
        value: the value; anything that is not a number is returned unchanged.
        decimals: decimals kept for floats.

    Returns:
        The rounded value, as a Python int or float.
    """
    if not _is_number(value):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    return round(float(value), decimals) if math.isfinite(value) else float(value)


def rounded_summary(summary: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Round every statistic of a :func:`summarize` result like its metric (``n`` and ``n_nan`` stay integers)."""
    return {
        name: {stat: rounded(value, decimals_for(name)) for stat, value in stats.items()}
        for name, stats in summary.items()
    }


def rounded_agreement(agreement: dict[str, Any]) -> dict[str, Any]:
    """Round a :func:`scripts.evaluation.agreement.cohort_agreement` result: differences in the quantity's unit."""
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


def _json_ready(value: Any) -> Any:
    """Turn numpy scalars into Python ones and non-finite floats into None, recursively."""
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def _write_json(path: str | os.PathLike[str], payload: Any) -> None:
    _write_text(path, json.dumps(_json_ready(payload), indent=4, allow_nan=False) + "\n")


def write_case_table(
    rows: Sequence[dict[str, Any]],
    csv_path: str | os.PathLike[str],
    json_path: str | os.PathLike[str],
    id_columns: Sequence[str] = (SUBJECT_KEY,),
) -> None:
    """Write the per-case metrics as CSV and JSON: the id columns first, then every metric, rounded (:func:`rounded`).

    Args:
        rows: one dict per case; each must have a ``subject`` key and the same numeric metrics.
        csv_path: destination of the CSV table.
        json_path: destination of the JSON list of rows.
        id_columns: the non-numeric columns that identify a case, written first.

    Raises:
        ValueError: if ``rows`` is empty, a row lacks a subject id, or the rows hold different metrics.
    """
    names = metric_names(rows)
    for index, row in enumerate(rows):
        if SUBJECT_KEY not in row:
            raise ValueError(f"every row must have a {SUBJECT_KEY!r} key, not row {index} with keys {list(row)}.")
    columns = [*id_columns, *names]
    table = [{column: rounded(row[column], decimals_for(column)) for column in columns} for row in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    _write_text(csv_path, buffer.getvalue())
    _write_json(json_path, table)


def write_summary(
    summary: dict[str, dict[str, float]],
    path: str | os.PathLike[str],
    extra: dict[str, Any] | None = None,
    agreement: dict[str, Any] | None = None,
    by_size: dict[str, Any] | None = None,
) -> None:
    """Write a metric summary as JSON: the ``extra`` fields, ``"metrics": summary``, ``"agreement"``, ``"by_size"``.

    Statistics are rounded like their metric (:func:`rounded_summary`, :func:`rounded_agreement`).

    Args:
        summary: the output of :func:`summarize`.
        path: destination JSON file.
        extra: run information to record first (method, thresholds, number of cases...).
        agreement: the cohort agreement of :func:`scripts.evaluation.agreement.cohort_agreement`, if any.
        by_size: detection pooled by PVS size (:func:`scripts.evaluation.stratified.pooled_by_size`), if any.

    Raises:
        ValueError: if ``extra`` has a ``metrics``, ``agreement`` or ``by_size`` key.
    """
    extra = dict(extra or {})
    if {"metrics", "agreement", "by_size"} & set(extra):
        raise ValueError(f"extra must not have a 'metrics', 'agreement' or 'by_size' key, not keys {list(extra)}.")
    payload = {**extra, "metrics": rounded_summary(summary)}
    if agreement is not None:
        payload["agreement"] = rounded_agreement(agreement)
    if by_size is not None:
        payload["by_size"] = {
            name: {key: rounded(value, RATIO_DECIMALS) for key, value in stats.items()}
            if isinstance(stats, dict)
            else stats
            for name, stats in by_size.items()
        }
    _write_json(path, payload)


def write_results(
    rows: Sequence[dict[str, Any]],
    output_dir: str | os.PathLike[str],
    files: Mapping[str, str],
    extra: dict[str, Any] | None = None,
    dpi: int = 300,
    title: str = "",
) -> dict[str, dict[str, float]]:
    """Write everything an evaluation produces: per-case tables, summary with cohort agreement, agreement figure.

    Args:
        rows: one dict per case, a ``subject`` id and every metric of :data:`CASE_METRICS`.
        output_dir: folder of the files.
        files: file names under the keys ``per_case_csv``, ``per_case_json``, ``summary`` and ``agreement_figure``.
        extra: run information written first in the summary.
        dpi: resolution of the agreement figure.
        title: title of the agreement figure (what was evaluated).

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
    summary = summarize(rows)
    write_summary(
        summary,
        output / files["summary"],
        extra=extra,
        agreement=cohort_agreement(rows),
        by_size=pooled_by_size(rows),
    )
    save_agreement_figure(rows, output / files["agreement_figure"], dpi=dpi, title=title)
    return summary
