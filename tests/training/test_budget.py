"""Training for a CPU-time budget: the CPU accounting, the stopping handler on real ignite engines, and one run."""

import json
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY_TRAINING, run_bundle, run_dirs
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator

from scripts.training.budget import CPUBudget, CPUBudgetHandler, check_max_cpu_minutes, process_cpu_seconds

BURN_ONE_SECOND = (
    "import sys, time\n"
    "t = time.process_time()\n"
    "while time.process_time() - t < 1.0:\n"
    "    pass\n"
    "print('burnt', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.slow
def test_cpu_of_a_child_process_is_counted_while_it_runs_and_after_it_ended():
    before = process_cpu_seconds()
    child = subprocess.Popen([sys.executable, "-c", BURN_ONE_SECOND], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "burnt"
        alive = process_cpu_seconds()
    finally:
        child.kill()
        child.wait()
    ended = process_cpu_seconds()
    # CPU times come in clock ticks of 0.01 s, as floats: 230.89 - 229.89 is 0.99999…, one second to the tick
    assert alive - before >= 0.99  # the child's second, though this process only waited
    assert ended - before >= 0.99  # still counted once the child has ended and been reaped


@pytest.mark.parametrize("value", [0, -1.5, "ten", True, [1]])
def test_max_cpu_minutes_must_be_positive_or_null(value):
    with pytest.raises(ValueError, match="max_cpu_minutes must be a positive number or null, not"):
        CPUBudget(value)


def test_null_budget_means_no_limit():
    assert check_max_cpu_minutes(None) is None
    assert check_max_cpu_minutes(2) == 2.0


def _burning_trainer(budget: CPUBudget, validator: Engine, val_interval: int) -> Engine:
    def step(engine, batch):
        t = time.process_time()
        while time.process_time() - t < 0.05:
            pass
        return batch

    trainer = Engine(step)
    trainer.add_event_handler(Events.EPOCH_COMPLETED(every=val_interval), lambda e: validator.run(e.state.epoch))
    CPUBudgetHandler(budget, validator).attach(trainer)
    return trainer


def _validator() -> tuple[SupervisedEvaluator, list[int]]:
    runs: list[int] = []
    case = {"image": torch.zeros(1, 1, 4, 6, 2), "label": torch.zeros(1, 1, 4, 6, 2)}
    validator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=[case], network=torch.nn.Identity())
    validator.add_event_handler(Events.COMPLETED, lambda e: runs.append(1))
    return validator, runs


def test_spent_budget_stops_mid_epoch_validates_once_and_says_so(caplog):
    validator, runs = _validator()
    budget = CPUBudget((process_cpu_seconds() + 0.5) / 60)
    trainer = _burning_trainer(budget, validator, val_interval=100)
    with caplog.at_level("INFO", logger="pvs_bundle.budget"):
        trainer.run(range(50), max_epochs=100)
    assert 1 <= trainer.state.epoch < 100
    assert trainer.state.iteration < 100 * 50
    assert runs == [1]  # validation was not due: the handler ran it
    assert budget.used_minutes >= budget.max_cpu_minutes
    assert f"reached after {trainer.state.epoch} epochs, {trainer.state.iteration} iterations" in caplog.text


def test_budget_spent_at_a_validation_epoch_does_not_validate_twice():
    validator, runs = _validator()
    budget = CPUBudget((process_cpu_seconds() + 0.3) / 60)
    trainer = _burning_trainer(budget, validator, val_interval=1)
    trainer.run(range(1000), max_epochs=5)  # the budget ends the first epoch, which validates anyway
    assert trainer.state.epoch == 1
    assert runs == [1]


def test_resumed_run_goes_on_counting_the_saved_minutes():
    first = CPUBudget(1000.0)
    first.used_minutes = 999.9
    resumed = CPUBudget(1000.0)
    resumed.load_state_dict(first.state_dict())
    trainer = Engine(lambda engine, batch: batch)
    CPUBudgetHandler(resumed).attach(trainer)
    trainer.run(range(10), max_epochs=3)
    assert trainer.state.iteration == 1  # 999.9 minutes before plus this process's CPU time: spent at once
    assert resumed.used_minutes > 1000.0


@pytest.mark.slow
def test_training_for_a_tiny_budget_stops_early_with_a_model_and_history(bids_dataset, tmp_path):
    args = ["run", "training", "--config_file", "configs/train.json", *run_dirs(tmp_path, bids_dataset)]
    budget = ["--max_epochs", "1000", "--val_interval", "500", "--max_cpu_minutes", "0.2"]
    proc = run_bundle([*args, *TINY_TRAINING, *budget])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CPU budget of 0.2 min reached after" in proc.stdout
    assert (tmp_path / "models" / "model.pt").is_file()  # validated when the budget ran out, though not due
    rows = json.loads((tmp_path / "eval" / "training_history.json").read_text())["epochs"]
    assert rows[-1]["epoch"] < 1000 and rows[-1]["cpu_minutes"] >= 0.2 and "val_dice" in rows[-1]
    state = torch.load(tmp_path / "models" / "training_state.pt", weights_only=True)
    assert state["cpu_budget"]["cpu_minutes"] == pytest.approx(rows[-1]["cpu_minutes"], abs=1e-3)
