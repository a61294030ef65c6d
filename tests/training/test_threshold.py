"""The validation-chosen probability threshold: the sweep's Dice, its choice, and what is stored with the model."""

import json

import pytest
import torch
from ignite.engine import Engine, Events

from scripts.training.checkpoint import BestModelSaver
from scripts.training.threshold import THRESHOLDS, ThresholdSweep, choose_threshold


def _logits(probabilities):
    return torch.logit(torch.tensor(probabilities, dtype=torch.float32), eps=1e-6)


def _case(probabilities, label):
    return {"logits": _logits(probabilities).reshape(1, 1, -1), "label": torch.tensor(label).reshape(1, 1, -1)}


def test_case_dice_at_each_threshold_by_hand():
    sweep = ThresholdSweep(thresholds=[0.25, 0.5, 0.75])
    # reference: voxels 0, 1, 2; probabilities 0.9, 0.6, 0.3 there and 0.4, 0.1 outside
    dice = sweep.case_dice(_logits([0.9, 0.6, 0.3, 0.4, 0.1]), torch.tensor([1, 1, 1, 0, 0]))
    # t = 0.25: pred {0, 1, 2, 3}: 2·3 / (4 + 3); t = 0.5: pred {0, 1}: 2·2 / (2 + 3); t = 0.75: pred {0}: 2 / 4
    assert dice.tolist() == pytest.approx([6 / 7, 4 / 5, 2 / 4])


def test_empty_reference_counts_like_the_key_metric():
    sweep = ThresholdSweep(thresholds=[0.5, 0.95])
    dice = sweep.case_dice(_logits([0.9, 0.1]), torch.tensor([0, 0]))
    assert dice.tolist() == [0.0, 1.0]  # a false positive scores 0, nothing predicted scores 1


def test_the_choice_keeps_half_with_few_validation_pvs_and_can_lean_to_half_within_a_tolerance():
    grid, pooled = [0.3, 0.4, 0.5, 0.6], [0.800, 0.803, 0.799, 0.700]
    assert choose_threshold(grid, pooled, reference_pvs=49) == (0.5, "49 validation PVS < 50: kept 0.5")
    best = choose_threshold(grid, pooled, reference_pvs=50, tolerance=0)
    assert best == (0.4, "best pooled Dice (50 validation PVS)")
    # best 0.803 at 0.4; 0.3 and 0.5 are within 0.005 of it, and 0.5 is nearest 0.5
    assert choose_threshold(grid, pooled, reference_pvs=50, tolerance=0.005)[0] == 0.5
    # the default (0.11.0) leans within 0.01: 0.5 here, but not past a clear gain of 0.02
    assert choose_threshold(grid, pooled, reference_pvs=50) == (
        0.5,
        "best pooled Dice, nearest 0.5 within 0.01 of it (50 validation PVS)",
    )
    assert choose_threshold([0.3, 0.5], [0.82, 0.80], reference_pvs=50)[0] == 0.3
    assert choose_threshold([0.3, 0.4, 0.6], [0.8, 0.9, 0.9], reference_pvs=50)[0] == 0.4  # a tie: nearest 0.5 first
    assert choose_threshold([0.2, 0.7], [0.5, 0.6], reference_pvs=0) == (0.7, "0 validation PVS < 50: kept 0.5")
    with pytest.raises(ValueError, match="one length"):
        choose_threshold([0.5], [], reference_pvs=100)
    with pytest.raises(ValueError, match=r"numbers in \(0, 1\)"):
        ThresholdSweep(thresholds=[0.5, 1.0])


def _run(sweep: ThresholdSweep, cases: list) -> Engine:
    validator = Engine(lambda engine, batch: batch)
    sweep.attach(validator)
    validator.run(cases, max_epochs=1)
    return validator


