"""Thin-structure loss terms: off they leave Dice + BCE as it was; on, each costs what it is meant to cost."""

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from scripts.training.losses import (
    LabelSkeletond,
    PVSLoss,
    blob_loss,
    check_weights,
    cldice_loss,
    label_skeleton,
    needs_skeleton,
    skeleton_recall_loss,
    soft_skeleton,
    with_skeleton,
)

SHAPE = (24, 24, 24)


def tube(length=slice(4, 20), centre=(12, 12), radius=2) -> np.ndarray:
    """A straight tube along axis 2."""
    x, y = np.indices(SHAPE[:2])
    disc = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius**2
    mask = np.zeros(SHAPE, dtype=np.float32)
    mask[disc, length] = 1.0
    return mask


def batch(*masks: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([[m] for m in masks]))


def test_with_no_thin_structure_weight_the_loss_is_dice_ce_as_before():
    torch.manual_seed(0)
    logits, label = torch.randn(2, 1, *SHAPE), batch(tube(), tube(radius=1))
    expected = DiceCELoss(sigmoid=True, batch=True, lambda_dice=0.5, lambda_ce=0.5, smooth_nr=1e-5, smooth_dr=1e-5)
    loss = PVSLoss({"dice": 0.5, "bce": 0.5})
    assert torch.equal(loss(logits, label), expected(logits, label))
    skeleton = batch(label_skeleton(tube()), label_skeleton(tube(radius=1)))
    assert torch.equal(loss(logits, torch.cat([label, skeleton], 1)), expected(logits, label))  # skeleton unused


def test_the_skeleton_is_a_thin_line_inside_the_tube_computed_once_by_a_transform():
    mask = tube()
    skeleton = label_skeleton(mask, tube_voxels=0)
    assert skeleton.sum() > 0 and np.all(mask[skeleton > 0] == 1)
    assert skeleton.sum(axis=2).max() <= 16 and np.count_nonzero(skeleton.sum(axis=(0, 1))) >= 8  # a line along z
    tubed = label_skeleton(mask)
    assert tubed.sum() > skeleton.sum() and np.all(tubed[skeleton > 0] == 1)
    assert np.all(mask[tubed > 0] == 1)  # the tube is cut to the label, as in Kirchhoff et al.'s code
    thin = tube(radius=0)  # one voxel wide: its tubed skeleton is the tube itself, nothing beside it
    assert np.array_equal(label_skeleton(thin), thin)
    out = LabelSkeletond("label")({"label": torch.from_numpy(mask[None])})
    assert out["skeleton"].shape == (1, *SHAPE) and torch.equal(out["skeleton"][0], torch.from_numpy(tubed))
    assert label_skeleton(np.zeros(SHAPE)).sum() == 0


def test_skeleton_recall_counts_the_share_of_the_skeleton_covered():
    mask = tube()
    skeleton = batch(label_skeleton(mask))
    whole = skeleton_recall_loss(batch(mask), skeleton)
    half = tube(length=slice(4, 12))
    half_loss = skeleton_recall_loss(batch(np.maximum(half, 0.0)), skeleton)
    assert float(whole) == 0.0  # a perfect prediction covers its whole (label-cut) tubed skeleton
    assert 0.35 < float(half_loss) < 0.65
    thin = tube(radius=0)
    assert float(skeleton_recall_loss(batch(thin), batch(label_skeleton(thin)))) == 0.0


def test_cldice_costs_a_break_in_a_tube_more_than_the_same_voxels_lost_at_its_end():
    mask = tube()
    skeleton = batch(label_skeleton(mask))
    broken, shortened = mask.copy(), mask.copy()
    broken[:, :, 11:13] = 0  # a gap in the middle
    shortened[:, :, 18:20] = 0  # the same number of voxels from one end
    assert broken.sum() == shortened.sum()
    label = batch(mask)
    assert cldice_loss(batch(mask), label, skeleton) < cldice_loss(batch(shortened), label, skeleton)
    assert soft_skeleton(batch(mask)).sum() < batch(mask).sum()  # thinner than the tube


