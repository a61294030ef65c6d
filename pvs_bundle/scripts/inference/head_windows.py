"""Sliding-window inference that runs the network only on windows holding some head.

The head is the preprocessing's foreground (normalised intensity >= ``foreground_threshold``) opened by a
``(2 r + 1)``³ cube (r = ``head_opening``): the opening drops isolated noise voxels above the threshold in the air
around the head, which would otherwise put "head" in nearly every window of a real scan. A window with no head voxel
gets a constant background logit instead of the network's output. Every window that covers a head voxel still
runs, so inside the head the blended output is the plain ``SlidingWindowInferer``'s (up to floating-point rounding,
as windows are batched differently); outside it, where skipped windows overlap, the blend leans to background.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer
from torch.nn import functional

logger = logging.getLogger("pvs_bundle.head_windows")


def head_mask(image: torch.Tensor, threshold: float, opening: int = 1) -> torch.Tensor:
    """Voxels at or above ``threshold``, opened by a ``(2 opening + 1)``³ cube; float 0/1, the image's shape.

    Args:
        image: a batch (N, C, X, Y, Z) of normalised images.
        threshold: the foreground threshold.
        opening: radius of the opening in voxels (0: the thresholded image as it is).

    Raises:
        ValueError: when ``opening`` is negative.
    """
    if opening < 0:
        raise ValueError(f"head_opening must be >= 0, not {opening}.")
    mask = (image >= threshold).any(dim=1, keepdim=True).float()
    if opening:
        size = 2 * opening + 1
        eroded = -functional.max_pool3d(-mask, size, stride=1, padding=opening)
        mask = functional.max_pool3d(eroded, size, stride=1, padding=opening)
    return mask


class HeadSlidingWindowInferer(SlidingWindowInferer):
    """``SlidingWindowInferer`` that skips windows with no head voxel (see :func:`head_mask`).

    Args:
        foreground_threshold: normalised intensity at or above which a voxel is head (the preprocessing's).
        skip_background: skip the windows without head (true), or run the network on every window (false: the
            plain ``SlidingWindowInferer``, to compare).
        head_opening: radius in voxels of the opening that removes specks of noise from the head mask.
        background_logit: the logit written for every voxel of a skipped window (-20: probability 2e-9).
        out_channels: channels of the network's output (1 for the PVS logit), for batches with no window run.
        kwargs: the arguments of ``SlidingWindowInferer`` (roi_size, sw_batch_size, overlap, mode …).

    After each call, ``windows_run`` and ``windows_skipped`` hold that call's counts.
    """

    def __init__(
        self,
        foreground_threshold: float,
        skip_background: bool = True,
        head_opening: int = 1,
        background_logit: float = -20.0,
        out_channels: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.foreground_threshold = float(foreground_threshold)
        self.skip_background = skip_background
        self.head_opening = int(head_opening)
        self.background_logit = float(background_logit)
        self.out_channels = int(out_channels)
        self.windows_run = self.windows_skipped = 0

    def _skipping(self, network: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """``network`` evaluated on the head windows of each batch, the background logit on the others."""

        def forward(windows: torch.Tensor, *args: Any, condition: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            head = condition.flatten(1).amax(dim=1) > 0
            n_run = int(head.sum())
            self.windows_run += n_run
            self.windows_skipped += len(head) - n_run
            if n_run == len(head):
                return network(windows, *args, **kwargs)
            out = windows.new_full((len(head), self.out_channels, *windows.shape[2:]), self.background_logit)
            if n_run:
                out[head] = network(windows[head], *args, **kwargs).to(out.dtype)
            return out

        return forward

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Sliding-window inference of ``inputs`` that skips the windows without head."""
        self.windows_run = self.windows_skipped = 0
        if self.skip_background:
            head = head_mask(torch.as_tensor(inputs), self.foreground_threshold, self.head_opening)
        else:
            head = torch.ones_like(torch.as_tensor(inputs)[:, :1])
        # MONAI slices ``condition`` with each window and passes it to the predictor beside the window.
        head = head.expand(-1, inputs.shape[1], *([-1] * (inputs.ndim - 2)))
        out = super().__call__(inputs, self._skipping(network), *args, condition=head, **kwargs)
        logger.info("Sliding windows: ran %d, skipped %d without head", self.windows_run, self.windows_skipped)
        return out
