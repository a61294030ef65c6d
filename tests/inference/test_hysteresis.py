"""Hysteresis thresholding: a tube broken by one faint voxel is joined; tubes apart are not; faint blobs stay out."""

import numpy as np
import pytest
import torch

from scripts.inference.hysteresis import HysteresisThresholdd, hysteresis_mask
from scripts.masks import label_components


def broken_tube() -> np.ndarray:
    """Probabilities: a tube along z at 0.9 with one voxel at 0.6 in its middle; a second tube two voxels away
    (a gap of one voxel at 0.1); a faint blob at 0.6 with no confident voxel."""
    p = np.zeros((20, 20, 30), np.float32)
    p[5, 5, 2:20] = 0.9
    p[5, 5, 10] = 0.6
    p[5, 8, 2:20] = 0.9
    p[5, 7, 2:20] = 0.1
    p[15, 15, 10:13] = 0.6
    return p


def test_a_tube_broken_by_one_faint_voxel_is_joined_and_tubes_apart_are_not():
    p = broken_tube()
    plain = hysteresis_mask(p, 0.8, None)
    joined = hysteresis_mask(p, 0.8, 0.5)
    assert label_components(plain)[1] == 3  # the first tube in two pieces, the second whole
    assert label_components(joined)[1] == 2  # one per tube: the faint voxel bridges the first, the gap stays
    assert joined[5, 5, 10] and not joined[5, 7].any()
    assert not joined[15, 15].any()  # the faint blob has no seed


def test_low_at_or_above_high_is_the_plain_threshold():
    p = broken_tube()
    np.testing.assert_array_equal(hysteresis_mask(p, 0.8, 0.8), p >= 0.8)
    np.testing.assert_array_equal(hysteresis_mask(p, 0.5, 0.3), hysteresis_mask(p, 0.5, 0.3) & (p >= 0.3))
    with pytest.raises(ValueError, match="grow_threshold"):
        hysteresis_mask(p, 0.8, 0.0)


def test_the_transform_keeps_shape_and_type_per_channel():
    p = torch.from_numpy(np.stack([broken_tube(), broken_tube()[::-1].copy()]))
    out = HysteresisThresholdd("pred", threshold=0.8, grow_threshold=0.5)({"pred": p})["pred"]
    assert isinstance(out, torch.Tensor) and out.shape == p.shape and out.dtype == torch.float32
    assert set(np.unique(out.numpy())) == {0.0, 1.0}
    assert out[0, 5, 5, 10] == 1.0 and out[1].sum() == out[0].sum()
    with pytest.raises(ValueError, match="grow_threshold"):
        HysteresisThresholdd("pred", threshold=0.8, grow_threshold=-1)
    plain = HysteresisThresholdd("pred", threshold=0.8, grow_threshold="null")({"pred": p})[
        "pred"
    ]  # as the CLI gives it
    assert plain[0, 5, 5, 10] == 0.0 and HysteresisThresholdd("pred", 0.8, "0.5").grow_threshold == 0.5
