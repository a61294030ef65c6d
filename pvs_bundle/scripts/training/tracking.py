"""The learning rate as a trainer metric, so TensorBoard, MLflow and the console log it beside the loss."""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events


class LearningRateHandler:
    """Put the optimizer's learning rate into the trainer's ``state.metrics`` when each epoch starts.

    MONAI's ``TensorBoardStatsHandler``, ``MLFlowHandler`` and ``StatsHandler`` write every item of a trainer's
    ``state.metrics`` when an epoch completes, so the rate used during that epoch is logged by each of them at that
    epoch, with no setting of theirs to change. It is read at the epoch's start because the LR scheduler
    (``ReduceLROnPlateau``, stepped by validation at the epoch's end) may change it before the writers run.

    Args:
        optimizer: the optimizer; the rate of its first parameter group is recorded.
        name: the metric name (``lr``).

    Raises:
        ValueError: if ``name`` is empty.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, name: str = "lr") -> None:
        if not name:
            raise ValueError(f"name must be a non-empty string, not {name!r}.")
        self.optimizer = optimizer
        self.name = name

    def attach(self, engine: Engine) -> None:
        """Register on the trainer's EPOCH_STARTED event."""
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """Record the current learning rate of the first parameter group."""
        engine.state.metrics[self.name] = float(self.optimizer.param_groups[0]["lr"])
