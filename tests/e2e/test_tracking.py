"""Experiment tracking of a real training run: MLflow (``--tracking mlflow``, local SQLite store) and TensorBoard.

MONAI 1.6.1 refuses ``file://`` tracking URIs (MLflow 3.13+ dropped the file store); a local store is a SQLite
database, with the run's artifacts in ``mlruns/`` beside it.
"""

import json

import pytest
from conftest import TINY_TRAINING, make_bids_dataset, run_bundle, run_dirs
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

EXPERIMENT = "pvs_tracking_test"
RUN_NAME = "tiny_run"
LEARNING_RATE = 0.001  # train.json's learning_rate


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """Train one epoch with MLflow tracking once for the whole module; return (run folder, tracking URI)."""
    root = tmp_path_factory.mktemp("tracking")
    dataset = make_bids_dataset(root / "ds")
    tracking_uri = f"sqlite:///{root / 'mlruns.db'}"
    proc = run_bundle(
        [
            "run",
            "training",
            "--config_file",
            "configs/train.json",
            *run_dirs(root, dataset),
            *TINY_TRAINING,
            "--max_epochs",
            "1",
            "--tracking",
            "mlflow",
            "--tracking_uri",
            tracking_uri,
            "--experiment_name",
            EXPERIMENT,
            "--run_name",
            RUN_NAME,
        ]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, tracking_uri


def recorded_val_dice(root) -> float:
    """The validation Dice the run wrote in its own training history (what every tracker must show)."""
    history = json.loads((root / "eval" / "training_history.json").read_text())
    return next(epoch["val_dice"] for epoch in history["epochs"] if epoch.get("val_dice") is not None)


def test_mlflow_records_the_run_its_loss_metrics_and_learning_rate(tracked_run):
    root, tracking_uri = tracked_run
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None and experiment.artifact_location == (root / "mlruns").as_uri()
    runs = client.search_runs([experiment.experiment_id])
    assert [(run.info.run_name, run.info.status) for run in runs] == [(RUN_NAME, "FINISHED")]
    run_id = runs[0].info.run_id
    losses = client.get_metric_history(run_id, "train_loss")
    assert len(losses) == 3 and all(m.value > 0 for m in losses)  # one per iteration: 3 training cases, batch 1
    dice = client.get_metric_history(run_id, "val_dice")
    assert len(dice) == 1 and dice[0].value == pytest.approx(recorded_val_dice(root), abs=1e-6)
    assert {"val_loss", "val_iou", "val_precision", "val_recall"} <= set(runs[0].data.metrics)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "lr")] == [(1, LEARNING_RATE)]


def test_tensorboard_logs_loss_metrics_and_learning_rate(tracked_run):
    root, _ = tracked_run
    events = EventAccumulator(str(root / "eval"))
    events.Reload()
    assert {"train_loss", "lr", "val_dice", "val_loss"} <= set(events.Tags()["scalars"])
    assert [(s.step, s.value) for s in events.Scalars("lr")] == [(1, pytest.approx(LEARNING_RATE))]
    assert len(events.Scalars("train_loss")) == 3
    assert events.Scalars("val_dice")[0].value == pytest.approx(recorded_val_dice(root), abs=1e-6)
