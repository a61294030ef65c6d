"""Start a training from trained weights: fine-tuning the shipped model, or continuing a long training.

``--pretrained_weights models/model.pt`` loads that state dict into the network before the first step;
the optimizer, schedule and epoch count start afresh. The weights' ``model.json`` must describe the network the
config builds (:func:`scripts.model.model_file.check_model_settings` names every difference and the flags that match).
A run that resumes from its own ``training_state.pt`` continues from there instead (the state overrides the warm
start, as the log says). Half-precision weights (the shipped model's) are loaded into the float32 network.
A model trained without the full-resolution head may be grown into one with it (``--full_res_channels 16``): its
weights load, and the head, whose last layer starts at zero, starts the network as the loaded model
(:mod:`scripts.model.full_resolution`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scripts.errors import BundleError
from scripts.model.full_resolution import HEAD_PREFIX
from scripts.model.model_file import check_model_settings

logger = logging.getLogger("pvs_bundle.warm_start")


def load_pretrained_weights(
    network: nn.Module, weights_file: str | Path, settings: Mapping[str, Any], state_file: str | Path | None = None
) -> Path:
    """Load a model file's weights into ``network`` for a warm start.

    Args:
        network: the network to train (a DDP wrapper is unwrapped).
        weights_file: a state dict saved by the bundle (``model.pt``), float32 or float16.
        settings: the settings this config builds the network with (``@model_settings``).
        state_file: the run's own training state; when it exists and resuming is on, it will replace these weights.

    Returns:
        The weights file.

    Raises:
        BundleError: when the file is missing, unreadable, or was trained with other settings.
    """
    path = Path(weights_file).expanduser()
    if not path.is_file():
        raise BundleError(f"pretrained_weights {path} does not exist: pass the model.pt to start from.")
    saved = check_model_settings(path, settings, grow=("full_res_channels",))
    grown = bool(saved) and not saved.get("full_res_channels") and bool(settings.get("full_res_channels"))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise BundleError(f"pretrained_weights {path} cannot be read as a PyTorch state dict ({err}).") from err
    target = network.module if isinstance(network, nn.parallel.DistributedDataParallel | nn.DataParallel) else network
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        result = target.load_state_dict(state, strict=not grown)
    except RuntimeError as err:
        raise BundleError(f"pretrained_weights {path} do not fit this network: {str(err).splitlines()[0]}") from err
    if grown:
        misfit = result.unexpected_keys + [k for k in result.missing_keys if not k.startswith(HEAD_PREFIX)]
        if misfit:
            raise BundleError(f"pretrained_weights {path} do not fit this network: {', '.join(misfit[:5])}")
        logger.info("The full-resolution head is new: it starts at zero, the network as %s.", path)
    logger.info("Warm start from %s (%d tensors).", path, len(state))
    if state_file is not None and Path(state_file).expanduser().is_file():
        logger.info("%s exists: a resumed run continues from it, not from the warm start.", state_file)
    return path
