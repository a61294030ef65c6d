"""The probability threshold chosen on the validation split, stored with the model it was chosen for.

At every validation :class:`ThresholdSweep` scores the validation cases at a grid of thresholds (mean case Dice,
the key metric's definition) and keeps the best; :class:`scripts.training.checkpoint.BestModelSaver` writes it into
``model.json`` beside the best model, where inference and evaluation read it (``threshold: "auto"``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
THRESHOLDS: tuple[float, ...] = tuple(round(0.1 + 0.05 * i, 2) for i in range(17))  # 0.1, 0.15, …, 0.9


def best_threshold(thresholds: Sequence[float], dice: Sequence[float]) -> tuple[float, float]:
    """Return the threshold with the highest mean Dice and that Dice; ties go to the one nearest 0.5.

    Args:
        thresholds: the thresholds tried.
        dice: the mean case Dice at each.

    Returns:
        ``(threshold, dice)``.

    Raises:
        ValueError: if the two sequences differ in length or are empty.
    """
    if len(thresholds) != len(dice) or not len(thresholds):
        raise ValueError(
            f"thresholds and dice must be non-empty and of one length, not {len(thresholds)}, {len(dice)}."
        )
    order = sorted(range(len(thresholds)), key=lambda i: (-dice[i], abs(thresholds[i] - DEFAULT_THRESHOLD)))
    return float(thresholds[order[0]]), float(dice[order[0]])


class ThresholdSweep:
    """Validation handler: the mean case Dice at each threshold of a grid, and the best threshold.

    Reads each case's ``logits`` and ``label`` from the evaluator's output (the validation postprocessing keeps the
    logits under that name), so it scores exactly the predictions the key metric scores. Cases with an empty
    reference count as the key metric counts them (Dice 1 for an empty prediction, else 0). Under DDP the sums are
    reduced over the ranks, so every rank holds the same result. After each validation
    ``engine.state.metrics["val_dice_tuned"]`` holds the best Dice and :attr:`result` the choice.

    Args:
        thresholds: the grid of thresholds to try.
        logits_key: output key of the logits.
        label_key: output key of the reference.
    """

    def __init__(
        self, thresholds: Sequence[float] = THRESHOLDS, logits_key: str = "logits", label_key: str = "label"
    ) -> None:
        values = [float(t) for t in thresholds]
        if not values or not all(0.0 < t < 1.0 for t in values):
            raise ValueError(f"thresholds must be numbers in (0, 1), not {list(thresholds)}.")
        self.thresholds = values
        self.logits_key = logits_key
        self.label_key = label_key
        self._sums = np.zeros(len(values))
        self._cases = 0
        self.result: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        """Register on the validator: reset at the start, score each batch, choose at the end."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._score)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._choose)

    def _reset(self, engine: Engine) -> None:
        self._sums[:] = 0.0
        self._cases = 0

    def case_dice(self, logits: torch.Tensor, label: torch.Tensor) -> np.ndarray:
        """The Dice of one case at every threshold."""
        prob = torch.sigmoid(torch.as_tensor(logits).float()).reshape(-1)
        ref = torch.as_tensor(label).reshape(-1) > 0.5
        ref_sum = int(ref.sum())
        ref_prob = prob[ref]
        dice = np.empty(len(self.thresholds))
        for i, t in enumerate(self.thresholds):
            pred_sum = int((prob >= t).sum())
            overlap = int((ref_prob >= t).sum())
            total = pred_sum + ref_sum
            dice[i] = 2.0 * overlap / total if total else 1.0
        return dice

    def _score(self, engine: Engine) -> None:
        output = engine.state.output
        for item in output if isinstance(output, list | tuple) else [output]:
            self._sums += self.case_dice(item[self.logits_key], item[self.label_key])
            self._cases += 1

    def _choose(self, engine: Engine) -> None:
        sums = torch.tensor([*self._sums, self._cases], dtype=torch.float64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        cases = int(sums[-1])
        if not cases:
            self.result = None
            return
        mean = (sums[:-1] / cases).tolist()
        threshold, dice = best_threshold(self.thresholds, mean)
        at_default = mean[self.thresholds.index(DEFAULT_THRESHOLD)] if DEFAULT_THRESHOLD in self.thresholds else None
        self.result = {
            "threshold": threshold,
            "val_dice": round(dice, 6),
            "val_dice_at_0.5": None if at_default is None else round(at_default, 6),
            "validation_cases": cases,
        }
        engine.state.metrics["val_dice_tuned"] = dice
        engine.state.metrics["val_threshold"] = threshold

    def stored(self, epoch: int) -> dict[str, Any] | None:
        """What goes into ``model.json`` for the model saved after this validation (None before any)."""
        if self.result is None:
            return None
        return {"threshold": self.result["threshold"], "threshold_selection": {**self.result, "epoch": epoch}}
