"""Write each segmented case in its input's original space, and the PVS burden table of the run.

The inference postprocessing maps the prediction back to the input's voxel grid with ``Invertd`` (through
CropForeground, Spacing and Orientation). Here it is written with the input file's own affine, qform and sform
(and their codes), so a mask has exactly its input's shape, affine and orientation. Every file is written to
a temporary file beside its destination and renamed into place (:func:`scripts.io.atomic_write`), then its
BIDS sidecar (:class:`scripts.inference.derivatives.Provenance`). Under torchrun every rank writes the masks of its
own inputs and rank 0 writes the table of all of them, in input order, and the ``dataset_description.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.utils import ImageMetaKey, convert_to_numpy

from scripts.case_handler import PerCaseHandler
from scripts.distributed import gather_in_order, is_main_process
from scripts.inference.derivatives import Provenance
from scripts.inference.inference_inputs import CONTRAST_COLUMN, DONE_KEY, ENTITY_COLUMNS, pending
from scripts.inference.shards import Shard, write_case_record, write_manifest
from scripts.measurement.measure import PVSMeasurement, measurement_files
from scripts.measurement.roi import ROI_EROSION_MM, roi_burden, roi_mask, roi_rule
from scripts.nifti import save_like, voxel_volume_mm3
from scripts.regions import estimate_brain_mask
from scripts.settings import as_bool
from scripts.tables import write_case_table

logger = logging.getLogger("pvs_bundle.prediction_writer")

# subject, session, acq, run (BIDS entities), contrast (the suffix the input's name states), image (its file name)
ID_COLUMNS: tuple[str, ...] = (*(column for column, _ in ENTITY_COLUMNS), CONTRAST_COLUMN, "image")
TEXT_COLUMNS: tuple[str, ...] = ("roi",)  # the counting rule of each row (scripts.measurement.roi), written last
BURDEN_NAME = "pvs_burden"  # the burden table: pvs_burden.csv and pvs_burden.json in the output folder


def burden_files(output_dir: str | Path) -> tuple[Path, Path]:
    """The burden table's CSV and JSON in ``output_dir``."""
    return Path(output_dir) / f"{BURDEN_NAME}.csv", Path(output_dir) / f"{BURDEN_NAME}.json"


def cohort_files(output_dir: str | Path) -> list[Path]:
    """Every table and report an inference run writes once for all its inputs in ``output_dir``."""
    return [*burden_files(output_dir), *measurement_files(output_dir)]


