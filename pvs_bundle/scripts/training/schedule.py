"""Learning-rate schedules: ReduceLROnPlateau on the validation loss, or poly / cosine decay over training progress.

``lr_schedule`` in train.json chooses one:

- ``plateau``: ``torch.optim.lr_scheduler.ReduceLROnPlateau``, stepped with the validation loss by the
  ``LrScheduleHandler`` of ``validate#handlers``;
- ``poly`` (nnU-Net): lr = lr0 · (1 − p)^0.9;
- ``cosine``: lr = lr0 · ½ (1 + cos πp);

where the progress p is the larger of the share of ``max_epochs`` trained and, when ``max_cpu_minutes`` is set, the
share of the CPU budget spent, so the rate reaches its end when either runs out. :class:`ProgressScheduleHandler`
sets it before every iteration. A :class:`ProgressLR` saves and loads its state like a torch scheduler, so the
training state resumes it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from ignite.engine import Engine, Events

LR_SCHEDULES: tuple[str, ...] = ("plateau", "poly", "cosine")
POLY_EXPONENT = 0.9


class ProgressLR:
    """Learning rate as a function of training progress p in [0, 1]: poly or cosine decay from each group's lr.

    Args:
        optimizer: the optimizer whose learning rates are set; their values now are the initial rates lr0.
        schedule: ``poly`` or ``cosine``.

    Raises:
        ValueError: when ``schedule`` is neither.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: str) -> None:
        if schedule not in ("poly", "cosine"):
            raise ValueError(f"a progress schedule must be poly or cosine, not {schedule!r}.")
        self.optimizer = optimizer
        self.schedule = schedule
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.progress = 0.0

    def factor(self, progress: float) -> float:
        """The multiple of lr0 at ``progress`` (clamped to [0, 1])."""
        p = min(max(progress, 0.0), 1.0)
        if self.schedule == "poly":
            return (1.0 - p) ** POLY_EXPONENT
        return 0.5 * (1.0 + math.cos(math.pi * p))

    def set_progress(self, progress: float) -> None:
        """Set every group's learning rate for ``progress``."""
        self.progress = min(max(float(progress), 0.0), 1.0)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * self.factor(self.progress)

    def get_last_lr(self) -> list[float]:
        """The learning rates set last, one per parameter group (as torch schedulers report them)."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """The schedule, the initial rates and the progress reached."""
        return {"schedule": self.schedule, "base_lrs": list(self.base_lrs), "progress": self.progress}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a saved schedule: its initial rates, at the progress it reached.

        Raises:
            ValueError: when the state is of another schedule.
        """
        if state.get("schedule") != self.schedule:
            raise ValueError(
                f"the training state's lr_schedule is {state.get('schedule')!r}, not {self.schedule!r}: resume with "
                f"--lr_schedule {state.get('schedule')}, or train anew in a new --ckpt_dir."
            )
        self.base_lrs = [float(lr) for lr in state["base_lrs"]]
        self.set_progress(state["progress"])


def build_lr_scheduler(schedule: str, optimizer: torch.optim.Optimizer, plateau: dict[str, Any]) -> Any:
    """Return the learning-rate scheduler that ``lr_schedule`` names.

    Args:
        schedule: one of :data:`LR_SCHEDULES`.
        optimizer: the optimizer.
        plateau: keyword arguments of ``ReduceLROnPlateau`` (``mode``, ``factor``, ``patience``, ``min_lr``).

    Returns:
        A ``ReduceLROnPlateau`` for ``plateau``, else a :class:`ProgressLR`.

    Raises:
        ValueError: when ``schedule`` is not one of :data:`LR_SCHEDULES`.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, not {schedule!r}.")
    if schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **plateau)
    return ProgressLR(optimizer, schedule)


class ProgressScheduleHandler:
    """Set a :class:`ProgressLR` before every iteration from the training's progress.

    Progress is the larger of the iterations done over ``max_epochs`` epochs' worth and, with a CPU budget, the
    CPU minutes used over ``max_cpu_minutes``.

    Args:
        lr_scheduler: the schedule to set.
        cpu_budget: :class:`scripts.training.budget.CPUBudget` of the run, or None.
    """

    def __init__(self, lr_scheduler: ProgressLR, cpu_budget: Any = None) -> None:
        self.lr_scheduler = lr_scheduler
        self.cpu_budget = cpu_budget

    def attach(self, engine: Engine) -> None:
        """Register on the trainer's ITERATION_STARTED event."""
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def progress(self, engine: Engine) -> float:
        """The training's progress in [0, 1] before the current iteration."""
        done = (engine.state.iteration - 1) / (engine.state.max_epochs * engine.state.epoch_length)
        budget = getattr(self.cpu_budget, "max_cpu_minutes", None)
        spent = self.cpu_budget.used_minutes / budget if budget else 0.0
        return min(max(done, spent), 1.0)

    def __call__(self, engine: Engine) -> None:
        """Set the learning rate for the coming iteration."""
        self.lr_scheduler.set_progress(self.progress(engine))
