"""Learning-rate schedules over training progress: the curves, their resume, and the handler on a real engine."""

import math

import pytest
import torch
from ignite.engine import Engine

from scripts.training.budget import CPUBudget
from scripts.training.schedule import ProgressLR, ProgressScheduleHandler, build_lr_scheduler

PLATEAU = {"mode": "min", "factor": 0.5, "patience": 5, "min_lr": 1e-06}


def _optimizer(lr: float = 1e-3) -> torch.optim.Optimizer:
    return torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=lr)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [("poly", [1.0, 0.5**0.9, 0.0]), ("cosine", [1.0, 0.5, 0.0])],
)
def test_curves_at_start_middle_and_end(schedule, expected):
    scheduler = ProgressLR(_optimizer(1e-3), schedule)
    for progress, factor in zip([0.0, 0.5, 1.0], expected, strict=True):
        scheduler.set_progress(progress)
        assert scheduler.get_last_lr() == [pytest.approx(1e-3 * factor, abs=1e-12)]


def test_progress_outside_zero_to_one_is_clamped():
    scheduler = ProgressLR(_optimizer(), "cosine")
    scheduler.set_progress(1.7)
    assert scheduler.get_last_lr() == [0.0]
    scheduler.set_progress(-0.2)
    assert scheduler.get_last_lr() == [pytest.approx(1e-3)]


def test_resumed_schedule_continues_from_the_saved_progress_and_initial_rate():
    first = ProgressLR(_optimizer(2e-3), "poly")
    first.set_progress(0.3)
    resumed = ProgressLR(_optimizer(1e-2), "poly")  # a fresh optimizer, as a resumed run builds it
    resumed.load_state_dict(first.state_dict())
    assert resumed.progress == pytest.approx(0.3)
    assert resumed.get_last_lr() == [pytest.approx(2e-3 * 0.7**0.9)]


def test_resuming_another_schedule_is_refused():
    cosine = ProgressLR(_optimizer(), "cosine")
    with pytest.raises(ValueError, match="lr_schedule is 'cosine', not 'poly'"):
        ProgressLR(_optimizer(), "poly").load_state_dict(cosine.state_dict())


def test_factory_builds_each_schedule_and_rejects_others():
    assert isinstance(build_lr_scheduler("plateau", _optimizer(), PLATEAU), torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert build_lr_scheduler("cosine", _optimizer(), PLATEAU).schedule == "cosine"
    with pytest.raises(ValueError, match="lr_schedule must be one of plateau, poly, cosine, not 'step'"):
        build_lr_scheduler("step", _optimizer(), PLATEAU)


def _trainer(scheduler: ProgressLR, budget: CPUBudget | None, lrs: list[float]) -> Engine:
    trainer = Engine(lambda engine, batch: lrs.append(scheduler.get_last_lr()[0]))
    ProgressScheduleHandler(scheduler, budget).attach(trainer)
    return trainer


def test_handler_decays_over_the_epochs_iteration_by_iteration():
    scheduler, lrs = ProgressLR(_optimizer(1.0), "cosine"), []
    _trainer(scheduler, None, lrs).run(range(5), max_epochs=2)
    assert lrs == pytest.approx([0.5 * (1 + math.cos(math.pi * i / 10)) for i in range(10)])


def test_progress_is_the_larger_of_the_epochs_and_the_cpu_budget_spent():
    budget = CPUBudget(10.0)
    budget.used_minutes = 5.0  # half the budget spent, as the budget handler measured it (no limit to stop here)
    scheduler, lrs = ProgressLR(_optimizer(1.0), "cosine"), []
    _trainer(scheduler, budget, lrs).run(range(5), max_epochs=100)
    assert lrs[:251] == pytest.approx([0.5] * 251)  # up to half of the 500 iterations: the budget's half
    assert lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 499 / 500)))  # then the iterations
