"""Sliding-window inference that runs the network only on windows holding some head.

A window whose every voxel is below the preprocessing's foreground threshold (background: air, padding) gets a
constant background logit instead of the network's output. Every window that covers a head voxel (normalised
intensity >= the threshold) still runs, so inside the head the blended output is the one the plain
``SlidingWindowInferer`` gives (up to floating-point rounding, as windows are batched differently); outside it,
where skipped windows overlap, the blend leans to background.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer

logger = logging.getLogger("pvs_bundle.head_windows")


class HeadSlidingWindowInferer(SlidingWindowInferer):
    """``SlidingWindowInferer`` that skips windows with no voxel at or above ``foreground_threshold``.

    Args:
        foreground_threshold: normalised intensity at or above which a voxel is head (the preprocessing's).
        skip_background: skip the windows without head (true), or run the network on every window (false: the
            plain ``SlidingWindowInferer``, to compare).
        background_logit: the logit written for every voxel of a skipped window (-20: probability 2e-9).
        out_channels: channels of the network's output (1 for the PVS logit), for batches with no window run.
        kwargs: the arguments of ``SlidingWindowInferer`` (roi_size, sw_batch_size, overlap, mode …).

    After each call, ``windows_run`` and ``windows_skipped`` hold that call's counts.
    """

    def __init__(
        self,
        foreground_threshold: float,
        skip_background: bool = True,
        background_logit: float = -20.0,
        out_channels: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.skip_background = skip_background
        self.foreground_threshold = float(foreground_threshold)
        self.background_logit = float(background_logit)
        self.out_channels = int(out_channels)
        self.windows_run = self.windows_skipped = 0

    def _skipping(self, network: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """``network`` evaluated on the head windows of each batch, the background logit on the others."""

        def forward(windows: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            head = windows.flatten(1).amax(dim=1) >= self.foreground_threshold
            if not self.skip_background:
                head = torch.ones_like(head)
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
        out = super().__call__(inputs, self._skipping(network), *args, **kwargs)
        logger.info("Sliding windows: ran %d, skipped %d without head", self.windows_run, self.windows_skipped)
        return out
