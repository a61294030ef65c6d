"""Cohort agreement figure: predicted vs reference PVS count and volume, scatter and Bland–Altman plots; by size.

A 2 x 2 grid: one row per quantity (PVS count, PVS volume in mm³); on the left the predicted value against the
reference value of every case with the identity line (points on it agree exactly), on the right the Bland–Altman
plot (difference pred - ref against the mean of the two) with the mean difference and the 95 % limits of
agreement. The statistics of :func:`scripts.agreement.agreement` are printed in the panel titles (and
a note at the bottom when there are too few cases for them). Given the detection pooled by PVS size
(:func:`scripts.evaluation.stratified.pooled_by_size`), a third row shows it: detection recall and precision per
size bin (the PVS counted under each bar), and the extra predicted components split into fragments of a true PVS and
specks touching none (issue 23, item 4). Drawn with matplotlib's object API and rendered by Agg, saved as PNG
atomically.
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


def _by_size(ax: Axes, by_size: Mapping[str, Any]) -> None:
    """Detection recall and precision per size bin, as bars, with the reference and predicted PVS of each bin."""
    bins = [name for name in by_size if name != "edges_mm3"]
    x = np.arange(len(bins))
    for offset, metric, colour in ((-0.2, "recall", "tab:blue"), (0.2, "precision", "tab:orange")):
        values = [by_size[b][metric] for b in bins]
        ax.bar(x + offset, np.nan_to_num(values, nan=0.0), width=0.4, color=colour, label=metric)
    for k, name in enumerate(bins):
        counts = f"{by_size[name]['reference_pvs']} / {by_size[name]['predicted_pvs']}"
        ax.text(k, 1.02, counts, ha="center", fontsize=7)
    ax.set(xticks=x, ylim=(0, 1.12), ylabel="detection (VALDO)", xlabel="PVS volume (mm³)")
    ax.set_xticklabels(
        [name.replace("to", "–").replace("mm3", "").replace("lt", "< ").replace("ge", "≥ ") for name in bins]
    )
    ax.set_title("detection by PVS size\n(reference / predicted PVS above each pair)", fontsize=9)
    ax.legend(loc="lower right", fontsize=7)


def _extras(ax: Axes, rows: Sequence[Mapping[str, Any]]) -> None:
    """The extra predicted components over all cases: fragments of a true PVS and specks touching none."""
    names = ("det_fragments", "det_specks")
    totals = [int(sum(float(row.get(name, 0)) for row in rows)) for name in names]
    ax.bar([0, 1], totals, color=["tab:purple", "tab:grey"])
    for k, total in enumerate(totals):
        ax.text(k, total, str(total), ha="center", va="bottom", fontsize=8)
    ax.set(xticks=[0, 1], ylabel="predicted components (all cases)")
    ax.set_xticklabels(["fragments of a true PVS", "specks touching none"])
    ax.set_title("extra components", fontsize=9)


def agreement_figure(
    rows: Sequence[Mapping[str, Any]], title: str = "", by_size: Mapping[str, Any] | None = None
) -> Figure:
    """The agreement figure of the cases of a per-case table (see the module docstring).

    Args:
        rows: one dict per case with ``pred_count``, ``ref_count``, ``pred_volume_mm3`` and ``ref_volume_mm3``
            (and ``det_fragments``, ``det_specks`` for the size row).
        title: figure title (what was evaluated); the number of cases is appended.
        by_size: detection pooled by size; None leaves the third row out.

    Raises:
        ValueError: if ``rows`` is empty or a row lacks one of the columns.
    """
    if not rows:
        raise ValueError("rows must hold at least one case, not none.")
    figure = Figure(figsize=(9, 12.5 if by_size else 8.5), layout="constrained")
    axes = figure.subplots(3 if by_size else 2, 2)
    for row_axes, (quantity, (pred_key, ref_key)) in zip(axes, COHORT_QUANTITIES.items(), strict=False):
        missing = [i for i, row in enumerate(rows) if pred_key not in row or ref_key not in row]
        if missing:
            raise ValueError(f"every row must have {pred_key!r} and {ref_key!r}, not rows {missing}.")
        pred = np.array([float(row[pred_key]) for row in rows])
        ref = np.array([float(row[ref_key]) for row in rows])
        stats = agreement(pred, ref)
        _scatter(row_axes[0], pred, ref, stats, AXIS_LABELS[quantity])
        _bland_altman(row_axes[1], pred, ref, stats, AXIS_LABELS[quantity])
    if by_size:
        _by_size(axes[2][0], by_size)
        _extras(axes[2][1], rows)
    if len(rows) < MIN_CASES:
        figure.supxlabel(f"n = {len(rows)}: {stats['note']}", fontsize=9)
    figure.suptitle(f"{title} ({len(rows)} cases)".strip(), fontsize=11)
    return figure


def save_agreement_figure(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    dpi: int = 300,
    title: str = "",
    by_size: Mapping[str, Any] | None = None,
) -> None:
    """Save :func:`agreement_figure` as PNG (written atomically; the parent directory is created).

    Raises:
        ValueError: if ``rows`` is empty or a row lacks one of the columns.
    """
    figure = agreement_figure(rows, title, by_size)
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=dpi))
