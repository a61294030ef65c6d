"""Ignite handlers of the bundle: overlap metrics, gradient clipping (and non-finite steps skipped), the history."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.handlers import IgniteMetricHandler, from_engine

from scripts.errors import BundleError
from scripts.evaluation.metrics import OVERLAP_METRICS, OverlapMetric, overlap_metrics
from scripts.io import atomic_write_json
from scripts.reports.plots import plot_history

logger = logging.getLogger("pvs_bundle.handlers")


class OverlapMetricHandler(IgniteMetricHandler):
    """Ignite metric of per-case Dice, IoU, precision or recall, averaged over the cases of an epoch.

    Args:
        name: one of ``dice``, ``iou``, ``precision``, ``recall``.
        output_transform: maps ``engine.state.output`` to (binary prediction, binary label); by default the
            ``pred`` and ``label`` items.
    """

    def __init__(self, name: str, output_transform: Callable | None = None) -> None:
        transform = output_transform if output_transform is not None else from_engine(["pred", "label"])
        super().__init__(metric_fn=OverlapMetric(name), output_transform=transform, save_details=False)


def validation_metrics(loss: Callable | None = None) -> dict[str, IgniteMetricHandler]:
    """The validator's metrics (train.json's ``validate#metrics``), named as the history and the logs show them.

    Args:
        loss: the training loss; when given, ``val_loss`` is that loss on the validation logits (the ``logits``
            item, the network's output before the sigmoid). None (evaluation): no ``val_loss``.

    Returns:
        ``val_dice``, ``val_iou``, ``val_precision``, ``val_recall`` (:class:`OverlapMetricHandler`), then
        ``val_loss`` when ``loss`` is given.
    """
    metrics: dict[str, IgniteMetricHandler] = {f"val_{name}": OverlapMetricHandler(name) for name in OVERLAP_METRICS}
    if loss is not None:
        metrics["val_loss"] = IgniteMetricHandler(
            loss_fn=loss, output_transform=from_engine(["logits", "label"]), save_details=False
        )
    return metrics


class GradientClipHandler:
    """Clip the gradient norm after each backward pass, before the optimizer step; skip a step that is not finite.

    A step whose gradient norm is NaN or infinite (a non-finite loss gives one) would write NaN into every weight,
    and every later step, validation and checkpoint would carry it on for the rest of the budget. Such a step's
    gradients are dropped instead (set to None: the optimizer leaves the weights as they are), with a warning naming
    the epoch and iteration. After ``max_skipped`` such steps in a row the training stops with an error that says
    what to change; the best model saved so far stays in ``ckpt_dir``. With a CUDA float16 gradient scaler the
    scaler skips these steps itself (and lowers its scale), and nothing is counted here.

    Args:
        max_norm: largest allowed total gradient norm; must be positive.
        norm_type: the p of the p-norm.
        max_skipped: non-finite steps in a row that stop the training; must be at least 1.

    Raises:
        ValueError: if ``max_norm`` is not positive or ``max_skipped`` is below 1.
    """

    def __init__(self, max_norm: float, norm_type: float = 2.0, max_skipped: int = 10) -> None:
        if not max_norm > 0:
            raise ValueError(f"max_norm must be a positive number, not {max_norm}.")
        if not int(max_skipped) >= 1:
            raise ValueError(f"max_skipped must be at least 1, not {max_skipped}.")
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.max_skipped = int(max_skipped)
        self.skipped_in_a_row = 0
        self.skipped = 0

    def attach(self, engine: Engine) -> None:
        """Register on the trainer's BACKWARD_COMPLETED event."""
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Unscale AMP gradients if needed, then clip them, or drop them when their norm is not finite.

        Raises:
            BundleError: after ``max_skipped`` non-finite steps in a row.
        """
        scaled = getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None
        if scaled:
            engine.scaler.unscale_(engine.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.max_norm, norm_type=self.norm_type)
        if scaled or bool(torch.isfinite(norm)):
            self.skipped_in_a_row = 0
            return
        engine.optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        self.skipped_in_a_row += 1
        state = engine.state
        logger.warning(
            "Epoch %d, iteration %d: the loss or its gradient is not finite (norm %s); the step is skipped, the "
            "weights are kept (%d skipped so far, %d in a row).",
            state.epoch,
            state.iteration,
            float(norm),
            self.skipped,
            self.skipped_in_a_row,
        )
        if self.skipped_in_a_row >= self.max_skipped:
            raise BundleError(
                f"training stopped at epoch {state.epoch}, iteration {state.iteration}: {self.skipped_in_a_row} steps "
                "in a row gave a non-finite loss or gradient, so the weights could no longer learn. The best model "
                "so far is in ckpt_dir. Check the data (NaN or infinite voxels), or train with a lower "
                "--learning_rate or with --precision fp32."
            )


class TrainingHistoryHandler:
    """Write the training history (JSON) and its curves (PNG) after every epoch.

    Each epoch's row holds the mean training loss, the learning rate used, and, for epochs that ran
    validation, every validation metric (``val_loss``, ``val_dice``, …), and with ``cpu_budget`` the CPU minutes
    used by the end of the epoch (``cpu_minutes``). Files are written atomically.
    An existing history file is continued when the trainer resumes from a later epoch, and its rows from
    epochs at or after the first epoch run now are replaced.

    Args:
        history_file: path of the JSON history.
        plot_file: path of the PNG of the curves; None to skip the plot.
        validator: the evaluator whose metrics are recorded after each validation.
        key_metric: name of the key validation metric (recorded as the best so far).
        cpu_budget: :class:`scripts.training.budget.CPUBudget` counting the CPU minutes, or None.
    """

    def __init__(
        self,
        history_file: str | Path,
        plot_file: str | Path | None = None,
        validator: Engine | None = None,
        key_metric: str = "val_dice",
        cpu_budget: Any = None,
    ) -> None:
        self.history_file = Path(history_file)
        self.plot_file = Path(plot_file) if plot_file is not None else None
        self.validator = validator
        self.key_metric = key_metric
        self.cpu_budget = cpu_budget
        self.rows: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._lr: float | None = None
        self._val_metrics: dict[str, float] | None = None
        self._loaded = False

    def attach(self, engine: Engine) -> None:
        """Register on the trainer (and on the validator to catch its metrics)."""
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        if self.validator is not None:
            self.validator.add_event_handler(Events.EPOCH_COMPLETED, self._validated)

    def _reset(self, engine: Engine) -> None:
        self._loaded = False

    def _load(self, epoch: int) -> None:
        """Keep the rows of an earlier run before ``epoch`` (the first epoch this run trains)."""
        self.rows = []
        if self.history_file.is_file():
            previous = json.loads(self.history_file.read_text()).get("epochs", [])
            self.rows = [r for r in previous if r["epoch"] < epoch]
        self._loaded = True

    def _epoch_started(self, engine: Engine) -> None:
        # Loaded here, not at STARTED: a resumed trainer's epoch is only known after every STARTED handler ran.
        if not self._loaded:
            self._load(engine.state.epoch)
        self._losses = []
        self._lr = float(engine.optimizer.param_groups[0]["lr"]) if hasattr(engine, "optimizer") else None

    def _iteration_completed(self, engine: Engine) -> None:
        loss = from_engine(["loss"], first=True)(engine.state.output)
        self._losses.append(float(loss[0] if isinstance(loss, tuple | list) else loss))

    def _validated(self, validator: Engine) -> None:
        self._val_metrics = {k: float(v) for k, v in validator.state.metrics.items() if isinstance(v, int | float)}

    def __call__(self, engine: Engine) -> None:
        """Append this epoch's row, then write the JSON and the plot."""
        row: dict[str, Any] = {"epoch": engine.state.epoch, "train_loss": _mean(self._losses), "lr": self._lr}
        if self.cpu_budget is not None:
            row["cpu_minutes"] = round(self.cpu_budget.used_minutes, 3)
        if self._val_metrics is not None:
            row.update(self._val_metrics)
            self._val_metrics = None
        self.rows.append(row)
        scored = [r for r in self.rows if self.key_metric in r and not math.isnan(r[self.key_metric])]
        best = max(scored, key=lambda r: r[self.key_metric]) if scored else None
        history = {
            "key_metric": self.key_metric,
            "best": {"epoch": best["epoch"], self.key_metric: best[self.key_metric]} if best else None,
            "epochs": self.rows,
        }
        atomic_write_json(self.history_file, history)
        if self.plot_file is not None:
            plot_history(history, self.plot_file)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class GroupedDiceHandler:
    """Validation Dice per group of cases (per contrast, say), added to the validator's metrics and logged.

    Each case's Dice goes to the group named by its ``group_key`` item (cases without one are not counted); at the
    end of each validation the mean of each group is stored as ``engine.state.metrics[prefix + group]`` (so the
    training history and TensorBoard record it) and logged in one line.

    Args:
        group_key: the datalist item naming a case's group.
        prefix: the metrics' name prefix.
    """

    def __init__(self, group_key: str = "contrast", prefix: str = "val_dice_") -> None:
        self.group_key = group_key
        self.prefix = prefix
        self.scores: dict[str, list[float]] = {}

    def attach(self, engine: Engine) -> None:
        """Register on the validator."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self.scores = {}

    def _iteration(self, engine: Engine) -> None:
        outputs, batch = engine.state.output, engine.state.batch
        items = batch if isinstance(batch, list) else [batch]
        for output, item in zip(outputs, items, strict=False):
            group = item.get(self.group_key) if isinstance(item, dict) else None
            if isinstance(group, list | tuple):
                group = group[0]
            if not group:
                continue
            dice = overlap_metrics(output["pred"], output["label"], ("dice",))["dice"]
            self.scores.setdefault(str(group), []).append(dice)

    def __call__(self, engine: Engine) -> None:
        """Store and log each group's mean Dice."""
        means = {group: sum(values) / len(values) for group, values in sorted(self.scores.items())}
        for group, value in means.items():
            engine.state.metrics[f"{self.prefix}{group}"] = value
        if means:
            shown = ", ".join(f"{group} {value:.4f} ({len(self.scores[group])})" for group, value in means.items())
            logger.info("Validation Dice by %s: %s", self.group_key, shown)
