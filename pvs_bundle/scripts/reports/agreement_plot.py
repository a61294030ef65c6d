"""Cohort agreement figure: predicted vs reference PVS count and volume, scatter and Bland–Altman plots.

A 2 x 2 grid: one row per quantity (PVS count, PVS volume in mm³); on the left the predicted value against the
reference value of every case with the identity line (points on it agree exactly), on the right the Bland–Altman
plot (difference pred - ref against the mean of the two) with the mean difference and the 95 % limits of
agreement. The statistics of :func:`scripts.agreement.agreement` are printed in the panel titles (and
a note at the bottom when there are too few cases for them). Drawn with
matplotlib's object API and rendered by Agg, saved as PNG atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from scripts.agreement import COHORT_QUANTITIES, MIN_CASES, agreement
from scripts.io import atomic_write

AXIS_LABELS: dict[str, str] = {"count": "PVS count", "volume_mm3": "PVS volume (mm³)"}


def _format(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.3g}"


def _scatter(ax: Axes, pred: np.ndarray, ref: np.ndarray, stats: Mapping[str, Any], label: str) -> None:
    ax.scatter(ref, pred, s=18, alpha=0.8, edgecolors="none")
    values = np.concatenate([pred, ref])
    low, high = float(values.min()), float(values.max())
    pad = 0.05 * (high - low) or 1.0
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="grey", linestyle="--", linewidth=1, label="y = x")
    ax.set(xlim=(low - pad, high + pad), ylim=(low - pad, high + pad), xlabel=f"reference {label}")
    ax.set_ylabel(f"predicted {label}")
    ax.set_aspect("equal", adjustable="box")
    ax.set_title(
        f"{label}: predicted vs reference\nICC(A,1) {_format(stats['icc_a1'])} · Lin CCC {_format(stats['ccc'])} · "
        f"Pearson r {_format(stats['pearson_r'])} · Spearman ρ {_format(stats['spearman_r'])}",
        fontsize=9,
    )
    ax.legend(loc="lower right", fontsize=7)


def _bland_altman(ax: Axes, pred: np.ndarray, ref: np.ndarray, stats: Mapping[str, Any], label: str) -> None:
    ax.scatter((pred + ref) / 2, pred - ref, s=18, alpha=0.8, edgecolors="none")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    lines = (("mean_diff", "-", "mean"), ("loa_lower", "--", "-1.96 SD"), ("loa_upper", "--", "+1.96 SD"))
    for key, style, name in lines:
        if math.isfinite(stats[key]):
            ax.axhline(stats[key], color="tab:red", linestyle=style, linewidth=1, label=f"{name}: {stats[key]:.3g}")
    ax.set(xlabel=f"mean of predicted and reference {label}", ylabel=f"predicted - reference {label}")
    ax.set_title(f"{label}: Bland–Altman\nmean difference and 95 % limits of agreement", fontsize=9)
    if "note" not in stats:
        ax.legend(loc="best", fontsize=7)


def save_agreement_figure(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], dpi: int = 300, title: str = ""
) -> None:
    """Save the 2 x 2 agreement figure of the cases of a per-case table as PNG.

    Args:
        rows: one dict per case with ``pred_count``, ``ref_count``, ``pred_volume_mm3`` and ``ref_volume_mm3``.
        path: destination PNG file (written atomically; the parent directory is created).
        dpi: resolution.
        title: figure title (what was evaluated); the number of cases is appended.

    Raises:
        ValueError: if ``rows`` is empty or a row lacks one of the columns.
    """
    if not rows:
        raise ValueError("rows must hold at least one case, not none.")
    figure = Figure(figsize=(9, 8.5), layout="constrained")
    axes = figure.subplots(2, 2)
    for row_axes, (quantity, (pred_key, ref_key)) in zip(axes, COHORT_QUANTITIES.items(), strict=True):
        missing = [i for i, row in enumerate(rows) if pred_key not in row or ref_key not in row]
        if missing:
            raise ValueError(f"every row must have {pred_key!r} and {ref_key!r}, not rows {missing}.")
        pred = np.array([float(row[pred_key]) for row in rows])
        ref = np.array([float(row[ref_key]) for row in rows])
        stats = agreement(pred, ref)
        _scatter(row_axes[0], pred, ref, stats, AXIS_LABELS[quantity])
        _bland_altman(row_axes[1], pred, ref, stats, AXIS_LABELS[quantity])
    if len(rows) < MIN_CASES:
        figure.supxlabel(f"n = {len(rows)}: {stats['note']}", fontsize=9)
    figure.suptitle(f"{title} ({len(rows)} cases)".strip(), fontsize=11)
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=dpi))
