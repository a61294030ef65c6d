"""Training for a CPU-time budget: the CPU time a run has used, and a handler that stops it when the budget is spent.

The CPU time counted is user + system time of the training process and of its child processes (DataLoader workers,
cache builders), those still running and those already finished, from the start of the process: data loading and
caching are paid for too. It is CPU time, not wall time, so a busy machine changes the result little. Under DDP
every rank counts its own processes and the budget covers the sum over all ranks, so every rank stops at the same
iteration.
"""

from __future__ import annotations

import logging
import time
from numbers import Real
from typing import Any

import psutil
from ignite.engine import Engine, Events

from scripts.distributed import sum_over_ranks

logger = logging.getLogger("pvs_bundle.budget")


def process_cpu_seconds(process: psutil.Process | None = None) -> float:
    """User + system CPU seconds of a process and of all its descendants, running or finished.

    ``cpu_times()`` of a process counts its finished children only once they are reaped (``children_user``,
    ``children_system``); the children still running are added with their own times (and those of their own
    finished children).

    Args:
        process: the process; this one by default.

    Returns:
        The CPU seconds used since the process started.
    """
    process = psutil.Process() if process is None else process
    times = process.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in process.children(recursive=True):
        try:
            own = child.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # ended meanwhile: counted once its parent reaps it
            continue
        total += own.user + own.system + own.children_user + own.children_system
    return total


def check_max_cpu_minutes(max_cpu_minutes: Any) -> float | None:
    """Return ``max_cpu_minutes`` as a float, or None (no limit).

    Raises:
        ValueError: when it is neither null nor a positive number.
    """
    if max_cpu_minutes is None:
        return None
    if isinstance(max_cpu_minutes, bool) or not isinstance(max_cpu_minutes, Real) or not max_cpu_minutes > 0:
        raise ValueError(f"max_cpu_minutes must be a positive number or null, not {max_cpu_minutes!r}.")
    return float(max_cpu_minutes)


class CPUBudget:
    """The CPU minutes a training run may use (``max_cpu_minutes``) and has used, its own and those it resumes.

    Args:
        max_cpu_minutes: the budget in CPU minutes, or None to count without a limit.

    Raises:
        ValueError: when ``max_cpu_minutes`` is neither null nor a positive number.
    """

    def __init__(self, max_cpu_minutes: float | None = None) -> None:
        self.max_cpu_minutes = check_max_cpu_minutes(max_cpu_minutes)
        self.minutes_before = 0.0  # used by the runs this one resumes
        self.used_minutes = 0.0

    @property
    def spent(self) -> bool:
        """Whether the minutes measured last reach the budget (never without one)."""
        return self.max_cpu_minutes is not None and self.used_minutes >= self.max_cpu_minutes

    def measure(self, device: Any = None) -> float:
        """Update and return the CPU minutes used: earlier runs' plus this process's, summed over DDP ranks.

        Args:
            device: where the sum over ranks is taken (the rank's GPU under NCCL); the CPU by default.
        """
        self.used_minutes = self.minutes_before + sum_over_ranks(process_cpu_seconds(), device) / 60.0
        return self.used_minutes

    def state_dict(self) -> dict[str, float]:
        """The CPU minutes used so far, for the training state."""
        return {"cpu_minutes": self.used_minutes}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Continue counting from the CPU minutes of a saved training state."""
        self.minutes_before = self.used_minutes = float(state["cpu_minutes"])


class CPUBudgetHandler:
    """Measure a :class:`CPUBudget` as the trainer runs; stop training, validated, when it is spent.

    The budget is checked at every iteration's end. Once it is spent the epoch is cut short, so its end runs as
    usual (validation when due, history, training state); if validation did not run at that iteration the
    validator runs then, so the weights trained last are scored (and kept if they are the best), and the trainer
    stops, logging "CPU budget of N min reached after E epochs, I iterations (wall W s)", W counted from the start
    of the process. The minutes used are measured at every epoch's end too (for the history and the training
    state). Attach it after the ``ValidationHandler`` and before the history and training-state handlers.

    Args:
        budget: the run's CPU budget.
        validator: the evaluator to run when the budget is spent, or None.
    """

    def __init__(self, budget: CPUBudget, validator: Engine | None = None) -> None:
        self.budget = budget
        self.validator = validator
        self._trainer: Engine | None = None
        self._validated_at: int | None = None
        self._spent = False

    def attach(self, engine: Engine) -> None:
        """Register on the trainer's iteration and epoch ends (and on the validator's runs)."""
        self._trainer = engine
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        if self.validator is not None:
            self.validator.add_event_handler(Events.COMPLETED, self._validated)

    def _started(self, engine: Engine) -> None:
        self._spent = False

    def _validated(self, validator: Engine) -> None:
        if self._trainer is not None:
            self._validated_at = self._trainer.state.iteration

    def _iteration_completed(self, engine: Engine) -> None:
        if self.budget.max_cpu_minutes is None:
            return
        self.budget.measure(getattr(engine.state, "device", None))
        if self.budget.spent:
            self._spent = True
            engine.terminate_epoch()

    def __call__(self, engine: Engine) -> None:
        """At an epoch's end: count the minutes; when the budget is spent, validate if needed and stop."""
        self.budget.measure(getattr(engine.state, "device", None))
        if not self._spent:
            return
        if self.validator is not None and self._validated_at != engine.state.iteration:
            self.validator.run(engine.state.epoch)
        logger.info(
            "CPU budget of %g min reached after %d epochs, %d iterations (wall %.0f s).",
            self.budget.max_cpu_minutes,
            engine.state.epoch,
            engine.state.iteration,
            time.time() - psutil.Process().create_time(),
        )
        engine.terminate()
