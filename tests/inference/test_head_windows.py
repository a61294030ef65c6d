"""Sliding windows without head are skipped; inside the head the output is the plain inferer's."""

import numpy as np
import pytest
import torch
from inference_helpers import SMALL_NETWORK
from monai.inferers import SlidingWindowInferer

from scripts.inference.head_windows import HeadSlidingWindowInferer, head_hull, head_mask
from scripts.model.network import build_unetplusplus

WINDOW = {"roi_size": [32, 32, 32], "sw_batch_size": 4, "overlap": 0.5, "mode": "gaussian"}
THRESHOLD = 0.05


def head_volume(shape=(80, 96, 64), specks: float = 0.0) -> torch.Tensor:
    """A normalised image: an off-centre ellipsoid of random intensity in a background (non-cubic) that is zero
    but for a fraction ``specks`` of isolated noise voxels above the foreground threshold."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    head = ((grid - np.array([0.2, 0.1, 0.0])[:, None, None, None]) ** 2 / 0.35).sum(0) < 1
    rng = np.random.default_rng(0)
    background = np.where(rng.random(shape) < specks, 0.2, 0.0)
    return torch.from_numpy(np.where(head, rng.uniform(0.1, 1.0, shape), background).astype(np.float32))[None, None]


def small_network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_unetplusplus(encoder_weights=None, norm="group", **SMALL_NETWORK).eval()


def test_skipped_windows_leave_the_head_unchanged():
    x, network = head_volume(), small_network()
    inferer = HeadSlidingWindowInferer(THRESHOLD, **WINDOW)
    with torch.no_grad():
        plain, skipping = SlidingWindowInferer(**WINDOW)(x, network), inferer(x, network)
    head = head_mask(x, THRESHOLD).bool()
    assert head.sum() > 0.9 * (x >= THRESHOLD).sum()
    assert inferer.windows_skipped > 0 and inferer.windows_run > 0
    assert inferer.windows_run + inferer.windows_skipped == 4 * 5 * 3  # windows of 80 x 96 x 64, step 16
    torch.testing.assert_close(skipping[head], plain[head], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(skipping[~head], plain[~head])  # background is written there, not computed


def test_a_volume_without_head_never_runs_the_network():
    calls = []

    def network(windows: torch.Tensor) -> torch.Tensor:
        calls.append(len(windows))
        return windows

    inferer = HeadSlidingWindowInferer(THRESHOLD, background_logit=-7.0, **WINDOW)
    out = inferer(torch.full((1, 1, 48, 40, 36), THRESHOLD / 2), network)
    assert calls == [] and inferer.windows_run == 0 and inferer.windows_skipped == 8
    assert out.shape == (1, 1, 48, 40, 36)
    torch.testing.assert_close(out, torch.full_like(out, -7.0))


def test_skipping_off_is_the_plain_inferer():
    x, network = head_volume((48, 64, 40)), small_network()
    inferer = HeadSlidingWindowInferer(THRESHOLD, skip_background="false", clear_outside_head="False", **WINDOW)
    with torch.no_grad():
        torch.testing.assert_close(inferer(x, network), SlidingWindowInferer(**WINDOW)(x, network))
    assert inferer.windows_skipped == 0


def test_noise_specks_in_the_air_do_not_make_windows_run():
    x = head_volume(specks=0.01)

    def network(windows: torch.Tensor) -> torch.Tensor:
        return windows

    opened = HeadSlidingWindowInferer(THRESHOLD, **WINDOW)
    raw = HeadSlidingWindowInferer(THRESHOLD, head_opening=0, **WINDOW)
    opened(x, network), raw(x, network)
    assert raw.windows_skipped == 0  # every window holds a speck
    assert opened.windows_skipped > 0
    assert not head_mask(x, THRESHOLD)[x < THRESHOLD].any()


def test_negative_opening_is_refused():
    with pytest.raises(ValueError, match="head_opening must be >= 0, not -1"):
        head_mask(torch.zeros(1, 1, 4, 5, 6), THRESHOLD, opening=-1)


def test_output_outside_the_head_is_background_and_inside_unchanged():
    """Air away from the head gets the background logit; the head, its dark parts included, keeps the network's."""
    x = head_volume((64, 64, 64))
    x[0, 0, 30:36, 30:36, 28:36] = 0.0  # a dark cavity inside the head (CSF on T1w, say)
    x[0, 0, 16:48, 16:48, :12] = 0.5  # the head cut by the field of view's face z = 0 ...
    x[0, 0, 24:32, 24:32, :4] = 0.0  # ... with a dark pocket open at that face: inside each slice's hull
    x[0, 0, 32:40, 14:26, 28:36] = 0.0  # a dark notch open to the air at the head's edge: the hull holds it

    def network(windows: torch.Tensor) -> torch.Tensor:
        return torch.full_like(windows, 3.0)  # "PVS" everywhere, air included

    kept = HeadSlidingWindowInferer(THRESHOLD, clear_outside_head=False, **WINDOW)(x, network)
    cleared = HeadSlidingWindowInferer(THRESHOLD, background_logit=-9.0, **WINDOW)(x, network)
    head = head_hull(head_mask(x, THRESHOLD)).bool()
    assert head[0, 0, 30:36, 30:36, 28:36].all() and head[0, 0, 24:32, 24:32, :4].all()
    assert head[0, 0, 32:40, 18:26, 28:36].all() and not (head_mask(x, THRESHOLD)[0, 0, 32:40, 18:26, 28:36] > 0).any()
    torch.testing.assert_close(cleared[head], kept[head])
    assert (kept[~head] > 0).any()  # windows holding head also predicted "PVS" in the air
    assert (cleared[~head] == -9.0).all() and (~head).sum() > 0


