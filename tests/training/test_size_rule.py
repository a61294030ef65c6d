"""The smallest PVS kept in mm³, chosen on validation (issue 23, item 3): a hand-built case, worked by hand."""

import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from scripts.errors import BundleError
from scripts.evaluation.detection import detection_metrics
from scripts.inference.small_components import RemoveSmallComponentsd
from scripts.masks import label_components
from scripts.model.model_file import resolve_min_pvs_mm3
from scripts.training.size_rule import choose_min_size, detection_by_cut
from scripts.training.threshold import ThresholdSweep

SPACING = (0.8, 0.8, 0.8)  # 0.512 mm³ a voxel
CUTS = (0.0, 1.0, 2.0)  # 1 mm³ removes 1-voxel components (0.512), 2 mm³ also 2- and 3-voxel ones (1.024, 1.536)


def hand_case() -> tuple[np.ndarray, np.ndarray]:
    """Reference: a 20-voxel tube and a 2-voxel PVS. Prediction: both found, plus specks of 1 and 3 voxels."""
    ref, pred = np.zeros((32, 32, 32), dtype=np.uint8), np.zeros((32, 32, 32), dtype=np.uint8)
    ref[5:25, 5, 5] = pred[5:25, 5, 5] = 1
    ref[20, 20, 20:22] = pred[20, 20, 20:22] = 1
    pred[28, 28, 28] = 1
    pred[10, 25, 10:13] = 1
    return pred, ref


def test_each_cut_counts_what_detection_counts_on_the_mask_inference_would_write():
    pred, ref = hand_case()
    counts = detection_by_cut(pred, ref, SPACING, CUTS)
    # cut 0: TP tube and small PVS, FP both specks; cut 1: the 1-voxel speck goes; cut 2: the small PVS and the
    # 3-voxel speck go too, and the small PVS is missed
    assert counts.tolist() == [[2, 2, 0], [2, 1, 0], [1, 0, 1]]
    affine = np.diag([*SPACING, 1.0])
    for cut, row in zip(CUTS, counts, strict=True):
        item = {"pred": MetaTensor(torch.from_numpy(pred[None]).float(), affine=torch.from_numpy(affine))}
        written = RemoveSmallComponentsd("pred", min_pvs_mm3=cut)(item)["pred"][0].numpy()
        metrics = detection_metrics(written, ref)
        assert [metrics["det_tp"], metrics["det_fp"], metrics["det_fn"]] == row.tolist()


def test_the_cut_with_the_best_pooled_f1_is_chosen_with_what_it_cost():
    counts = np.array([[2, 2, 0], [2, 1, 0], [1, 0, 1]])  # F1 4/6, 4/5, 2/3
    chosen = choose_min_size(CUTS, counts, reference_pvs=50, min_reference_pvs=50)
    assert chosen["min_pvs_mm3"] == 1.0 and chosen["det_f1"] == pytest.approx([4 / 6, 4 / 5, 2 / 3], abs=1e-6)
    assert chosen["true_pvs_lost"] == [0, 0, 1] and chosen["false_pvs_removed"] == [0, 1, 2]
    few = choose_min_size(CUTS, counts, reference_pvs=49, min_reference_pvs=50)
    assert few["min_pvs_mm3"] == 0.0 and few["rule"] == "49 validation PVS < 50: kept every PVS"
    tie = choose_min_size(CUTS, np.array([[2, 1, 0], [2, 1, 0], [1, 0, 1]]), 50, 50)
    assert tie["min_pvs_mm3"] == 0.0  # a tie keeps the smaller cut
    with pytest.raises(ValueError, match="cuts must start at 0"):
        choose_min_size((1.0, 2.0), counts[:2], 50, 50)


def test_the_volume_rule_follows_the_voxel_size():
    """1 mm³ is 2 voxels at 0.8 mm (the 1-voxel speck goes), 1 voxel at 1 mm (nothing goes), 8 voxels at 0.5 mm
    (only the 20-voxel tube stays)."""
    pred, _ = hand_case()
    for spacing, kept in (((0.8, 0.8, 0.8), 3), ((1.0, 1.0, 1.0), 4), ((0.5, 0.5, 0.5), 1)):
        affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
        item = {"pred": MetaTensor(torch.from_numpy(pred[None]).float(), affine=affine)}
        written = RemoveSmallComponentsd("pred", min_pvs_mm3=1.0)(item)["pred"][0].numpy()
        assert label_components(written)[1] == kept
    with pytest.raises(ValueError, match="min_pvs_mm3 must be a number >= 0"):
        RemoveSmallComponentsd("pred", min_pvs_mm3=-1)


def test_auto_reads_the_stored_volume_and_refuses_a_bad_one(tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"")
    assert resolve_min_pvs_mm3("auto", model) == 0.0  # no model.json: keep every PVS
    (tmp_path / "model.json").write_text(json.dumps({"min_pvs_mm3": 2.0}))
    assert resolve_min_pvs_mm3("auto", model) == 2.0 and resolve_min_pvs_mm3(0.5, model) == 0.5
    with pytest.raises(ValueError, match="min_pvs_mm3 must be 'auto' or a number >= 0"):
        resolve_min_pvs_mm3("big", model)
    (tmp_path / "model.json").write_text(json.dumps({"min_pvs_mm3": "big"}))
    with pytest.raises(BundleError, match=r"model\.json must store min_pvs_mm3 as a number >= 0.*--min_pvs_mm3 0"):
        resolve_min_pvs_mm3("auto", model)


def test_validation_chooses_the_cut_at_its_chosen_threshold():
    """The hand case as one validation case (probabilities 0.9 where predicted): the sweep stores cut 1 mm³."""
    pred, ref = hand_case()
    prob = np.where(pred > 0, 0.9, 0.01)
    affine = torch.from_numpy(np.diag([*SPACING, 1.0]))
    logits = MetaTensor(torch.logit(torch.from_numpy(prob).float())[None], affine=affine)
    sweep = ThresholdSweep(thresholds=[0.5], min_reference_pvs=2, size_cuts=CUTS)
    validator = Engine(lambda engine, batch: batch)
    sweep.attach(validator)
    validator.run([[{"logits": logits, "label": torch.from_numpy(ref[None]).float()}]], max_epochs=1)
    stored = sweep.stored(epoch=3)
    assert stored["min_pvs_mm3"] == 1.0 and stored["size_selection"]["threshold"] == 0.5
    assert stored["size_selection"]["true_pvs_lost"] == [0, 0, 1] and stored["size_selection"]["epoch"] == 3
    assert "size_selection" not in stored["threshold_selection"]