class PredictionWriter(PerCaseHandler):
    """Write every case's PVS mask (and probability map) in its input's space, then the burden table.

    Attach to the inference evaluator. Per item, the postprocessing must leave the binary mask under ``pred``,
    the probability map under ``prob`` and the binary head mask under ``head``, all on the input's grid; the
    datalist item gives the output paths under ``mask`` and ``probseg``, the case name under ``case`` and the
    input's BIDS entities under ``row`` (see :func:`scripts.inference.inference_inputs.inference_datalist`). When
    the run completes, one row per input (:data:`ID_COLUMNS`, then
    :data:`scripts.measurement.pvs_burden.BURDEN_COLUMNS`, :data:`scripts.measurement.roi.ROI_COLUMNS`) is written as
    CSV and JSON, with the recorded rows of the inputs skipped by ``--skip_existing`` in their place.
    With a ``measurement`` stage, each case segmented is also measured by it (census, regions, QC report; its brain
    mask and region of interest give the burden); without one, PVS are counted inside the brain mask estimated from
    the head mask, eroded by :data:`scripts.measurement.roi.ROI_EROSION_MM`.

    Args:
        output_dir: the folder of the burden table (``pvs_burden.csv`` and ``.json``, :func:`burden_files`).
        save_probabilities: whether to write the probability maps (float32) beside the masks.
        provenance: writes each mask's BIDS sidecar and the output folder's ``dataset_description.json``.
        inputs: every input of the run (:func:`scripts.inference.inference_inputs.inference_datalist`), skipped
            ones included, giving the table's order; None: the cases segmented, in the order segmented.
        measurement: the measurement stage (:class:`scripts.measurement.measure.PVSMeasurement`), or None.
        shard: a job of a job array (:mod:`scripts.inference.shards`): each case's rows are kept in the shard's
            folder and the tables are left to ``run merging`` (:func:`scripts.inference.merging.merge_shards`);
            None: the tables are written at the end.
    """

    def __init__(
        self,
        output_dir: str | Path,
        save_probabilities: bool | str = False,
        provenance: Provenance | None = None,
        inputs: Sequence[Mapping[str, Any]] | None = None,
        measurement: PVSMeasurement | None = None,
        shard: Shard | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.table_csv, self.table_json = burden_files(output_dir)
        self.save_probabilities = as_bool(save_probabilities, "save_probabilities")
        self.provenance = provenance
        self.inputs = None if inputs is None else list(inputs)
        self.measurement = measurement
        self.shard = shard
        self.rows: list[dict[str, Any]] = []

    def reset(self, engine: Engine) -> None:
        """Forget the cases of a previous run; a shard's manifest says it has started, not finished."""
        self.rows = []
        if self.measurement is not None:
            self.measurement.reset()
        self._write_manifest(done=False)

    def handle_case(self, item: Mapping[Hashable, Any]) -> dict[str, Any]:
        """Write one case (see :meth:`write_case`) and keep its table row (in a shard, also in a file)."""
        row = self.write_case(item)
        self.rows.append(row)
        if self.shard is not None:
            measured = self.measurement.records[-1] if self.measurement is not None else {}
            record = {"row": row, **{k: measured.get(k) for k in ("census", "regions", "subject")}}
            write_case_record(self.shard, self.output_dir, item, record)
        return row

    def _write_manifest(self, done: bool) -> None:
        if self.shard is None or not is_main_process():
            return
        settings = self.provenance.run_settings() if self.provenance is not None else {}
        if self.measurement is not None:
            regions, parcellations = list(self.measurement.regions.names), str(self.measurement.parcellation_dir)
            roi = {"erosion_mm": self.measurement.roi_erosion_mm, "regions": self.measurement.roi_regions}
            settings = {**settings, "regions": regions, "parcellations": parcellations, "roi": roi}
        write_manifest(self.shard, self.output_dir, self.inputs or [], settings, done)

    def write_case(self, item: Mapping[Hashable, Any]) -> dict[str, Any]:
        """Write one case's outputs and return its table row.

        Raises:
            ValueError: if the image does not record its source file, or a prediction is not on its grid.
        """
        image = item["image"]
        source = image.meta.get(ImageMetaKey.FILENAME_OR_OBJ) if isinstance(image, MetaTensor) else None
        if not isinstance(source, str):
            raise ValueError(f"image must be a MetaTensor that records its source file, not {type(image).__name__}.")
        reference = nib.load(source)
        mask = convert_to_numpy(item["pred"])[0] > 0.5
        head = convert_to_numpy(item["head"])[0] > 0.5
        prob = convert_to_numpy(item["prob"])[0]
        save_like(mask.astype(np.uint8), reference, item["mask"])
        if self.save_probabilities:
            save_like(prob.astype(np.float32), reference, item["probseg"])
        if self.measurement is not None:
            burden = self.measurement.measure_case(item["case"], reference, source, mask, prob, head)
        else:
            brain = estimate_brain_mask(head, reference.affine)
            roi = roi_mask(brain, reference.affine)
            rule = roi_rule(ROI_EROSION_MM, None, False)
            burden = roi_burden(mask, brain, roi, voxel_volume_mm3(reference.affine), rule)
        row = {**item["row"], **burden}
        if self.provenance is not None:
            self.provenance.write_sidecar(source, item["mask"], row)
        logger.info(
            "%s: %d PVS, %.1f mm³ (volume fraction %.5f of the brain mask) -> %s",
            item["case"],
            row["pvs_count"],
            row["pvs_volume_mm3"],
            row["pvs_volume_fraction"],
            item["mask"],
        )
        return row

    def __call__(self, engine: Engine | None = None) -> None:
        """Write the burden table of every input (on rank 0, gathering every rank's rows) and the dataset description.

        Call it without an engine on a rank that had nothing to segment (every rank must call it once).

        Raises:
            ValueError: if no case was segmented or recorded.
        """
        if self.inputs is None:
            rows = gather_in_order(self.rows)
        else:
            segmented = iter(gather_in_order(self.rows, len(pending(self.inputs))))
            rows = [item[DONE_KEY] if DONE_KEY in item else next(segmented) for item in self.inputs]
        if self.measurement is not None:
            self.measurement.gather(None if self.inputs is None else len(pending(self.inputs)))
        if self.shard is not None:
            self._write_manifest(done=True)
            if self.provenance is not None and is_main_process():
                self.provenance.write_dataset_description()
            logger.info(
                "%s: %d case(s) in %s. When every shard has finished: python -m monai.bundle run merging "
                "--config_file configs/inference.json --output_dir %s",
                self.shard.name,
                len(rows),
                self.shard.folder(self.output_dir),
                self.output_dir,
            )
            return
        if not is_main_process():
            return
        if not rows:
            raise ValueError("no case was segmented: the inputs must hold at least one image.")
        write_case_table(rows, self.table_csv, self.table_json, id_columns=ID_COLUMNS, text_columns=TEXT_COLUMNS)
        if self.measurement is not None:
            self.measurement.write()
        if self.provenance is not None:
            self.provenance.write_dataset_description()
        counts = sorted(row["pvs_count"] for row in rows)
        logger.info(
            "%d case(s): median %d PVS (range %d-%d). Wrote %d mask(s) under %s and the PVS table %s, %s.",
            len(rows),
            counts[len(counts) // 2],
            counts[0],
            counts[-1],
            len(rows) if self.inputs is None else len(pending(self.inputs)),
            self.table_csv.parent,
            self.table_csv,
            self.table_json,
        )
