"""The QC report of a run: one self-contained HTML file (PNG figures embedded as base64, no network, opens from disk).

Per subject: 3-plane overlays (sagittal, coronal, axial, in RAS order, millimetre aspect) through the slices that
hold the most PVS voxels of the basal ganglia and of the cerebral white matter (of the whole mask without a
parcellation), PVS in red and the region's outline in yellow, and its counts and volumes by region. For the
cohort: a table sortable by clicking a column header (a few lines of inline JavaScript), the distributions of
the counts, PVS volumes, widths and lengths, and automatic flags (:data:`FLAGS`).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from scripts.io import atomic_write
from scripts.nifti import ras_spacing, to_ras, voxel_size

FLAGS: dict[str, str] = {
    "no_pvs": "no PVS found",
    "fraction_outlier": "PVS volume fraction more than 3 scaled MADs from the cohort median (robust z > 3)",
    "too_small": "image smaller than the sliding window along some axis (it was zero-padded)",
    "low_contrast": "low contrast: (p99 - p50) / p99 of the intensities inside the brain mask below 0.25",
    "no_parcellation": "no parcellation: regions unknown, brain mask estimated from the head mask",
}
ROBUST_Z_LIMIT = 3.0
LOW_CONTRAST_LIMIT = 0.25
MAD_SCALE = 1.4826
"""Scale of the median absolute deviation that estimates a normal standard deviation."""
_PLANES = (("sagittal", 0), ("coronal", 1), ("axial", 2))


def png_base64(figure: plt.Figure, dpi: int = 80) -> str:
    """Render a matplotlib figure as a base64 PNG string and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def contrast(image: np.ndarray, brain: np.ndarray) -> float:
    """``(p99 - p50) / p99`` of the intensities inside ``brain`` (every 2nd voxel per axis); NaN if empty."""
    values = np.asarray(image)[::2, ::2, ::2][np.asarray(brain)[::2, ::2, ::2]]
    if values.size == 0:
        return math.nan
    p50, p99 = np.percentile(values, [50, 99])
    return float((p99 - p50) / p99) if p99 > 0 else 0.0


def overlay_figure(
    image: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    rows: Sequence[tuple[str, np.ndarray | None]],
) -> str:
    """3-plane overlays through the PVS-richest slices of each region, as a base64 PNG.

    Args:
        image: the input image in its own grid.
        mask: the binary PVS mask, same grid.
        affine: the grid's affine.
        rows: (title, region mask or None for the whole volume), one figure row each.

    Returns:
        The PNG, base64-encoded.
    """
    spacing = ras_spacing(voxel_size(affine), affine)
    image, mask = to_ras(np.asarray(image, dtype=np.float32), affine), to_ras(np.asarray(mask, dtype=bool), affine)
    low, high = np.percentile(image[::2, ::2, ::2], [1, 99.5])
    figure, axes = plt.subplots(len(rows), 3, figsize=(9.6, 3.3 * len(rows)), squeeze=False)
    for row, (title, region) in enumerate(rows):
        region = None if region is None else to_ras(region, affine)
        inside = mask if region is None else mask & region
        for column, (plane, axis) in enumerate(_PLANES):
            other = tuple(a for a in range(3) if a != axis)
            per_slice = inside.sum(axis=other)
            index = int(per_slice.argmax()) if per_slice.any() else image.shape[axis] // 2
            take = [slice(None)] * 3
            take[axis] = index
            extent = (0, image.shape[other[0]] * spacing[other[0]], 0, image.shape[other[1]] * spacing[other[1]])
            ax = axes[row, column]
            ax.imshow(image[tuple(take)].T, cmap="gray", vmin=low, vmax=high, origin="lower", extent=extent)
            overlay = np.ma.masked_where(~mask[tuple(take)].T, mask[tuple(take)].T)
            ax.imshow(overlay, cmap="autumn", alpha=0.8, origin="lower", extent=extent, interpolation="nearest")
            if region is not None and region[tuple(take)].any():
                ax.contour(
                    region[tuple(take)].T.astype(float),
                    levels=[0.5],
                    colors="yellow",
                    linewidths=0.6,
                    origin="lower",
                    extent=extent,
                )
            ax.set_title(f"{title}: {plane} {index} ({int(per_slice[index])} PVS voxels)", fontsize=8)
            ax.axis("off")
    figure.tight_layout()
    return png_base64(figure)


