import json

import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

from scripts.errors import BundleError
from scripts.training.handlers import (
    GradientClipHandler,
    OverlapMetricHandler,
    TrainingHistoryHandler,
    validation_metrics,
)


def _trainer(max_norm: float | None, lr: float = 0.1) -> Engine:
    network = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(network.parameters(), lr=lr)

    def step(engine, batch):
        optimizer.zero_grad()
        loss = (network(batch) * 1000.0).pow(2).mean()
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.state.grad_norm = torch.norm(torch.stack([p.grad.norm() for p in network.parameters()])).item()
        optimizer.step()
        return {"loss": loss.item()}

    engine = Engine(step)
    engine.register_events(*IterationEvents)
    engine.network, engine.optimizer = network, optimizer
    if max_norm is not None:
        GradientClipHandler(max_norm).attach(engine)
    return engine


def test_gradient_clip_bounds_the_gradient_norm():
    data = [torch.ones(2, 3)]
    clipped, free = _trainer(1.0), _trainer(None)
    clipped.run(data, max_epochs=1)
    free.run(data, max_epochs=1)
    assert clipped.state.grad_norm == pytest.approx(1.0, rel=1e-4)
    assert free.state.grad_norm > 10.0


def test_gradient_clip_rejects_non_positive_norm():
    with pytest.raises(ValueError, match="positive"):
        GradientClipHandler(0.0)


def test_overlap_metric_handler_on_a_real_evaluator():
    pred = torch.zeros(1, 4, 5, 6)
    pred[0, 1, 1, :2] = 1
    label = torch.zeros(1, 4, 5, 6)
    label[0, 1, 1, 1:3] = 1
    evaluator = Engine(lambda engine, batch: [{"pred": pred, "label": label}])
    OverlapMetricHandler("iou").attach(evaluator, "val_iou")
    evaluator.run([0], max_epochs=1)
    assert evaluator.state.metrics["val_iou"] == pytest.approx(1 / 3)


def test_history_records_loss_lr_and_validation_metrics(tmp_path):
    trainer = _trainer(1.0)
    validator = Engine(lambda engine, batch: None)

    @trainer.on(Events.EPOCH_COMPLETED(every=2))
    def validate(engine):
        validator.state.metrics = {}
        validator.run([0], max_epochs=1)

    @validator.on(Events.EPOCH_COMPLETED)
    def fake_metrics(engine):  # stands in for metric handlers, which run before the history handler
        engine.state.metrics = {"val_dice": 0.1 * trainer.state.epoch, "val_loss": 1.0}

    history = TrainingHistoryHandler(tmp_path / "h.json", tmp_path / "h.png", validator=validator)
    history.attach(trainer)
    trainer.run([torch.ones(2, 3)] * 3, max_epochs=4)
    saved = json.loads((tmp_path / "h.json").read_text())
    assert [r["epoch"] for r in saved["epochs"]] == [1, 2, 3, 4]
    assert all(r["lr"] == pytest.approx(0.1) and r["train_loss"] > 0 for r in saved["epochs"])
    assert "val_dice" not in saved["epochs"][0] and saved["epochs"][3]["val_dice"] == pytest.approx(0.4)
    assert saved["best"] == {"epoch": 4, "val_dice": pytest.approx(0.4)}
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_validation_metrics_are_named_as_the_history_and_evaluation_read_them():
    loss = torch.nn.BCEWithLogitsLoss()
    metrics = validation_metrics(loss)
    assert list(metrics) == ["val_dice", "val_iou", "val_precision", "val_recall", "val_loss"]
    assert [m.metric_fn.name for m in list(metrics.values())[:4]] == ["dice", "iou", "precision", "recall"]
    assert metrics["val_loss"].metric_fn.loss_fn is loss
    assert list(validation_metrics()) == ["val_dice", "val_iou", "val_precision", "val_recall"]  # evaluation: no loss


def _guarded_trainer(max_skipped: int) -> tuple[Engine, torch.nn.Linear, list[torch.Tensor]]:
    """A trainer of a linear layer by SGD whose steps go through the clip handler; it records the weights."""
    network = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    weights: list[torch.Tensor] = []

    def step(engine, batch):
        optimizer.zero_grad()
        loss = network(batch).pow(2).mean()
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        optimizer.step()
        weights.append(network.weight.detach().clone())
        return {"loss": loss.item()}

    engine = Engine(step)
    engine.register_events(*IterationEvents)
    engine.network, engine.optimizer = network, optimizer
    GradientClipHandler(1.0, max_skipped=max_skipped).attach(engine)
    return engine, network, weights


def test_a_non_finite_step_is_skipped_and_the_weights_kept(caplog):
    engine, network, weights = _guarded_trainer(max_skipped=3)
    nan_batch = torch.ones(2, 3)
    nan_batch[0, 1] = float("nan")
    before = network.weight.detach().clone()
    engine.run([torch.ones(2, 3), nan_batch, torch.ones(2, 3)], max_epochs=1)
    assert not torch.equal(weights[0], before)  # the first step learned
    assert torch.equal(weights[1], weights[0])  # the NaN step changed nothing
    assert not torch.equal(weights[2], weights[1]) and bool(torch.isfinite(network.weight).all())
    assert "Epoch 1, iteration 2: the loss or its gradient is not finite" in caplog.text


def test_non_finite_steps_in_a_row_stop_the_training_with_the_fix():
    engine, network, weights = _guarded_trainer(max_skipped=3)
    nan_batch = torch.full((2, 3), float("nan"))
    with pytest.raises(BundleError, match=r"iteration 4: 3 steps in a row .* --precision fp32"):
        engine.run([torch.ones(2, 3)] + [nan_batch] * 5, max_epochs=1)
    assert len(weights) == 3 and bool(torch.isfinite(network.weight).all())  # stopped at the 3rd NaN step
    with pytest.raises(ValueError, match="max_skipped must be at least 1"):
        GradientClipHandler(1.0, max_skipped=0)