def test_the_hull_of_a_head_without_area_is_the_head_itself():
    head = torch.zeros(1, 1, 8, 8, 4)
    head[0, 0, 2:6, 3, 1] = 1.0  # a line: no convex hull
    head[0, 0, 5, 5, 2] = 1.0  # one voxel
    torch.testing.assert_close(head_hull(head, margin=0), head)


def test_the_hull_of_each_slice_is_skimages_convex_hull_image():
    """The row-run hull (a tenth of skimage's time) gives skimage's convex_hull_image pixel for pixel."""
    from skimage.morphology import convex_hull_image

    corner = np.zeros((6, 6), dtype=bool)
    corner[1, 1] = corner[1, 4] = corner[4, 1] = True  # a right triangle: the hypotenuse's pixels are on it
    expected = np.zeros((6, 6), dtype=bool)
    for row in range(1, 5):
        expected[row, 1 : 6 - row] = True
    volume = np.zeros((6, 6, 41), dtype=bool)
    volume[:, :, 0] = corner
    rng = np.random.default_rng(3)
    for k in range(1, 41):
        volume[rng.integers(0, 6, 5), rng.integers(0, 6, 5), k] = True
    hull = head_hull(torch.from_numpy(volume)[None, None].float(), margin=0)[0, 0].numpy() > 0
    np.testing.assert_array_equal(hull[:, :, 0], expected)
    for k in range(1, 41):
        np.testing.assert_array_equal(hull[:, :, k], convex_hull_image(volume[:, :, k]))


@pytest.mark.parametrize("opening", [1, 2])
def test_the_separable_opening_is_the_cubes_opening(opening):
    """1D minimum and maximum filters along each axis give the opening by the whole cube, edges included."""
    x = (head_volume((30, 28, 24), specks=0.3) > THRESHOLD).float().repeat(2, 1, 1, 1, 1)
    x[1] = (torch.rand(1, 30, 28, 24, generator=torch.Generator().manual_seed(opening)) > 0.2).float()
    size = 2 * opening + 1
    eroded = -torch.nn.functional.max_pool3d(-x, size, stride=1, padding=opening)
    expected = torch.nn.functional.max_pool3d(eroded, size, stride=1, padding=opening)
    assert expected.sum() > 0
    torch.testing.assert_close(head_mask(x, 0.5, opening), expected)
