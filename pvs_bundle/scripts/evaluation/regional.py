"""Evaluation by brain region, for cases with a parcellation: Dice, VALDO detection and PVS counts per region.

A model can hold in the centrum semiovale and fail in the basal ganglia, and studies publish PVS by region: users
of PVS tools ask for regional validation (SHiVAi issue 28). With ``parcellation_dir`` or ``parcellation_files``
(found per case as the measurement finds them: :func:`scripts.regions.parcellation_for`), each case's parcellation
is resampled to its label's grid (nearest neighbour) and mapped to the regions of the region map
(:data:`scripts.regions.DEFAULT_REGIONS`, the ``regions`` setting). For each region R except ``outside``:

- ``dice_<R>``: Dice of the prediction and the reference restricted to R (1 when neither has a voxel there);
- ``det_f1_<R>``: VALDO detection F1 of the masks restricted to R (a PVS crossing a region's border is split at it,
  as the measurement splits it); NaN when R holds no PVS of either mask;
- ``ref_count_<R>`` and ``pred_count_<R>``: PVS (26-connected components) of each mask in R.

A case without a parcellation gets NaN in every regional column, and a log line says why; the summary's
``by_region`` gives, per region, the mean Dice and detection F1 over the cases that have one, and ICC(A,1) of the
per-case counts (:func:`scripts.agreement.agreement`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from scripts.agreement import agreement
from scripts.evaluation.detection import DEFAULT_IOU_THRESHOLD, detection_metrics
from scripts.evaluation.metrics import overlap_metrics
from scripts.regions import OUTSIDE_REGION, RegionMap, parcellation_for, parcellation_in_grid, region_codes, region_map

logger = logging.getLogger("pvs_bundle.regional")

REGIONAL_METRICS: tuple[str, ...] = ("dice", "det_f1", "ref_count", "pred_count")


class RegionalScores:
    """Score cases by region when a parcellation is configured (see the module docstring).

    Args:
        regions: the region map (``{region: [labels]}``).
        parcellation_dir: folder searched for each case's parcellation (None: only ``parcellation_files``).
        parcellation_files: case id -> parcellation file.
        iou_threshold: VALDO's IoU for a true positive.
        min_size: minimum PVS size in voxels for detection (0 keeps all).

    Raises:
        ValueError: if the region map is invalid or a listed parcellation file does not exist.
    """

    def __init__(
        self,
        regions: Mapping[str, Sequence[int | str]],
        parcellation_dir: str | Path | None = None,
        parcellation_files: Mapping[str, str | Path] | None = None,
        iou_threshold: float = DEFAULT_IOU_THRESHOLD,
        min_size: int = 0,
    ) -> None:
        self.regions: RegionMap = region_map(regions)
        self.parcellation_dir = None if parcellation_dir in (None, "") else Path(parcellation_dir)
        self.parcellation_files = {str(k): Path(v) for k, v in (parcellation_files or {}).items()}
        missing = [str(p) for p in self.parcellation_files.values() if not p.is_file()]
        if missing:
            raise ValueError(f"parcellation_files must exist, not {missing} (no such file).")
        self.iou_threshold, self.min_size = iou_threshold, min_size

    @property
    def enabled(self) -> bool:
        """Whether a parcellation source is configured (otherwise no regional column is written)."""
        return self.parcellation_dir is not None or bool(self.parcellation_files)

    @property
    def names(self) -> tuple[str, ...]:
        """The regions scored: the map's, without ``outside``."""
        return tuple(name for name in self.regions.names if name != OUTSIDE_REGION)

    def columns(self) -> list[str]:
        """The per-case columns, in order: each metric of :data:`REGIONAL_METRICS` for each region."""
        return [f"{metric}_{name}" for name in self.names for metric in REGIONAL_METRICS]

    def score(
        self, case: str, image_file: str | Path, label_file: str | Path, pred: np.ndarray, ref: np.ndarray
    ) -> dict:
        """The regional columns of one case (NaN without a parcellation).

        Args:
            case: the case id (the key of ``parcellation_files``).
            image_file: the case's image, whose BIDS entities find its parcellation.
            label_file: the reference label file, whose grid ``pred`` and ``ref`` lie on.
            pred: binary prediction on the label's grid.
            ref: binary reference.

        Raises:
            ValueError: if the parcellation cannot be read or does not overlap the label (another head).
        """
        path, origin = parcellation_for(case, image_file, self.parcellation_dir, self.parcellation_files)
        if path is None:
            logger.info("%s: no regional scores (%s).", case, origin)
            return dict.fromkeys(self.columns(), math.nan)
        labels = parcellation_in_grid(path, nib.load(str(label_file)), str(label_file))
        codes = region_codes(labels, self.regions, path)
        row: dict[str, float] = {}
        for name in self.names:
            inside = codes == self.regions.names.index(name)
            p, r = pred & inside, ref & inside
            detection = detection_metrics(p, r, self.iou_threshold, self.min_size)
            row[f"dice_{name}"] = overlap_metrics(torch.from_numpy(p), torch.from_numpy(r), ("dice",))["dice"]
            row[f"det_f1_{name}"] = detection["det_f1"]
            row[f"ref_count_{name}"] = detection["ref_count"]
            row[f"pred_count_{name}"] = detection["pred_count"]
        return row


def summarize_by_region(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per region: cases with a parcellation, mean Dice, mean detection F1 (cases with PVS there), count agreement.

    Args:
        rows: per-case rows holding the columns of :meth:`RegionalScores.columns`.
        names: the regions.
    """
    summary = {}
    for name in names:
        scored = [row for row in rows if not math.isnan(float(row[f"dice_{name}"]))]
        f1 = [float(row[f"det_f1_{name}"]) for row in scored if not math.isnan(float(row[f"det_f1_{name}"]))]
        counts = agreement([row[f"pred_count_{name}"] for row in scored], [row[f"ref_count_{name}"] for row in scored])
        summary[name] = {
            "n_cases": len(scored),
            "dice_mean": float(np.mean([float(row[f"dice_{name}"]) for row in scored])) if scored else math.nan,
            "det_f1_mean": float(np.mean(f1)) if f1 else math.nan,
            "ref_pvs": int(sum(row[f"ref_count_{name}"] for row in scored)),
            "pred_pvs": int(sum(row[f"pred_count_{name}"] for row in scored)),
            "count_icc_a1": counts["icc_a1"],
        }
    return summary
