"""Test-set evaluation in each label's native grid: the per-case metrics handler, its files and their names.

The evaluation postprocessing (``configs/evaluate.json``) maps each prediction back to its image's original grid
with ``Invertd`` (through CropForeground, Spacing and Orientation) and binarises it at >= 0.5 (``AsDiscreted``);
the label is not preprocessed at all but read once, in its own grid, from its file
(:class:`scripts.evaluation.native_labels.NativeLabeld`), with
VALDO's reference rule (non-zero after rounding to one decimal, :mod:`scripts.masks`). Every metric,
the evaluator's ``val_dice`` included, is therefore computed in the grid the reference was drawn in, whatever the
training ``pixdim``. :class:`NativeSpaceMetricsHandler` scores each case with
:func:`scripts.evaluation.case_metrics.case_metrics` and, when the run completes, writes the per-case tables, their
summary (with the cohort agreement of PVS counts and volumes) and the figures atomically. Under torchrun
(configs/multi_gpu_evaluate.json) each rank scores its own share of the test cases and rank 0 writes the results of
all of them, in datalist order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from ignite.engine import Engine
from monai.transforms import Transform
from monai.utils import ImageMetaKey, convert_to_numpy

from scripts.bids import case_id, parse_entities, strip_nifti_suffix
from scripts.case_handler import PerCaseHandler
from scripts.distributed import gather_in_order, is_main_process, process_rank_and_count
from scripts.evaluation.case_metrics import case_metrics
from scripts.evaluation.detection import DEFAULT_IOU_THRESHOLD
from scripts.evaluation.native_labels import SPACING_KEY, check_same_grid, source_file
from scripts.evaluation.regional import RegionalScores, summarize_by_region
from scripts.evaluation.summary import by_reference, write_results
from scripts.evaluation.voxel_errors import VOXEL_ERROR_METRICS
from scripts.io import sha256_file
from scripts.masks import prediction_mask
from scripts.nifti import ras_spacing, to_ras
from scripts.reports.figures import save_visualization_grid
from scripts.tables import RATIO_DECIMALS, SUBJECT_KEY

logger = logging.getLogger("pvs_bundle.evaluation")

SUMMARY_FILE = "comprehensive_test_metrics.json"
PER_CASE_CSV = "test_per_case_metrics.csv"
PER_CASE_JSON = "test_per_case_metrics.json"
FIGURE_FILE = "test_set_visualization_grid_300dpi.jpg"
AGREEMENT_FIGURE_FILE = "test_count_volume_agreement_300dpi.png"
RESULT_FILES: dict[str, str] = {
    "per_case_csv": PER_CASE_CSV,
    "per_case_json": PER_CASE_JSON,
    "summary": SUMMARY_FILE,
    "agreement_figure": AGREEMENT_FIGURE_FILE,
}
# the evaluator's metrics are defined once, in train.json's validate#metrics, with validation names
VALIDATION_PREFIX, TEST_PREFIX = "val_", "test_"


def prediction_name(metadict: dict | None, saver: Transform) -> dict[str, Any]:
    """Name saved predictions after the case's BIDS entities: ``sub-001[_ses-1]`` + the saver's postfix.

    An ``output_name_formatter`` for ``SaveImaged``: with ``output_postfix="desc-pvs_mask"`` the prediction of
    ``sub-001_T2w.nii.gz`` is written as ``sub-001_desc-pvs_mask.nii.gz``.

    Args:
        metadict: the prediction's metadata, holding the source image path.
        saver: the ``SaveImage`` transform (unused; part of the formatter signature).

    Returns:
        The keyword arguments of ``FolderLayout.filename``.

    Raises:
        ValueError: if the source image path is missing or not a BIDS name.
    """
    filename = (metadict or {}).get(ImageMetaKey.FILENAME_OR_OBJ)
    if not isinstance(filename, str):
        raise ValueError(f"the prediction's metadata must name its source image, not {filename!r}.")
    entities, _ = parse_entities(filename)
    return {"subject": case_id(entities), "idx": None}


class NativeSpaceMetricsHandler(PerCaseHandler):
    """Score every test case in its label's native grid and write the tables, the summary and the figure.

    Attach to the evaluator, whose postprocessing must leave, per item, the binary prediction inverted to the
    native grid under ``pred_key`` and the native label from :class:`NativeLabeld` under ``label_key``. Each
    iteration adds one row per case (case id + every metric of :data:`scripts.evaluation.case_metrics.CASE_METRICS`) and
    keeps the RAS-ordered image, label and prediction of the first ``max_figure_cases`` cases. When the run
    completes, it writes into ``output_dir``: ``test_per_case_metrics.csv`` and ``.json``,
    ``comprehensive_test_metrics.json`` (the model file, absolute, and its SHA-256, ``summary_extra``, the number
    of cases, the detection settings, the evaluator's own metrics renamed ``val_*`` -> ``test_*``, then mean / std /
    median / n / n_nan of every metric, then the cohort agreement of PVS counts and volumes, then the same over the
    cases with reference PVS and what was predicted in the others: :func:`scripts.evaluation.summary.by_reference`),
    ``test_count_volume_agreement_300dpi.png`` and ``test_set_visualization_grid_300dpi.jpg``.

    Args:
        output_dir: folder of the result files.
        model_file: the evaluated model, recorded with its SHA-256 (None: not recorded).
        iou_threshold: component IoU above which a predicted PVS can be a true positive (VALDO: 0.1).
        min_size: minimum PVS size in voxels for the detection metrics (0 keeps every component).
        summary_extra: what was evaluated (model file, datalist, pixdim, overlap...), written first in the summary.
        max_figure_cases: number of cases drawn in the figure (the first ones evaluated); 0 draws no figure.
        dpi: resolution of the figure.
        pred_key: key of the native binary prediction.
        label_key: key of the native label.
        image_key: key of the preprocessed image (its source file is read for the figure).
        id_key: key of the case id in the datalist items; the label's file name is used where it is absent.
        regional: scores by brain region where a case has a parcellation (:mod:`scripts.evaluation.regional`):
            its columns in the per-case tables and ``by_region`` in the summary; None, or no parcellation source
            configured: neither.

    Raises:
        ValueError: if ``max_figure_cases`` is negative.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        model_file: str | os.PathLike[str] | None = None,
        iou_threshold: float = DEFAULT_IOU_THRESHOLD,
        min_size: int = 0,
        summary_extra: dict[str, Any] | None = None,
        max_figure_cases: int = 10,
        dpi: int = 300,
        pred_key: str = "pred",
        label_key: str = "label",
        image_key: str = "image",
        id_key: str = "id",
        regional: RegionalScores | None = None,
    ) -> None:
        if max_figure_cases < 0:
            raise ValueError(f"max_figure_cases must be >= 0, not {max_figure_cases}.")
        self.output_dir = Path(output_dir)
        self.model_file = None if model_file is None else Path(model_file).expanduser().resolve()
        self.iou_threshold = iou_threshold
        self.min_size = min_size
        self.summary_extra = dict(summary_extra or {})
        self.max_figure_cases = max_figure_cases
        self.dpi = dpi
        self.pred_key = pred_key
        self.label_key = label_key
        self.image_key = image_key
        self.id_key = id_key
        self.regional = regional if regional is not None and regional.enabled else None
        self.rows: list[dict[str, Any]] = []
        self.figure_cases: list[dict[str, Any]] = []
        self.figure_spacing: tuple[float, ...] = (1.0, 1.0, 1.0)

    def reset(self, engine: Engine) -> None:
        """Forget the cases of a previous run."""
        self.rows, self.figure_cases = [], []

    def handle_case(self, item: Mapping[Hashable, Any]) -> dict[str, Any]:
        """Score one case (a dict with the native prediction, the native label and the preprocessed image).

        Returns:
            The case's row: its id and every metric.

        Raises:
            ValueError: if the prediction and the label differ in shape or affine.
        """
        label = item[self.label_key]
        label_file = source_file(label, self.label_key)
        pred = prediction_mask(convert_to_numpy(item[self.pred_key])[0])
        ref = convert_to_numpy(label)[0].astype(bool)
        affine = convert_to_numpy(label.affine).astype(np.float64)
        check_same_grid(pred, getattr(item[self.pred_key], "affine", None), ref, affine, label_file)
        spacing = label.meta[SPACING_KEY]
        case = str(item.get(self.id_key) or strip_nifti_suffix(Path(label_file).name))
        row = {SUBJECT_KEY: case, **case_metrics(pred, ref, spacing, self.iou_threshold, self.min_size)}
        if self.regional is not None:
            image_file = source_file(item[self.image_key], self.image_key)
            row.update(self.regional.score(case, image_file, label_file, pred, ref))
        self.rows.append(row)
        logger.info("%s: dice %.4f, detection F1 %.4f", case, row["dice"], row["det_f1"])
        rank, world_size = process_rank_and_count()
        if (len(self.rows) - 1) * world_size + rank < self.max_figure_cases:  # among the first cases of the datalist
            image = nib.load(source_file(item[self.image_key], self.image_key)).get_fdata(dtype=np.float32)
            if image.shape != ref.shape:
                raise ValueError(f"image of {case} must have its label's shape {ref.shape}, not {image.shape}.")
            arrays = {"image": image, "label": ref, "pred": pred}
            self.figure_cases.append({SUBJECT_KEY: case, **{k: to_ras(v, affine) for k, v in arrays.items()}})
            if len(self.figure_cases) == 1:
                self.figure_spacing = ras_spacing(spacing, affine)
        return row

    def __call__(self, engine: Engine) -> None:
        """Write the per-case tables, the summary and the figure (on rank 0, with every rank's cases in order).

        Raises:
            ValueError: if no case was evaluated.
        """
        rows = gather_in_order(self.rows)
        figure_cases = gather_in_order(self.figure_cases, total=min(len(rows), self.max_figure_cases))
        if not is_main_process():
            return
        if not rows:
            raise ValueError("no test case was evaluated: the datalist's test split must hold at least one case.")
        model = {}
        if self.model_file is not None:
            model = {"model_file": str(self.model_file), "model_sha256": sha256_file(self.model_file)}
        evaluator_metrics = {
            TEST_PREFIX + name.removeprefix(VALIDATION_PREFIX): round(float(value), RATIO_DECIMALS)
            for name, value in engine.state.metrics.items()
            if isinstance(value, int | float)
        }
        extra = {
            **model,
            **self.summary_extra,
            "n_cases": len(rows),
            "cases": [row[SUBJECT_KEY] for row in rows],
            "iou_threshold": self.iou_threshold,
            "min_pvs_size": self.min_size,
            "evaluator_metrics": evaluator_metrics,
        }
        title = "Test set: prediction vs reference"
        by_region = summarize_by_region(rows, self.regional.names) if self.regional is not None else None
        split = by_reference(rows)
        summary = write_results(
            rows, self.output_dir, RESULT_FILES, extra, self.dpi, title=title, by_region=by_region, by_ref=split
        )
        kept, free = split["with_pvs"], split["pvs_free"]
        logger.info(
            "Dice %.4f over the %d cases, %.4f over the %d with reference PVS; PVS predicted in %d of the %d without",
            summary["dice"]["mean"],
            len(rows),
            kept["metrics"]["dice"]["mean"] if kept["n_cases"] else float("nan"),
            kept["n_cases"],
            len(free["cases_with_prediction"]),
            free["n_cases"],
        )
        if kept["n_cases"]:
            lost = kept["metrics"]
            logger.info(
                "Dice lost over the cases with reference PVS: %.4f to PVS drawn too wide or long, %.4f to specks, "
                "%.4f to PVS drawn too thin or short, %.4f to PVS missed",
                *(lost[name]["mean"] for name in VOXEL_ERROR_METRICS),
            )
        if figure_cases:
            save_visualization_grid(figure_cases, self.output_dir / FIGURE_FILE, self.dpi, self.figure_spacing)
        logger.info("Wrote the test metrics of %d cases to %s", len(rows), self.output_dir)
