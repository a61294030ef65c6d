"""Mirror test-time augmentation: the prediction averaged over flips of the input, as nnU-Net mirrors.

:class:`MirrorInferer` wraps another inferer (the sliding window): it segments the input as it is and flipped along
every combination of the given spatial axes (``2^k`` passes for ``k`` axes), flips each output back, averages the
sigmoid probabilities and returns their logit, so that the sigmoid and threshold that follow are unchanged. It works
at inferer level, so for eager, TorchScript and ONNX networks alike. The axes are those of the preprocessed image
(RAS after the preprocessing's orientation: 0 left-right, 1 posterior-anterior, 2 inferior-superior).

``tta`` is one of:

- ``"none"`` (the default): the wrapped inferer alone, one pass.
- ``"mirror"``: :class:`MirrorInferer` over ``tta_axes`` (default all three: 8 passes).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer

from scripts.settings import TTA_MODES

SPATIAL_AXES: tuple[int, ...] = (0, 1, 2)
LOGIT_EPS = 1e-6


def check_axes(axes: Sequence[int]) -> tuple[int, ...]:
    """Return ``axes`` as a tuple of distinct spatial axes.

    Raises:
        ValueError: if ``axes`` is empty, holds a repeated axis or one that is not 0, 1 or 2.
    """
    values = tuple(axes)
    valid = all(isinstance(a, int) and not isinstance(a, bool) and a in SPATIAL_AXES for a in values)
    if not values or not valid or len(set(values)) != len(values):
        raise ValueError(f"tta_axes must be distinct spatial axes among {list(SPATIAL_AXES)}, not {list(values)}.")
    return values


class MirrorInferer(Inferer):
    """Run an inferer on the input and on each of its flips; return the logit of the mean probability.

    Args:
        inferer: the inferer to wrap (``SlidingWindowInferer`` …); its output must be the network's logits.
        axes: the spatial axes (0, 1, 2 of the ``[batch, channel, x, y, z]`` input) to flip, every combination.

    Raises:
        ValueError: if ``axes`` are not distinct spatial axes.
    """

    def __init__(self, inferer: Inferer, axes: Sequence[int] = SPATIAL_AXES) -> None:
        super().__init__()
        self.inferer = inferer
        self.axes = check_axes(axes)

    def flips(self) -> list[tuple[int, ...]]:
        """The tensor dimensions flipped in each pass, the unflipped pass first (``2^k`` passes)."""
        dims = [axis + 2 for axis in self.axes]
        return [flip for k in range(len(dims) + 1) for flip in itertools.combinations(dims, k)]

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """The logit (clamped to ``[1e-6, 1 - 1e-6]`` in probability) of the mean probability over every flip."""
        flips = self.flips()
        total = torch.sigmoid(self.inferer(inputs, network, *args, **kwargs).float())
        for flip in flips[1:]:
            logits = self.inferer(torch.flip(inputs, flip), network, *args, **kwargs)
            total += torch.flip(torch.sigmoid(logits.float()), flip)
        return torch.logit(total / len(flips), eps=LOGIT_EPS)


def tta_inferer(inferer: Inferer, tta: str = "none", axes: Sequence[int] = SPATIAL_AXES) -> Inferer:
    """The inferer for the ``tta`` setting: ``inferer`` itself for ``"none"``, mirrored over ``axes`` for ``"mirror"``.

    Raises:
        ValueError: if ``tta`` is not one of :data:`TTA_MODES` or ``axes`` are not distinct spatial axes.
    """
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {list(TTA_MODES)}, not {tta!r}.")
    check_axes(axes)
    return inferer if tta == "none" else MirrorInferer(inferer, axes)
