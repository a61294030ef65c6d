"""``run merging``: the cohort tables, census, region table and QC report of a finished job-array run, written once.

Each shard of a job array (:mod:`scripts.inference.shards`) keeps its cases' rows; here they are checked, put back in
the cohort's input order and written by the writers one process uses, so the files are those one process writes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from scripts.inference.prediction_writer import ID_COLUMNS, TEXT_COLUMNS, burden_files, cohort_files
from scripts.inference.shards import read_shards
from scripts.measurement.measure import PVSMeasurement
from scripts.settings import as_bool
from scripts.tables import write_case_table

logger = logging.getLogger("pvs_bundle.merging")


def merge_shards(
    output_dir: str | Path, measurement: PVSMeasurement | None = None, overwrite: bool | str = False
) -> list[dict[str, Any]]:
    """Write the cohort tables, census, region table and QC report of a finished job-array run, once.

    The rows are those each shard kept, in the cohort's input order, written by the writers one process uses.

    Args:
        output_dir: the run's output folder (its ``shards/`` folder holds every shard).
        measurement: the measurement stage, for the census, region table and report.
        overwrite: whether existing cohort tables may be replaced.

    Returns:
        The burden table's rows.

    Raises:
        FileExistsError: cohort tables exist and ``overwrite`` is false.
        ValueError: naming the shard that is missing, unfinished or was run with other settings.
    """
    records = read_shards(output_dir)
    existing = [str(p) for p in cohort_files(output_dir) if p.exists()]
    if existing and not as_bool(overwrite, "overwrite"):
        raise FileExistsError(f"{', '.join(existing)} exist: merge with --overwrite true to replace them.")
    rows = [record["row"] for record in records]
    csv_file, json_file = burden_files(output_dir)
    write_case_table(rows, csv_file, json_file, id_columns=ID_COLUMNS, text_columns=TEXT_COLUMNS)
    if measurement is not None:
        measurement.reset()
        measurement.records = [
            {"census": record["census"] or [], "regions": record["regions"] or [], "subject": record["subject"]}
            for record in records
        ]
        measurement.gather()
        measurement.write()
    logger.info("Merged %d case(s) into %s and %s.", len(rows), csv_file, json_file)
    return rows
