"""Numerical precision of the network's forward pass, as one setting for training, validation and inference.

``precision`` is one of:

- ``"fp32"``: full precision everywhere.
- ``"bf16"``: bfloat16 autocast. On a CUDA GPU through MONAI's engines (``amp`` with ``amp_kwargs``); on a CPU
  through :class:`AutocastInferer`, and only where the CPU computes bfloat16 natively (AVX512-BF16 or AMX): without
  those units PyTorch emulates bfloat16 and runs slower than fp32, so fp32 is used and a log line says so.
- ``"fp16"``: float16 automatic mixed precision with gradient scaling; CUDA only (fp32 elsewhere, with a log line).
- ``"auto"`` (the default): fp16 AMP on a CUDA GPU, bf16 on a CPU with native bfloat16, fp32 otherwise.

The network's logits always leave the autocast region as float32, so sigmoid, loss, blending of sliding windows
and thresholds run in full precision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer

logger = logging.getLogger("pvs_bundle.precision")

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 matrix products in hardware (AVX512-BF16 or AMX tiles) for oneDNN."""
    return bool(
        torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    )


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision that runs on ``device``: ``precision`` itself, or fp32 where the device cannot run it fast.

    Args:
        precision: one of :data:`PRECISIONS`.
        device: the device the network runs on.

    Returns:
        ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Raises:
        ValueError: when ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}.")
    device_type = torch.device(device).type
    if device_type == "cuda":
        return "fp16" if precision == "auto" else precision
    if precision in ("auto", "bf16") and cpu_has_native_bf16():
        return "bf16"
    if precision in ("bf16", "fp16"):
        logger.warning(
            "precision %s is not available on %s (%s): using fp32. bf16 needs a CPU with AVX512-BF16 or AMX, "
            "fp16 a CUDA GPU.",
            precision,
            device_type,
            torch.backends.cpu.get_cpu_capability() if device_type == "cpu" else "no native support",
        )
    return "fp32"


def engine_amp(precision: str, device: torch.device | str) -> bool:
    """Whether MONAI's engines should run AMP (CUDA autocast, with gradient scaling in training): on CUDA, not fp32."""
    return torch.device(device).type == "cuda" and resolve_precision(precision, device) != "fp32"


def amp_kwargs(precision: str, device: torch.device | str) -> dict[str, Any]:
    """``amp_kwargs`` for MONAI's engines: the CUDA autocast dtype (empty for fp32)."""
    resolved = resolve_precision(precision, device)
    return {"dtype": DTYPES[resolved]} if resolved in DTYPES else {}


def autocast_network(network: Callable[..., torch.Tensor], dtype: torch.dtype) -> Callable[..., torch.Tensor]:
    """``network`` run under CPU autocast to ``dtype``, its output cast back to float32 (gradients flow through)."""

    def forward(inputs: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.autocast("cpu", dtype=dtype):
            outputs = network(inputs, *args, **kwargs)
        return outputs.float()

    return forward


class AutocastInferer(Inferer):
    """An inferer that runs another inferer's network calls under CPU bfloat16 autocast when ``precision`` asks.

    On CUDA it does nothing: MONAI's engines autocast there (``amp``, ``amp_kwargs``). Only the network call is
    autocast; the inner inferer (sliding-window blending, for one) and what follows run in float32.

    Args:
        inferer: the inferer to wrap (``SimpleInferer``, ``SlidingWindowInferer`` …).
        precision: one of :data:`PRECISIONS`.
        device: the device the network runs on.

    Raises:
        ValueError: when ``precision`` is not one of :data:`PRECISIONS`.
    """

    def __init__(self, inferer: Inferer, precision: str = "auto", device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.inferer = inferer
        resolved = resolve_precision(precision, device)
        self.dtype = DTYPES[resolved] if torch.device(device).type == "cpu" and resolved == "bf16" else None
        logger.info("Network precision on %s: %s", torch.device(device).type, resolved)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run the inner inferer on ``inputs`` with ``network``, autocast when the precision asks for it."""
        if self.dtype is not None:
            network = autocast_network(network, self.dtype)
        return self.inferer(inputs, network, *args, **kwargs)
