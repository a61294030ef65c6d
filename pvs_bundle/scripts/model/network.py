"""Network factory: a 3D UNet++ from segmentation_models_pytorch_3d with checked sizes and offline-safe weights."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
from torch import nn

from scripts.model.full_resolution import FullResolutionUNetPlusPlus
from scripts.model.model_file import SETTING_DEFAULTS

logger = logging.getLogger("pvs_bundle.network")

SIZE_DIVISOR = 32
# Spellings of "no pretrained weights" on the command line, where fire cannot pass None.
NO_WEIGHTS: tuple[str, ...] = ("null", "none", "")
NORMS: tuple[str, ...] = ("batch", "group")
MAX_GROUPS = 16
# The model settings that build the network (the others, pixdim and intensity, are the preprocessing's).
NETWORK_SETTINGS: tuple[str, ...] = ("encoder_name", "in_channels", "classes", "decoder_channels", "patch_size", "norm")


def check_patch_size(patch_size: Sequence[int], name: str = "patch_size") -> list[int]:
    """Check that a patch (window) size suits the network: three positive multiples of 32.

    Args:
        patch_size: spatial size of training patches or sliding windows.
        name: the config key it came from, for the message.

    Returns:
        The patch size as a list of three ints.

    Raises:
        ValueError: if it is not three positive multiples of 32.
    """
    size = list(patch_size)
    if len(size) != 3 or any(not isinstance(s, int) or s <= 0 or s % SIZE_DIVISOR for s in size):
        raise ValueError(
            f"{name} must be three positive multiples of {SIZE_DIVISOR} (UNet++ downsamples 5 times), "
            f"not {size}; e.g. --{name} '[96, 96, 96]'."
        )
    return size


def _imagenet_cache_path(encoder_name: str) -> Path:
    from segmentation_models_pytorch_3d.encoders import encoders

    url = encoders[encoder_name]["pretrained_settings"]["imagenet"]["url"]
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _load_local_encoder_weights(model: nn.Module, path: Path, in_channels: int) -> None:
    """Load an encoder state dict (2D ImageNet or already 3D) from ``path`` into ``model.encoder``."""
    from segmentation_models_pytorch_3d.utils.convert_weights import convert_2d_weights_to_3d

    if not path.is_file():
        raise FileNotFoundError(
            f"encoder_weights file {path} does not exist: pass the path of an encoder state dict "
            "(a 2D ImageNet checkpoint or model.encoder.state_dict()), 'imagenet', or null."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if any(v.ndim == 4 for v in state.values()):
        state = convert_2d_weights_to_3d(state)
    target = model.encoder.state_dict()
    for key, value in state.items():
        expected = target.get(key)
        if expected is not None and value.ndim == 5 and value.shape[1] != expected.shape[1] and in_channels == 1:
            state[key] = value.sum(1, keepdim=True)
    model.encoder.load_state_dict(state)
    logger.info("Loaded encoder weights from %s", path)


def batchnorm_to_groupnorm(module: nn.Module, max_groups: int = MAX_GROUPS) -> nn.Module:
    """Replace every BatchNorm layer by a GroupNorm with the same affine weights, in place.

    BatchNorm's running statistics come from the training batches; with small batches or small patches (the
    encoder's deepest features of a 32³ patch are 1×1×1) they describe evaluation inputs badly and a model that
    segments well in training mode predicts nothing in evaluation mode. GroupNorm normalises each sample on its
    own, so training and inference behave the same.

    Args:
        module: the network.
        max_groups: the largest number of groups; each layer uses gcd(channels, max_groups).

    Returns:
        The same module.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            channels = child.num_features
            norm = nn.GroupNorm(math.gcd(channels, max_groups), channels, eps=child.eps, affine=True)
            if child.affine:
                norm.weight.data.copy_(child.weight.data)
                norm.bias.data.copy_(child.bias.data)
            setattr(module, name, norm)
        else:
            batchnorm_to_groupnorm(child, max_groups)
    return module


