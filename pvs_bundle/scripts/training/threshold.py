"""The probability threshold chosen on the validation split, stored with the model it was chosen for.

At every validation :class:`ThresholdSweep` scores the validation cases at a grid of thresholds and chooses one
(:func:`choose_threshold`); :class:`scripts.training.checkpoint.BestModelSaver` writes it into ``model.json`` beside
the best model, where inference and evaluation read it (``threshold: "auto"``).

A threshold tuned on one or two validation subjects follows their noise (issue 23: 0.65 chosen on one subject cut
voxel recall on the test set). So the choice pools the voxels of every validation case (one Dice over all of them,
not a mean of a few case Dice) and keeps 0.5 unless the validation references hold at least ``min_reference_pvs``
PVS (connected components). Since 0.11.0 it also leans to 0.5: of the thresholds within ``tolerance`` (0.01) of the
best pooled Dice, the one nearest 0.5. Issue 23's ablation (``benchmarks/ablation.py``: one validation subject of 52
or 118 PVS) stored thresholds from 0.15 to 0.9 for ten models; on the test cases with PVS, 0.5 did better on the
eight without blob loss (by 0.008 to 0.025 Dice) and worse on the two with it (by 0.028 and 0.003); in 0.9.0 a
tolerance of 0.005 had cost held-out Dice 0.005 (T2w, 0.8 mm) and 0.029 (1.0 mm) on the demo generator.
``threshold_tolerance`` 0 stores the best pooled Dice.

At the chosen threshold the same validation also chooses the smallest PVS kept, in mm³
(:mod:`scripts.training.size_rule`), stored beside the threshold as ``min_pvs_mm3``: each case's probabilities above
the lowest threshold are kept (sparse) until the threshold is known.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from scripts.masks import label_components
from scripts.training.size_rule import SIZE_CUTS_MM3, choose_min_size, detection_by_cut

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
THRESHOLDS: tuple[float, ...] = tuple(round(0.1 + 0.05 * i, 2) for i in range(17))  # 0.1, 0.15, …, 0.9
MIN_REFERENCE_PVS = 50
"""Validation PVS (reference components, all cases together) below which the tuned threshold is not trusted."""
TOLERANCE = 0.01
"""Pooled-Dice margin within which a threshold nearer 0.5 is preferred to the best one (0: none; see the docstring)."""


def choose_threshold(
    thresholds: Sequence[float],
    pooled_dice: Sequence[float],
    reference_pvs: int,
    min_reference_pvs: int = MIN_REFERENCE_PVS,
    tolerance: float = TOLERANCE,
) -> tuple[float, str]:
    """The threshold to store, and the rule that chose it.

    Args:
        thresholds: the thresholds tried.
        pooled_dice: the Dice of all validation voxels together at each.
        reference_pvs: PVS (connected components) in the validation references, all cases together.
        min_reference_pvs: below this, 0.5 is kept (the grid's threshold nearest 0.5).
        tolerance: of the thresholds within this of the best pooled Dice, the one nearest 0.5 is chosen (0: the
            best, ties to the one nearest 0.5).

    Returns:
        ``(threshold, rule)``.

    Raises:
        ValueError: if the two sequences differ in length or are empty.
    """
    if len(thresholds) != len(pooled_dice) or not len(thresholds):
        raise ValueError(
            f"thresholds and dice must be non-empty and of one length, not {len(thresholds)}, {len(pooled_dice)}."
        )
    nearest_half = sorted(range(len(thresholds)), key=lambda i: abs(thresholds[i] - DEFAULT_THRESHOLD))
    if reference_pvs < min_reference_pvs:
        return float(thresholds[nearest_half[0]]), f"{reference_pvs} validation PVS < {min_reference_pvs}: kept 0.5"
    best = max(pooled_dice)
    chosen = next(i for i in nearest_half if pooled_dice[i] >= best - tolerance)
    lean = f", nearest 0.5 within {tolerance} of it" if tolerance > 0 else ""
    return float(thresholds[chosen]), f"best pooled Dice{lean} ({reference_pvs} validation PVS)"


class ThresholdSweep:
    """Validation handler: the Dice at each threshold of a grid, per case and pooled, and the threshold chosen.

    Reads each case's ``logits`` and ``label`` from the evaluator's output (the validation postprocessing keeps the
    logits under that name), so it scores exactly the predictions the key metric scores. Cases with an empty
    reference count in the mean case Dice as the key metric counts them (Dice 1 for an empty prediction, else 0).
    Under DDP the sums are reduced over the ranks, so every rank holds the same result. After each validation
    ``engine.state.metrics["val_dice_tuned"]`` holds the mean case Dice at the chosen threshold,
    ``val_threshold`` the threshold (:func:`choose_threshold`), and :attr:`result` the record stored with the model.

    Args:
        thresholds: the grid of thresholds to try.
        logits_key: output key of the logits.
        label_key: output key of the reference.
        min_reference_pvs: validation PVS below which 0.5 is kept (:data:`MIN_REFERENCE_PVS`), and no PVS removed.
        tolerance: the pooled-Dice margin of the lean to 0.5 (:data:`TOLERANCE`).
        size_cuts: the smallest-PVS cuts tried, mm³ (:data:`~scripts.training.size_rule.SIZE_CUTS_MM3`).
    """

    def __init__(
        self,
        thresholds: Sequence[float] = THRESHOLDS,
        logits_key: str = "logits",
        label_key: str = "label",
        min_reference_pvs: int = MIN_REFERENCE_PVS,
        tolerance: float = TOLERANCE,
        size_cuts: Sequence[float] = SIZE_CUTS_MM3,
    ) -> None:
        values = [float(t) for t in thresholds]
        if not values or not all(0.0 < t < 1.0 for t in values):
            raise ValueError(f"thresholds must be numbers in (0, 1), not {list(thresholds)}.")
        self.thresholds = values
        self.logits_key = logits_key
        self.label_key = label_key
        self.min_reference_pvs = int(min_reference_pvs)
        self.tolerance = float(tolerance)
        # per threshold: summed case Dice, overlap voxels, predicted voxels; then reference voxels, PVS, cases
        self._sums = np.zeros((3, len(values)))
        self._totals = np.zeros(3)
        self.size_cuts = [float(c) for c in size_cuts]
        self._cases: list[tuple[tuple[int, ...], tuple[float, ...], np.ndarray, np.ndarray, np.ndarray]] = []
        self.result: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        """Register on the validator: reset at the start, score each batch, choose at the end."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._score)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._choose)

    def _reset(self, engine: Engine) -> None:
        self._sums[:] = 0.0
        self._totals[:] = 0.0
        self._cases = []

    def case_counts(self, logits: torch.Tensor, label: torch.Tensor) -> tuple[np.ndarray, int]:
        """One case at every threshold: rows Dice, overlap voxels, predicted voxels; and its reference voxels."""
        return self._counts(torch.sigmoid(torch.as_tensor(logits).float()).reshape(-1), label)

    def _counts(self, prob: torch.Tensor, label: torch.Tensor) -> tuple[np.ndarray, int]:
        ref = torch.as_tensor(label).reshape(-1) > 0.5
        ref_sum = int(ref.sum())
        ref_prob = prob[ref]
        counts = np.empty((3, len(self.thresholds)))
        for i, t in enumerate(self.thresholds):
            pred_sum = int((prob >= t).sum())
            overlap = int((ref_prob >= t).sum())
            total = pred_sum + ref_sum
            counts[:, i] = (2.0 * overlap / total if total else 1.0), overlap, pred_sum
        return counts, ref_sum

    def case_dice(self, logits: torch.Tensor, label: torch.Tensor) -> np.ndarray:
        """The Dice of one case at every threshold."""
        return self.case_counts(logits, label)[0][0]

    def _score(self, engine: Engine) -> None:
        output = engine.state.output
        for item in output if isinstance(output, list | tuple) else [output]:
            logits = item[self.logits_key]
            prob = torch.sigmoid(torch.as_tensor(logits).detach().float()).reshape(-1)
            counts, ref_sum = self._counts(prob, item[self.label_key])
            self._sums += counts
            label = torch.as_tensor(item[self.label_key]).detach().cpu().numpy()
            self._totals += (ref_sum, label_components(label.reshape(label.shape[-3:]))[1], 1)
            self._keep_case(prob.cpu().numpy().reshape(label.shape[-3:]), getattr(logits, "affine", None), label)

    def _keep_case(self, prob: np.ndarray, affine: Any, label: np.ndarray) -> None:
        """Keep the probabilities above the lowest threshold and the reference voxels, sparse, with the voxel size.

        The voxel size comes from the logits' affine (1 mm without one).
        """
        spacing = (1.0, 1.0, 1.0)
        if affine is not None:
            matrix = torch.as_tensor(affine).detach().cpu().double().numpy().reshape(-1, 4, 4)[0]
            spacing = tuple(np.linalg.norm(matrix[:3, :3], axis=0).tolist())
        above = np.flatnonzero(prob >= min(self.thresholds))
        ref = np.flatnonzero(label.reshape(-1) > 0.5)
        self._cases.append((prob.shape, spacing, above, prob.reshape(-1)[above].astype(np.float32), ref))

    def _size_counts(self, threshold: float) -> np.ndarray:
        """VALDO's TP, FP, FN of this rank's cases at ``threshold`` after each size cut, summed."""
        counts = np.zeros((len(self.size_cuts), 3))
        for shape, spacing, above, prob, ref in self._cases:
            pred, truth = np.zeros(math.prod(shape), dtype=bool), np.zeros(math.prod(shape), dtype=bool)
            pred[above[prob >= threshold]], truth[ref] = True, True
            counts += detection_by_cut(pred.reshape(shape), truth.reshape(shape), spacing, self.size_cuts)
        return counts

    def _choose(self, engine: Engine) -> None:
        sums = torch.tensor(np.concatenate([self._sums.ravel(), self._totals]), dtype=torch.float64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        grid, (ref_sum, pvs, cases) = sums[:-3].reshape(3, -1).numpy(), sums[-3:].tolist()
        if not cases:
            self.result = None
            return
        mean_dice = grid[0] / cases
        totals = grid[2] + ref_sum
        pooled = np.where(totals > 0, 2.0 * grid[1] / np.maximum(totals, 1.0), 1.0)
        threshold, rule = choose_threshold(
            self.thresholds, pooled.tolist(), int(pvs), self.min_reference_pvs, self.tolerance
        )
        chosen = self.thresholds.index(threshold)
        at_default = self.thresholds.index(DEFAULT_THRESHOLD) if DEFAULT_THRESHOLD in self.thresholds else None
        self.result = {
            "threshold": threshold,
            "rule": rule,
            "val_dice": round(float(mean_dice[chosen]), 6),
            "val_dice_at_0.5": None if at_default is None else round(float(mean_dice[at_default]), 6),
            "val_dice_pooled": round(float(pooled[chosen]), 6),
            "best_pooled": self._best(pooled),
            "best_mean_case": self._best(mean_dice),
            "validation_cases": int(cases),
            "validation_pvs": int(pvs),
        }
        size = torch.tensor(self._size_counts(threshold), dtype=torch.float64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(size)
        self.result["size_selection"] = choose_min_size(
            self.size_cuts, size.numpy().astype(np.int64), int(pvs), self.min_reference_pvs
        )
        engine.state.metrics["val_dice_tuned"] = float(mean_dice[chosen])
        engine.state.metrics["val_threshold"] = threshold

    def _best(self, dice: np.ndarray) -> dict[str, float]:
        """The best threshold of a Dice curve (the first on a tie), recorded beside the choice."""
        return {"threshold": self.thresholds[int(np.argmax(dice))], "dice": round(float(dice.max()), 6)}

    def stored(self, epoch: int) -> dict[str, Any] | None:
        """What goes into ``model.json`` for the model saved after this validation (None before any)."""
        if self.result is None:
            return None
        selection = {k: v for k, v in self.result.items() if k != "size_selection"}
        size = self.result["size_selection"]
        return {
            "threshold": self.result["threshold"],
            "threshold_selection": {**selection, "epoch": epoch},
            "min_pvs_mm3": size["min_pvs_mm3"],
            "size_selection": {**size, "threshold": self.result["threshold"], "epoch": epoch},
        }