def test_pooled_voxels_outweigh_one_small_case_that_a_mean_of_case_dice_follows():
    """A case of 100 PVS voxels with 50 faint false positives (Dice 0.8 at 0.2, 1.0 at 0.5) and a case of one faint
    PVS voxel (1.0 at 0.2, 0 at 0.5): the mean of the two case Dice (0.9 against 0.5) picks 0.2; the pooled voxels
    (202 / 252 against 200 / 201) pick 0.5."""
    big = _case([0.6] * 100 + [0.3] * 50 + [0.01] * 50, [1] * 100 + [0] * 100)
    small = _case([0.3] + [0.01] * 9, [1] + [0] * 9)
    sweep = ThresholdSweep(thresholds=[0.2, 0.5], min_reference_pvs=0)
    validator = _run(sweep, [[big], [small]])
    assert sweep.result["best_mean_case"] == {"threshold": 0.2, "dice": pytest.approx(0.9)}
    assert sweep.result["best_pooled"] == {"threshold": 0.5, "dice": pytest.approx(200 / 201, abs=1e-6)}
    assert validator.state.metrics["val_threshold"] == 0.5 and sweep.result["threshold"] == 0.5
    assert validator.state.metrics["val_dice_tuned"] == pytest.approx(0.5)  # the mean case Dice at the choice
    # the labels are 1D rows here: each is one 26-connected component
    assert sweep.result["validation_pvs"] == 2 and sweep.result["validation_cases"] == 2


def test_sweep_on_a_validation_run_and_the_model_json_it_writes(tmp_path):
    """A real ignite engine runs the sweep over two cases; the saver stores its choice beside the weights."""
    cases = [
        [_case([0.45, 0.42, 0.2, 0.1], [1, 1, 0, 0])],  # PVS under-confident: only t < 0.42 finds both voxels
        [_case([0.8, 0.41, 0.3, 0.05], [1, 1, 0, 0])],
    ]
    validator = Engine(lambda engine, batch: batch)
    sweep = ThresholdSweep(min_reference_pvs=2)  # one PVS per case here
    sweep.attach(validator)
    network = torch.nn.Conv3d(1, 1, 1)
    settings = {k: 1 for k in ("encoder_name", "norm", "decoder_channels", "patch_size", "in_channels", "classes")}
    settings |= {"pixdim": [0.8] * 3, "intensity": {"mode": "zscore", "lower": 0.5, "upper": 99.5}}
    saver = BestModelSaver(tmp_path / "model.pt", network, settings=settings, threshold_sweep=sweep)

    def new_best(engine):  # what MONAI's evaluator records before its handlers run
        engine.state.best_metric, engine.state.best_metric_epoch = engine.state.metrics["val_dice_tuned"], 1

    validator.add_event_handler(Events.EPOCH_COMPLETED, new_best)
    saver.attach(validator)
    validator.run(cases, max_epochs=1)
    # t in 0.35, 0.4: both cases perfect (case 2 keeps 0.41 but drops 0.3); t = 0.5: Dice 0 and 2/3
    assert validator.state.metrics["val_threshold"] == 0.4
    assert validator.state.metrics["val_dice_tuned"] == pytest.approx(1.0)
    stored = json.loads((tmp_path / "model.json").read_text())
    assert stored["threshold"] == 0.4 and stored["encoder_name"] == 1 and stored["tta"] == "none"
    assert stored["threshold_selection"]["val_dice_at_0.5"] == pytest.approx((0 + 2 / 3) / 2, abs=1e-6)
    assert stored["threshold_selection"]["validation_cases"] == 2 and stored["threshold_selection"]["epoch"] == 1
    assert stored["threshold_selection"]["validation_pvs"] == 2 and "pooled" in stored["threshold_selection"]["rule"]
    assert 0.4 in THRESHOLDS


def test_the_saver_stores_the_recipes_tta_and_refuses_an_unknown_one(tmp_path):
    network = torch.nn.Conv3d(1, 1, 1)
    settings = {k: 1 for k in ("encoder_name", "norm", "decoder_channels", "patch_size", "in_channels", "classes")}
    settings |= {"pixdim": [0.8] * 3, "intensity": {"mode": "zscore", "lower": 0.5, "upper": 99.5}}
    saver = BestModelSaver(tmp_path / "model.pt", network, settings=settings, tta="mirror")
    validator = Engine(lambda engine, batch: batch)

    def new_best(engine):
        engine.state.best_metric, engine.state.best_metric_epoch = 0.5, 1

    validator.add_event_handler(Events.EPOCH_COMPLETED, new_best)
    saver.attach(validator)
    validator.run([0], max_epochs=1)
    stored = json.loads((tmp_path / "model.json").read_text())
    assert stored["tta"] == "mirror" and "threshold" not in stored  # no sweep attached: no threshold stored
    with pytest.raises(ValueError, match=r"tta must be one of \['none', 'mirror'\], not 'auto'"):
        BestModelSaver(tmp_path / "other.pt", network, settings=settings, tta="auto")