def test_blob_loss_weighs_a_missed_small_pvs_as_much_as_a_found_large_one():
    large, small = tube(radius=3), tube(length=slice(2, 5), centre=(3, 3), radius=1)
    label = batch(np.maximum(large, small))
    found_large = blob_loss(batch(large), label)
    assert float(found_large) == pytest.approx(0.5, abs=0.01)  # large: Dice 1; small: Dice 0
    assert float(blob_loss(label, label)) == pytest.approx(0.0, abs=1e-4)
    dice = DiceCELoss(sigmoid=False, batch=True, lambda_ce=0.0)(batch(large), label)
    assert float(dice) < 0.1  # the voxel Dice barely notices the small PVS


def test_every_term_passes_gradients_and_a_one_channel_target_gets_its_skeleton():
    torch.manual_seed(1)
    logits = torch.randn(2, 1, *SHAPE, requires_grad=True)
    label = batch(tube(), tube(radius=1))
    weights = {"dice": 0.5, "bce": 0.5, "skeleton_recall": 1.0, "cldice": 0.5, "blob": 0.5}
    loss = PVSLoss(weights)
    skeleton = torch.stack([torch.from_numpy(label_skeleton(m[0].numpy()))[None] for m in label])
    two_channel = loss(logits, torch.stack([with_skeleton(lab, sk) for lab, sk in zip(label, skeleton, strict=True)]))
    assert float(loss(logits, label)) == pytest.approx(float(two_channel))
    two_channel.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0
    assert needs_skeleton(weights) and not needs_skeleton({"dice": 1.0, "blob": 1.0})


def test_weights_are_checked():
    assert check_weights({"dice": 1, "bce": 0}) == {
        "dice": 1.0,
        "bce": 0.0,
        "skeleton_recall": 0.0,
        "cldice": 0.0,
        "blob": 0.0,
    }
    with pytest.raises(ValueError, match="terms among"):
        check_weights({"dice": 1.0, "focal": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        check_weights({"dice": -1.0})


def test_the_cached_skeleton_is_cropped_and_moved_with_the_label_then_joined_to_it():
    from scripts.training.augmentation import random_transforms
    from scripts.training.losses import JoinSkeletond, skeleton_transforms

    settings = {
        "pos": 1.0,
        "neg": 1.0,
        "max_crop_centres": 1000,
        "pvs_sampling": "voxel",
        "flip_prob": 0.5,
        "affine": {"prob": 1.0, "rotate_range": [0.3, 0.3, 0.3], "scale_range": [0.1, 0.1, 0.1]},
        "elastic": {"prob": 0.0, "sigma_range": [5, 7], "magnitude_range": [50, 150]},
        "bias_field": {"prob": 0.0, "coeff_range": [0.0, 0.1]},
        "contrast": {"prob": 0.0, "gamma": [0.8, 1.2]},
        "noise": {"prob": 0.0, "std": 0.05},
    }
    label = torch.from_numpy(tube()[None])
    item = {"image": label * 0.8 + 0.1, "label": label}
    (cache,) = skeleton_transforms(True)
    assert skeleton_transforms("false") == []
    item = cache(item)
    chain = random_transforms([16, 16, 16], 2, True, settings, skeleton=True)
    assert isinstance(chain[-1], JoinSkeletond) and len(chain) == 14
    for transform in chain:
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(0)
    data = item
    for transform in chain:
        data = transform(data) if not isinstance(data, list) else [transform(d) for d in data]
    for patch in data:
        assert "skeleton" not in patch and patch["label"].shape == (2, 16, 16, 16)
        joined_label, joined_skeleton = patch["label"][0] > 0.5, patch["label"][1] > 0.5
        if joined_skeleton.any():  # the skeleton moved with the label: it lies in the label, dilated by one voxel
            dilated = torch.nn.functional.max_pool3d(joined_label[None, None].float(), 3, 1, 1)[0, 0] > 0
            assert bool(dilated[joined_skeleton].all())