def build_unetplusplus(
    encoder_name: str = "efficientnet-b7",
    encoder_weights: str | None = "imagenet",
    in_channels: int = 1,
    classes: int = 1,
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    patch_size: Sequence[int] | None = None,
    norm: str = "batch",
    memory_efficient_swish: bool = True,
    full_res_channels: int = 0,
) -> nn.Module:
    """Build the PVS segmentation network: a 3D UNet++ that returns logits.

    Args:
        encoder_name: an encoder of segmentation_models_pytorch_3d that works in UNet++
            (resnet*, resnext*, densenet*, dpn*, vgg*, efficientnet-b0 … b7).
        encoder_weights: ``"imagenet"`` (the 2D ImageNet weights inflated to 3D, read from the torch hub
            cache, downloaded if online), ``None`` (or ``"null"``, as the command line spells it) for random
            initialisation, or the path of a local
            encoder state dict (2D ImageNet checkpoint or ``model.encoder.state_dict()``).
        in_channels: input channels (1 for T2w).
        classes: output channels (1: PVS logit).
        decoder_channels: channels of the five decoder stages.
        patch_size: if given, checked to be three multiples of 32 so a bad window fails at start.
        norm: ``"batch"`` (the library's BatchNorm) or ``"group"`` (GroupNorm, for small patches or batches:
            see :func:`batchnorm_to_groupnorm`). Pretrained weights are loaded before the swap.
        memory_efficient_swish: EfficientNet's Swish as a custom autograd function that saves memory in training
            (the default), or the plain Swish (false): same values, and the only one TorchScript can save and
            ONNX can export, so inference and export use it.
        full_res_channels: 0 for the library's UNet++; else the width of a head that sees the input at full
            resolution (:class:`scripts.model.full_resolution.FullResolutionUNetPlusPlus`).

    Returns:
        The network, in training mode.

    Raises:
        ValueError: on a bad patch size, encoder name or ``full_res_channels``.
        FileNotFoundError: when a local weights path does not exist.
        RuntimeError: when ImageNet weights are asked for but are neither cached nor downloadable.
    """
    import segmentation_models_pytorch_3d as smp
    from segmentation_models_pytorch_3d.encoders import encoders

    if patch_size is not None:
        check_patch_size(patch_size)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, not {norm!r}.")
    if encoder_name not in encoders:
        raise ValueError(f"encoder_name must be one of {sorted(encoders)}, not {encoder_name!r}.")
    local_path = None
    if isinstance(encoder_weights, str) and encoder_weights.lower() in NO_WEIGHTS:
        encoder_weights = None
    if encoder_weights not in (None, "imagenet"):
        local_path, encoder_weights = Path(str(encoder_weights)).expanduser(), None
    kwargs = {
        "encoder_name": encoder_name,
        "in_channels": in_channels,
        "classes": classes,
        "decoder_channels": list(decoder_channels),
    }
    try:
        model = smp.UnetPlusPlus(encoder_weights=encoder_weights, **kwargs)
    except (URLError, OSError) as err:
        cache = _imagenet_cache_path(encoder_name)
        raise RuntimeError(
            f"ImageNet weights for {encoder_name} are not in the torch hub cache ({cache}) and could not be "
            f"downloaded ({err}). Put the checkpoint at that path, or pass --encoder_weights /path/to/file.pth, "
            "or train from scratch with --encoder_weights null."
        ) from err
    if local_path is not None:
        _load_local_encoder_weights(model, local_path, in_channels)
    if not memory_efficient_swish and hasattr(model.encoder, "set_swish"):
        model.encoder.set_swish(memory_efficient=False)
    if full_res_channels:
        model = FullResolutionUNetPlusPlus(model, in_channels, decoder_channels[-1], full_res_channels, classes)
    return batchnorm_to_groupnorm(model) if norm == "group" else model


def network_from_settings(
    settings: Mapping[str, Any], encoder_weights: str | None = None, memory_efficient_swish: bool = True
) -> nn.Module:
    """Build the network that a model's settings describe (the configs' ``model_settings``, ``model.json``'s keys).

    The configs build ``network_def`` from the ``model_settings`` that training saves beside the model and that
    inference and evaluation check against ``model.json``, so the network built and the one recorded are the same.

    Args:
        settings: holds :data:`NETWORK_SETTINGS` and may hold those of
            :data:`~scripts.model.model_file.SETTING_DEFAULTS` (each read as its default when absent); its other
            keys, ``pixdim`` and ``intensity``, are the preprocessing's.
        encoder_weights: ImageNet, none or a local file (:func:`build_unetplusplus`).
        memory_efficient_swish: EfficientNet's memory-saving Swish (:func:`build_unetplusplus`).

    Returns:
        The network, in training mode.

    Raises:
        KeyError: naming the settings that are missing.
        ValueError: on a bad patch size, encoder or norm (:func:`build_unetplusplus`).
    """
    missing = [name for name in NETWORK_SETTINGS if name not in settings]
    if missing:
        raise KeyError(f"model settings must hold {list(NETWORK_SETTINGS)}; missing {missing}.")
    return build_unetplusplus(
        encoder_weights=encoder_weights,
        memory_efficient_swish=memory_efficient_swish,
        **{name: settings[name] for name in NETWORK_SETTINGS},
        **{name: settings.get(name, default) for name, default in SETTING_DEFAULTS.items()},
    )
