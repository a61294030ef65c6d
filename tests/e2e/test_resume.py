"""Resume after SIGKILL, and never overwrite an earlier run's results: real `python -m monai.bundle run` processes."""

import json
import os
import signal
import subprocess
import sys
import time

import torch
from conftest import BUNDLE_ROOT, TINY_TRAINING, bundle_env, run_bundle, run_dirs


def _args(tmp_path, dataset, *extra):
    return [
        "run",
        "training",
        "--config_file",
        "configs/train.json",
        *run_dirs(tmp_path, dataset),
        *TINY_TRAINING,
        *extra,
    ]


def _epochs(tmp_path):
    return [r["epoch"] for r in json.loads((tmp_path / "eval" / "training_history.json").read_text())["epochs"]]


def test_rerun_continues_from_the_saved_state(bids_dataset, tmp_path):
    first = run_bundle(_args(tmp_path, bids_dataset, "--max_epochs", "1"))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Engine run resuming from iteration 0, epoch 0" not in first.stdout  # a fresh run resumes nothing
    finished = next(line for line in first.stdout.splitlines() if "Training finished at epoch 1 of 1" in line)
    for written in ("model.pt", "training_history.json", "training_history.png", "training_state.pt"):
        assert written in finished
    state = torch.load(tmp_path / "models" / "training_state.pt", weights_only=True)
    assert state["epoch"] == 1 and state["validator"]["best_metric_epoch"] == 1
    second = run_bundle(_args(tmp_path, bids_dataset, "--max_epochs", "3"))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming from" in second.stdout + second.stderr
    assert _epochs(tmp_path) == [1, 2, 3]
    assert torch.load(tmp_path / "models" / "training_state.pt", weights_only=True)["epoch"] == 3
    again = run_bundle(_args(tmp_path, bids_dataset, "--max_epochs", "3"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already trained all 3 epochs" in again.stdout and "pass --max_epochs N with N above 3" in again.stdout
    assert _epochs(tmp_path) == [1, 2, 3]


def test_rerun_without_resume_refuses_to_overwrite(bids_dataset, tmp_path):
    assert run_bundle(_args(tmp_path, bids_dataset, "--max_epochs", "1")).returncode == 0
    model_bytes = (tmp_path / "models" / "model.pt").read_bytes()
    proc = run_bundle(_args(tmp_path, bids_dataset, "--max_epochs", "1", "--resume", "false"))
    assert proc.returncode != 0
    assert "would be overwritten" in proc.stderr and "model.pt" in proc.stderr
    assert (tmp_path / "models" / "model.pt").read_bytes() == model_bytes


def test_sigkill_mid_epoch_then_resume(bids_dataset, tmp_path):
    # Slow epochs (more samples) so the kill lands inside an epoch, after at least one saved state.
    args = _args(tmp_path, bids_dataset, "--max_epochs", "6", "--num_samples", "6")
    proc = subprocess.Popen(
        [sys.executable, "-m", "monai.bundle", *args],
        cwd=BUNDLE_ROOT,
        env=bundle_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    state_file = tmp_path / "models" / "training_state.pt"
    deadline = time.monotonic() + 300
    killed_at = None
    for line in proc.stdout:
        if state_file.exists() and "Epoch: " in line and "Iter: 2/" in line:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = torch.load(state_file, weights_only=True)["epoch"]
            break
        assert time.monotonic() < deadline, "training never reached a second epoch"
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and killed_at is not None and killed_at < 6
    best = torch.load(tmp_path / "models" / "model.pt", weights_only=True)  # intact after the kill
    assert isinstance(best, dict) and best
    resumed = run_bundle(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"epoch {killed_at} of 6 done" in resumed.stdout + resumed.stderr
    assert _epochs(tmp_path) == [1, 2, 3, 4, 5, 6]
    assert torch.load(state_file, weights_only=True)["epoch"] == 6