def distribution_figure(burden: Sequence[Mapping[str, Any]], census: Sequence[Mapping[str, Any]]) -> str:
    """Histograms of the PVS count per subject and of the PVS volumes, widths and lengths, as a base64 PNG."""
    panels = (
        ("PVS per subject", [row["pvs_count"] for row in burden], False),
        ("PVS volume (mm³, log scale)", [row["volume_mm3"] for row in census], True),
        ("PVS width (mm)", [row["width_mm"] for row in census], False),
        ("PVS length (mm)", [row["length_mm"] for row in census], False),
    )
    figure, axes = plt.subplots(1, 4, figsize=(14, 3))
    for ax, (title, values, log) in zip(axes, panels, strict=True):
        finite = np.asarray([v for v in values if math.isfinite(v) and (v > 0 or not log)], dtype=np.float64)
        if finite.size:
            bins = np.geomspace(finite.min(), finite.max() * 1.0001, 20) if log and finite.min() > 0 else 20
            ax.hist(finite, bins=bins, color="#4477aa")
            if log:
                ax.set_xscale("log")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title, fontsize=9)
    figure.tight_layout()
    return png_base64(figure)


def robust_outliers(values: Sequence[float], limit: float = ROBUST_Z_LIMIT) -> list[bool]:
    """Whether each value lies more than ``limit`` scaled MADs from the median of the finite values.

    Nothing is flagged with fewer than 3 finite values or a zero MAD.
    """
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    if finite.size < 3:
        return [False] * len(array)
    median = float(np.median(finite))
    mad = MAD_SCALE * float(np.median(np.abs(finite - median)))
    if mad <= 0:
        return [False] * len(array)
    return [bool(math.isfinite(v) and abs(v - median) / mad > limit) for v in array]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = "" if not math.isfinite(value) else f"{value:.4g}"
        return f'<td data-v="{value if math.isfinite(value) else ""}">{text}</td>'
    if isinstance(value, int):
        return f'<td data-v="{value}">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], sortable: bool = False) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(row.get(c, "")) for c in columns) + "</tr>" for row in rows)
    return (
        f'<table class="{"sortable" if sortable else ""}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


_STYLE = """
body{font-family:sans-serif;margin:20px;color:#222}table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #bbb;padding:3px 6px;text-align:right}th{background:#eee}td:first-child{text-align:left}
table.sortable th{cursor:pointer}.flag{color:#b00;font-weight:bold}section{border-top:2px solid #ccc;margin-top:16px}
img{max-width:100%}
"""
_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function(th, col){th.addEventListener('click', function(){
var body=th.closest('table').tBodies[0], rows=Array.from(body.rows), asc=th.dataset.asc!=='1';
rows.sort(function(a,b){var x=a.cells[col], y=b.cells[col], u=x.dataset.v, v=y.dataset.v;
var r=(u!==undefined&&v!==undefined)?(parseFloat(u||'NaN')||0)-(parseFloat(v||'NaN')||0)
:x.textContent.localeCompare(y.textContent);return asc?r:-r;});
th.dataset.asc=asc?'1':'0';rows.forEach(function(r){body.appendChild(r);});});});
"""


def render_report(
    path: str | Path,
    title: str,
    cohort_rows: Sequence[Mapping[str, Any]],
    cohort_columns: Sequence[str],
    subjects: Sequence[Mapping[str, Any]],
    distributions_png: str,
    notes: Sequence[str],
) -> Path:
    """Write the report (see the module docstring), atomically.

    Args:
        path: the HTML file.
        title: the page title.
        cohort_rows: one row per subject for the sortable table (``flags`` a text column).
        cohort_columns: the table's columns, in order.
        subjects: per subject: ``case``, ``figure`` (base64 PNG), ``region_rows`` and ``region_columns``, ``flags``.
        distributions_png: the cohort's distributions (base64 PNG).
        notes: sentences shown at the top (missing parcellations, what the flags mean).

    Returns:
        The path written.
    """
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        "".join(f"<p>{html.escape(note)}</p>" for note in notes),
        "<h2>Cohort</h2><p>Click a column header to sort.</p>",
        _table(cohort_columns, cohort_rows, sortable=True),
        f"<h2>Distributions</h2><img alt='distributions' src='data:image/png;base64,{distributions_png}'>",
        "<h2>Flags</h2><ul>" + "".join(f"<li><b>{k}</b>: {html.escape(v)}</li>" for k, v in FLAGS.items()) + "</ul>",
    ]
    for subject in subjects:
        flags = ", ".join(subject["flags"]) or "none"
        parts += [
            f"<section id='{html.escape(subject['case'])}'><h2>{html.escape(subject['case'])}</h2>",
            f"<p>Flags: <span class='{'flag' if subject['flags'] else ''}'>{html.escape(flags)}</span></p>",
            f"<img alt='overlays of {html.escape(subject['case'])}' src='data:image/png;base64,{subject['figure']}'>",
            _table(subject["region_columns"], subject["region_rows"]),
            "</section>",
        ]
    parts.append(f"<script>{_SCRIPT}</script></body></html>\n")
    text = "".join(parts)
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))
