"""Tables: the one CSV/JSON writer of the bundle, its rounding and its NaN rule.

Every table the bundle writes (evaluation's per-case metrics and summary, inference's burden table, the census and
region tables) goes through :func:`write_table` or :func:`write_json`: files are written atomically
(:func:`scripts.io.atomic_write`: a temporary file in the target folder, then ``os.replace``); JSON is pretty-printed
with an indent of 4; NaN is written as ``null`` in JSON and as ``nan`` in CSV. Written values are rounded
(:func:`rounded`): counts stay integers, volumes (``*_mm3``) to 0.1 mm³, distances (``*_mm``) to 0.01 mm, fractions
(``*_fraction``) to 6 decimals, everything else (ratios, scores, correlations, mean counts) to 4 decimals; the values
returned in Python are not rounded.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scripts.io import atomic_write

SUBJECT_KEY = "subject"  # the id column of evaluation tables
RATIO_DECIMALS = 4
FRACTION_DECIMALS = 6
VOLUME_DECIMALS = 1  # 0.1 mm³
DISTANCE_DECIMALS = 2  # 0.01 mm


def is_number(value: Any) -> bool:
    """True for an int or float (numpy ones too), not for a bool."""
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
    names = [key for key, value in rows[0].items() if key != SUBJECT_KEY and is_number(value)]
    for row in rows[1:]:
        row_names = [key for key, value in row.items() if key != SUBJECT_KEY and is_number(value)]
        if set(row_names) != set(names):
            raise ValueError(
                f"every row must hold the metrics {names}, not {row_names} (subject {row.get(SUBJECT_KEY)!r})."
            )
    return names


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
    if not is_number(value):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    return round(float(value), decimals) if math.isfinite(value) else float(value)


def json_ready(value: Any) -> Any:
    """Turn numpy scalars into Python ones and non-finite floats into None, recursively."""
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as JSON (indent 4; NaN and infinities as null; numpy scalars as numbers) atomically."""
    write_text(path, json.dumps(json_ready(payload), indent=4, allow_nan=False) + "\n")


def write_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    csv_path: str | os.PathLike[str],
    json_path: str | os.PathLike[str],
) -> None:
    """Write rows as a CSV table and a JSON list, both atomically, numbers rounded like their column (:func:`rounded`).

    NaN is written as ``nan`` in the CSV and as ``null`` in the JSON; keys of a row not among ``columns`` are left out.

    Args:
        rows: one dict per row, holding every column.
        columns: the columns, in order.
        csv_path: destination of the CSV table.
        json_path: destination of the JSON list of rows.
    """
    table = [{column: rounded(row[column], decimals_for(column)) for column in columns} for row in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    write_text(csv_path, buffer.getvalue())
    write_json(json_path, table)


def write_case_table(
    rows: Sequence[dict[str, Any]],
    csv_path: str | os.PathLike[str],
    json_path: str | os.PathLike[str],
    id_columns: Sequence[str] = (SUBJECT_KEY,),
    text_columns: Sequence[str] = (),
) -> None:
    """Write the per-case metrics as CSV and JSON: id columns, every metric rounded (:func:`rounded`), text columns.

    The text columns describe a row (e.g. the rule that produced it) and are written last.

    Args:
        rows: one dict per case; each must have a ``subject`` key and the same numeric metrics.
        csv_path: destination of the CSV table.
        json_path: destination of the JSON list of rows.
        id_columns: the non-numeric columns that identify a case, written first.
        text_columns: non-numeric columns written last.

    Raises:
        ValueError: if ``rows`` is empty, a row lacks a subject id, or the rows hold different metrics.
    """
    names = metric_names(rows)
    for index, row in enumerate(rows):
        if SUBJECT_KEY not in row:
            raise ValueError(f"every row must have a {SUBJECT_KEY!r} key, not row {index} with keys {list(row)}.")
    write_table(rows, [*id_columns, *names, *text_columns], csv_path, json_path)
