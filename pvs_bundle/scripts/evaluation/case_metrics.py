"""Every per-case evaluation metric in one call, their summary over cases, and atomic table writers.

Per case (masks binarised at 0.5, scored in the label's own grid with its voxel spacing in mm):

- ``dice``, ``iou``, ``precision``, ``recall``: voxel overlap, from :mod:`scripts.evaluation.metrics` (empty-mask
  conventions documented there).
- ``abs_volume_diff_mm3``: |V_pred - V_ref| in mm³.
- ``hd95_mm``: 95th-percentile symmetric Hausdorff distance in mm between the mask surfaces, as MONAI's
  ``compute_hausdorff_distance(..., percentile=95)`` defines it: the larger of the two directed 95th
  percentiles. Both masks empty: 0.0. Exactly one empty: NaN (undefined).
- ``det_precision``, ``det_recall``, ``det_f1``, ``pred_count``, ``ref_count``, ``count_abs_diff``:
  component-level detection, from :mod:`scripts.evaluation.detection` (conventions documented there).

Summaries ignore NaN values and report how many there were. Files are written atomically with
:func:`scripts.io.atomic_write` (temporary file in the target directory, then ``os.replace``). JSON is
pretty-printed with an indent of 4; NaN is written as ``null`` in JSON and as ``nan`` in CSV.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

from scripts.evaluation.detection import DETECTION_METRICS, detection_metrics
from scripts.evaluation.metrics import OVERLAP_METRICS, overlap_metrics
from scripts.io import atomic_write

SUBJECT_KEY = "subject"
CASE_METRICS: tuple[str, ...] = (*OVERLAP_METRICS, "abs_volume_diff_mm3", "hd95_mm", *DETECTION_METRICS)
SUMMARY_STATS: tuple[str, ...] = ("mean", "std", "median", "n", "n_nan")


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


def abs_volume_difference_mm3(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """Absolute difference of the foreground volumes, in mm³.

    Args:
        pred: prediction; voxels > 0.5 are foreground.
        ref: reference; voxels > 0.5 are foreground.
        spacing: voxel spacing in mm, one value per axis.

    Returns:
        |V_pred - V_ref| in mm³.

    Raises:
        ValueError: if the spacing is invalid.
    """
    voxel_mm3 = math.prod(check_spacing(spacing, np.ndim(pred)))
    difference = int(np.count_nonzero(np.asarray(pred) > 0.5)) - int(np.count_nonzero(np.asarray(ref) > 0.5))
    return abs(difference) * voxel_mm3


def hausdorff95_mm(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (0.0 if both masks are empty, NaN if one is).

    Args:
        pred: prediction; voxels > 0.5 are foreground.
        ref: reference with the same shape.
        spacing: voxel spacing in mm, one value per axis.

    Returns:
        The larger of the two directed 95th-percentile surface distances, in mm.

    Raises:
        ValueError: if the shapes differ or the spacing is invalid.
    """
    pred_mask, ref_mask = np.asarray(pred) > 0.5, np.asarray(ref) > 0.5
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
    iou_threshold: float = 0.1,
    min_size: int = 0,
) -> dict[str, float]:
    """Compute every per-case metric of :data:`CASE_METRICS` for one case.

    Args:
        pred: 3D prediction (binary, or probabilities binarised at 0.5).
        ref: 3D reference with the same shape.
        spacing: voxel spacing in mm of the grid both masks live in.
        iou_threshold: component IoU above which a predicted PVS counts as detected.
        min_size: minimum component size in voxels for the detection metrics (0 keeps all).

    Returns:
        A dict metric name -> value, keys in the order of :data:`CASE_METRICS`.

    Raises:
        ValueError: if the masks are not 3D, differ in shape, or the spacing is invalid.
    """
    pred_mask, ref_mask = np.asarray(pred) > 0.5, np.asarray(ref) > 0.5
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"pred and ref must have the same shape, not {pred_mask.shape} and {ref_mask.shape}.")
    if pred_mask.ndim != 3:
        raise ValueError(f"pred and ref must be 3D, not of shape {pred_mask.shape}.")
    spacing = check_spacing(spacing)
    row = overlap_metrics(torch.from_numpy(pred_mask), torch.from_numpy(ref_mask))
    row["abs_volume_diff_mm3"] = abs_volume_difference_mm3(pred_mask, ref_mask, spacing)
    row["hd95_mm"] = hausdorff95_mm(pred_mask, ref_mask, spacing)
    row.update(detection_metrics(pred_mask, ref_mask, iou_threshold=iou_threshold, min_size=min_size))
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
    """Write the per-case metrics as CSV and JSON, the subject id (and other id columns) first, then every metric.

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
    table = [{column: row[column] for column in columns} for row in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    _write_text(csv_path, buffer.getvalue())
    _write_json(json_path, table)


def write_summary(
    summary: dict[str, dict[str, float]], path: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> None:
    """Write a metric summary as JSON: the ``extra`` fields first, then ``"metrics": summary``.

    Args:
        summary: the output of :func:`summarize`.
        path: destination JSON file.
        extra: run information to record alongside (method, thresholds, number of cases...).

    Raises:
        ValueError: if ``extra`` has a ``metrics`` key.
    """
    extra = dict(extra or {})
    if "metrics" in extra:
        raise ValueError(f"extra must not have a 'metrics' key, not keys {list(extra)}.")
    _write_json(path, {**extra, "metrics": summary})
