"""The measurement stage of a run: per-PVS census, regional burden and the QC report of every segmented case.

:class:`PVSMeasurement` is called by the inference's :class:`scripts.inference.prediction_writer.PredictionWriter`
once per case (mask, probabilities and head mask on the input's grid) and once at the end of the run, when it
writes, atomically:

- the census (:data:`scripts.measurement.census.CENSUS_COLUMNS`), one row per PVS, CSV and JSON;
- the region table (:data:`REGION_COLUMNS`), one row per case and region, CSV and JSON;
- the QC report (:mod:`scripts.reports.qc_report`), one HTML file.

Regions and the intracranial mask come from the case's parcellation (:mod:`scripts.regions`): from
``parcellation_files`` (case -> file), else found under ``parcellation_dir``. Without one, every PVS is in region
``unknown``, the brain mask is :func:`scripts.regions.estimate_brain_mask`, and the report says why.
PVS are counted only inside the region of interest (:mod:`scripts.measurement.roi`: the brain, eroded by
``roi#erosion_mm``, and with a parcellation the ``roi#regions`` chosen); the parts outside it are census rows of
region ``outside`` and the burden's ``outside_roi_*`` columns, never counted.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from scripts.distributed import gather_in_order
from scripts.measurement.census import CENSUS_COLUMNS, UNKNOWN_REGION, census_rows, measure_components
from scripts.measurement.pvs_burden import burden_of_sizes
from scripts.measurement.roi import check_roi, outside_columns, roi_mask, roi_rule
from scripts.nifti import voxel_size, voxel_volume_mm3
from scripts.regions import (
    OUTSIDE_REGION,
    estimate_brain_mask,
    parcellation_for,
    parcellation_in_grid,
    region_codes,
    region_map,
)
from scripts.reports import qc_report
from scripts.settings import as_volume_index
from scripts.tables import write_table

logger = logging.getLogger("pvs_bundle.measurement")

REGION_COLUMNS: tuple[str, ...] = (
    "case",
    "region",
    "pvs_count",
    "pvs_volume_mm3",
    "region_volume_mm3",
    "pvs_volume_fraction",
)
CENSUS_NAME, REGIONS_NAME, REPORT_NAME = "pvs_census", "pvs_regions", "qc_report.html"
"""The cohort files the stage writes in its output folder: census and region tables (CSV and JSON), QC report."""
OVERLAY_REGIONS: tuple[str, ...] = ("basal_ganglia", "cerebral_white_matter")
"""Regions whose PVS-richest slices the report shows, when the region map has them."""


def measurement_files(output_dir: str | Path) -> tuple[Path, Path, Path, Path, Path]:
    """The census CSV and JSON, the region table CSV and JSON and the QC report in ``output_dir``."""
    folder = Path(output_dir)
    names = (f"{CENSUS_NAME}.csv", f"{CENSUS_NAME}.json", f"{REGIONS_NAME}.csv", f"{REGIONS_NAME}.json", REPORT_NAME)
    return tuple(folder / name for name in names)  # type: ignore[return-value]


class PVSMeasurement:
    """Measure every case of a run and write the census, the region table and the QC report.

    Args:
        regions: the label-to-region map (``{region: [labels]}``, :func:`scripts.regions.region_map`).
        output_dir: the folder of the census (``pvs_census.csv`` / ``.json``), the region table
            (``pvs_regions.csv`` / ``.json``) and the QC report (``qc_report.html``): :func:`measurement_files`.
        report: whether to write the QC report.
        parcellation_dir: folder searched for each case's parcellation (None: only ``parcellation_files``).
        parcellation_files: case id (output stem, e.g. ``sub-001``) -> parcellation file.
        patch_size: the sliding window in voxels of ``pixdim``, for the ``too_small`` flag.
        pixdim: the network's voxel size in mm.
        volume_index: the volume segmented in 4D inputs (drawn in the report; None: the first).
        roi: where PVS are counted (:mod:`scripts.measurement.roi`): ``{"erosion_mm": mm, "regions": [names] or
            None}``; None: the brain eroded by :data:`scripts.measurement.roi.ROI_EROSION_MM`.

    Raises:
        ValueError: if the region map is invalid or a listed parcellation file does not exist.
    """

    def __init__(
        self,
        regions: Mapping[str, Sequence[int | str]],
        output_dir: str | Path,
        report: bool = True,
        parcellation_dir: str | Path | None = None,
        parcellation_files: Mapping[str, str | Path] | None = None,
        patch_size: Sequence[int] = (96, 96, 96),
        pixdim: Sequence[float] = (0.8, 0.8, 0.8),
        volume_index: int | str | None = None,
        roi: Mapping[str, Any] | None = None,
    ) -> None:
        self.regions = region_map(regions)
        self.roi_erosion_mm, self.roi_regions = check_roi(roi, self.regions.names)
        files = measurement_files(output_dir)
        self.census_csv, self.census_json, self.region_csv, self.region_json = files[:4]
        self.report_html = files[4] if report else None
        self.parcellation_dir = None if parcellation_dir in (None, "") else Path(parcellation_dir)
        self.parcellation_files = {str(k): Path(v) for k, v in (parcellation_files or {}).items()}
        missing = [str(p) for p in self.parcellation_files.values() if not p.is_file()]
        if missing:
            raise ValueError(f"parcellation_files must exist, not {missing} (no such file).")
        self.window_mm = np.asarray(patch_size, dtype=np.float64) * np.asarray(pixdim, dtype=np.float64)
        self.volume_index = as_volume_index(volume_index) or 0
        self.reset()

    def reset(self) -> None:
        """Forget the cases of a previous run."""
        self.census: list[dict[str, Any]] = []
        self.region_rows: list[dict[str, Any]] = []
        self.subjects: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []

    def gather(self, total: int | None = None) -> None:
        """Under torchrun, collect every rank's measurements, in input order (call on every rank).

        Args:
            total: the number of cases measured by all ranks together (default: the sum of the shares).
        """
        records = gather_in_order(self.records, total)
        self.census = [row for record in records for row in record["census"]]
        self.region_rows = [row for record in records for row in record["regions"]]
        self.subjects = [record["subject"] for record in records if record["subject"] is not None]

    def parcellation_of(self, case: str, image: str | Path) -> tuple[Path | None, str]:
        """The parcellation of a case and where it came from (or why there is none)."""
        return parcellation_for(case, image, self.parcellation_dir, self.parcellation_files)

    def measure_case(
        self,
        case: str,
        reference: nib.spatialimages.SpatialImage,
        source: str | Path,
        mask: np.ndarray,
        prob: np.ndarray | None,
        head: np.ndarray,
    ) -> dict[str, float]:
        """Measure one case and return its burden (:data:`scripts.measurement.pvs_burden.BURDEN_COLUMNS`).

        Args:
            case: the case id.
            reference: the input image (its grid is the mask's).
            source: the input file, for messages and the parcellation search.
            mask: binary PVS mask on the input's grid.
            prob: probability map on the input's grid, or None.
            head: the preprocessing's head mask on the input's grid.

        Returns:
            The burden row, its fraction taken of the parcellation's brain, else of the estimated brain mask.

        Raises:
            ValueError: if the parcellation cannot be read or does not overlap the input.
        """
        affine = np.asarray(reference.affine, dtype=np.float64)
        voxel_mm3 = voxel_volume_mm3(affine)
        parcellation, origin = self.parcellation_of(case, source)
        names = self.regions.names
        if parcellation is not None:
            labels = parcellation_in_grid(parcellation, reference, str(source))
            brain, codes = labels > 0, region_codes(labels, self.regions, parcellation)
        else:
            brain, codes, names = estimate_brain_mask(head, affine), None, (UNKNOWN_REGION, OUTSIDE_REGION)
        roi = roi_mask(brain, affine, self.roi_erosion_mm, codes, names, self.roi_regions)
        rule = roi_rule(self.roi_erosion_mm, self.roi_regions, parcellation is not None)
        pvs = mask >= 0.5
        _, columns = measure_components(pvs & roi, affine, prob, codes, names)
        _, outside = measure_components(pvs & ~roi, affine, prob)
        outside["region"] = np.full(len(outside["voxels"]), OUTSIDE_REGION, dtype=object)
        rows = census_rows(case, {k: np.concatenate([columns[k], outside[k]]) for k in columns})
        burden = {
            **burden_of_sizes(columns["voxels"], int(np.count_nonzero(brain)), voxel_mm3),
            **outside_columns(rule, int(np.count_nonzero(roi)), outside["voxels"], voxel_mm3),
            "brain_from_parcellation": int(parcellation is not None),
        }
        region_rows = self._region_rows(case, rows, codes, names, voxel_mm3)
        subject = None
        if self.report_html is not None:
            subject = self._subject(case, reference, mask, brain, codes, burden, region_rows, parcellation, origin)
            self.subjects.append(subject)
        self.census += rows
        self.region_rows += region_rows
        self.records.append({"census": rows, "regions": region_rows, "subject": subject})
        return burden

    def _region_rows(
        self, case: str, rows: Sequence[Mapping[str, Any]], codes: np.ndarray | None, names: Sequence[str], voxel: float
    ) -> list[dict[str, Any]]:
        region_voxels = np.bincount(codes.ravel(), minlength=len(names)) if codes is not None else None
        table = []
        for code, name in enumerate(names):
            members = [row for row in rows if row["region"] == name]
            pvs_mm3 = float(sum(row["volume_mm3"] for row in members))
            region_mm3 = math.nan if region_voxels is None or name == OUTSIDE_REGION else region_voxels[code] * voxel
            fraction = pvs_mm3 / region_mm3 if region_mm3 > 0 else math.nan
            table.append(
                {
                    "case": case,
                    "region": name,
                    "pvs_count": len(members),
                    "pvs_volume_mm3": pvs_mm3,
                    "region_volume_mm3": float(region_mm3),
                    "pvs_volume_fraction": fraction,
                }
            )
        return table

    def _subject(
        self,
        case: str,
        reference: nib.spatialimages.SpatialImage,
        mask: np.ndarray,
        brain: np.ndarray,
        codes: np.ndarray | None,
        burden: Mapping[str, float],
        region_rows: list[dict[str, Any]],
        parcellation: Path | None,
        origin: str,
    ) -> dict[str, Any]:
        """What the report shows of one case; only the figure (a PNG) is kept, not the volumes."""
        data = reference.dataobj[..., self.volume_index] if len(reference.shape) == 4 else reference.dataobj
        image = np.asarray(data, dtype=np.float32).reshape(reference.shape[:3])
        overlay = [
            (n, codes == self.regions.names.index(n))
            for n in OVERLAY_REGIONS
            if codes is not None and n in self.regions.names
        ]
        extent_mm = np.asarray(reference.shape[:3]) * voxel_size(reference.affine)
        flags = [
            name
            for name, raised in (
                ("no_pvs", burden["pvs_count"] == 0),
                ("too_small", bool((extent_mm < self.window_mm).any())),
                ("low_contrast", qc_report.contrast(image, brain) < qc_report.LOW_CONTRAST_LIMIT),
                ("no_parcellation", parcellation is None),
            )
            if raised
        ]
        return {
            "case": case,
            "figure": qc_report.overlay_figure(image, mask, reference.affine, overlay or [("all PVS", None)]),
            "flags": flags,
            "burden": dict(burden),
            "parcellation": str(parcellation) if parcellation else "",
            "origin": origin,
            "region_rows": region_rows,
            "region_columns": REGION_COLUMNS[1:],
        }

    def write(self) -> None:
        """Write the census, the region table and the report of every case measured."""
        write_table(self.census, CENSUS_COLUMNS, self.census_csv, self.census_json)
        write_table(self.region_rows, REGION_COLUMNS, self.region_csv, self.region_json)
        logger.info(
            "Wrote the census of %d PVS to %s and the region table to %s",
            len(self.census),
            self.census_csv,
            self.region_csv,
        )
        if self.report_html is not None and self.subjects:
            self._write_report()

    def _write_report(self) -> None:
        outliers = qc_report.robust_outliers([s["burden"]["pvs_volume_fraction"] for s in self.subjects])
        cohort = []
        for subject, outlier in zip(self.subjects, outliers, strict=True):
            if outlier:
                subject["flags"].insert(1, "fraction_outlier")
            by_region = {row["region"]: row for row in subject["region_rows"]}
            cohort.append(
                {
                    "case": subject["case"],
                    **{k: subject["burden"][k] for k in ("pvs_count", "pvs_volume_mm3", "brain_volume_mm3")},
                    "pvs_volume_fraction": subject["burden"]["pvs_volume_fraction"],
                    **{f"{n}_count": by_region[n]["pvs_count"] for n in OVERLAY_REGIONS if n in by_region},
                    **{f"{n}_mm3": by_region[n]["pvs_volume_mm3"] for n in OVERLAY_REGIONS if n in by_region},
                    "parcellation": Path(subject["parcellation"]).name if subject["parcellation"] else "none",
                    "flags": ", ".join(subject["flags"]),
                }
            )
        regional = [f"{n}_{s}" for s in ("count", "mm3") for n in OVERLAY_REGIONS if n in self.regions.names]
        columns = ["case", "pvs_count", "pvs_volume_mm3", "brain_volume_mm3", "pvs_volume_fraction", *regional]
        missing = [s for s in self.subjects if not s["parcellation"]]
        notes = [
            f"{len(self.subjects)} case(s); {len(self.census)} PVS. Volumes in mm³; fractions are PVS volume / "
            "brain (intracranial) volume, not percentages."
        ]
        if missing:
            notes.append(
                f"No parcellation for {len(missing)} case(s), so their PVS are in region 'unknown' and their brain "
                "mask is estimated from the head mask: " + "; ".join(f"{s['case']} ({s['origin']})" for s in missing)
            )
        qc_report.render_report(
            self.report_html,
            "PVS QC report",
            cohort,
            [*columns, "parcellation", "flags"],
            self.subjects,
            qc_report.distribution_figure([s["burden"] for s in self.subjects], self.census),
            notes,
        )
        logger.info("Wrote the QC report of %d case(s) to %s", len(self.subjects), self.report_html)
