"""The per-PVS census of the evaluation's test predictions (:mod:`scripts.measurement.census`), in their native grid."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine
from monai.utils import convert_to_numpy

from scripts.case_handler import PerCaseHandler
from scripts.measurement.census import CENSUS_COLUMNS, census_rows, measure_components
from scripts.tables import write_table

logger = logging.getLogger("pvs_bundle.prediction_census")

CENSUS_CSV = "test_pvs_census.csv"
CENSUS_JSON = "test_pvs_census.json"


class PredictionCensusHandler(PerCaseHandler):
    """Census every test prediction and write ``test_pvs_census.csv`` and ``.json`` into ``output_dir``.

    Attach to the evaluator, whose postprocessing must leave the binary prediction inverted to the native grid
    (a MetaTensor with its affine) under ``pred_key``. Probabilities are not kept by the evaluation, so
    ``prob_mean`` and ``prob_max`` are NaN; regions are ``unknown``.

    Args:
        output_dir: folder of the tables.
        pred_key: key of the native binary prediction.
        id_key: key of the case id in the datalist items.
    """

    def __init__(self, output_dir: str | os.PathLike[str], pred_key: str = "pred", id_key: str = "id") -> None:
        self.output_dir = Path(output_dir)
        self.pred_key = pred_key
        self.id_key = id_key
        self.rows: list[dict[str, Any]] = []

    def reset(self, engine: Engine) -> None:
        """Forget the cases of a previous run."""
        self.rows = []

    def handle_case(self, item: Mapping[Hashable, Any]) -> list[dict[str, Any]]:
        """Census one prediction and return its rows.

        Raises:
            ValueError: if the prediction carries no affine.
        """
        pred = item[self.pred_key]
        affine = getattr(pred, "affine", None)
        if affine is None:
            raise ValueError(f"{self.pred_key} must be a MetaTensor with an affine, not {type(pred).__name__}.")
        case = str(item.get(self.id_key) or f"case-{len(self.rows)}")
        _, columns = measure_components(convert_to_numpy(pred)[0] > 0.5, convert_to_numpy(affine).astype(np.float64))
        rows = census_rows(case, columns)
        self.rows += rows
        return rows

    def __call__(self, engine: Engine) -> None:
        """Write the census of every prediction."""
        write_table(self.rows, CENSUS_COLUMNS, self.output_dir / CENSUS_CSV, self.output_dir / CENSUS_JSON)
        logger.info("Wrote the census of %d predicted PVS to %s", len(self.rows), self.output_dir / CENSUS_CSV)
