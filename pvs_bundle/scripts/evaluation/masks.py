"""The bundle's two binarisation rules, those of the VALDO 2021 evaluation code (Task 1, PVS).

- A **prediction** voxel is foreground when its value (a sigmoid probability, or 0/1) is **>= 0.5**. This is
  also what MONAI's ``AsDiscreted(threshold=0.5)`` in the configs does (``img >= threshold``), so the masks the
  bundle writes, scores and measures are one and the same. Evaluation and inference binarise the probabilities once,
  at their ``threshold`` setting (0.5 unless the model stores another:
  :func:`scripts.model.model_file.resolve_threshold`), and this rule then reads that 0/1 mask.
- A **reference** voxel is foreground when its value is **non-zero after rounding to one decimal**: 0/1 and
  0/255 masks as expected, and a voxel marked by one of two raters (0.5) counts; values below 0.05 (resampling
  or compression noise) do not.

For 0/1 masks the two rules agree. Training targets are binarised by ``AsDiscreted(threshold=0.5)`` in the
preprocessing (``>= 0.5``); only the scoring reads references with the reference rule.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

PREDICTION_THRESHOLD = 0.5
REFERENCE_DECIMALS = 1

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def prediction_mask(values: ArrayT) -> ArrayT:
    """Binarise a prediction: ``values >= 0.5``.

    Args:
        values: probabilities or a 0/1 mask, numpy array (or array-like) or torch tensor.

    Returns:
        A boolean array (or tensor) of the same shape.
    """
    if isinstance(values, torch.Tensor):
        return values >= PREDICTION_THRESHOLD
    return np.asarray(values) >= PREDICTION_THRESHOLD


def reference_mask(values: ArrayT) -> ArrayT:
    """Binarise a reference: non-zero after rounding to one decimal.

    Args:
        values: a reference mask (0/1, 0/255, or rater-agreement fractions), numpy array or torch tensor.

    Returns:
        A boolean array (or tensor) of the same shape.
    """
    if isinstance(values, torch.Tensor):
        return torch.round(values.double(), decimals=REFERENCE_DECIMALS) != 0
    return np.round(np.asarray(values, dtype=np.float64), REFERENCE_DECIMALS) != 0
