"""A torch module that runs an exported ONNX model with OpenVINO on the CPU, for the inference workflow.

OpenVINO reads the ``.onnx`` file that ``onnx_export`` writes (see :mod:`scripts.model.onnx_network` for the
command), compiles it for this CPU (its own convolution kernels and graph fusions) and runs it at the bundle's
``precision``: ``auto`` and ``bf16`` compute in bfloat16 where the CPU has AMX or AVX512-BF16 (as the eager path's
autocast), fp32 elsewhere and with ``fp32``. Use it with ``configs/inference_openvino.json``; ``docs/performance.md``
says where it pays.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from scripts.model.onnx_network import onnx_model_file
from scripts.model.precision import resolve_precision

logger = logging.getLogger("pvs_bundle.openvino_network")

# the bundle's resolved CPU precision -> OpenVINO's INFERENCE_PRECISION_HINT
PRECISION_HINTS: dict[str, str] = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoNetwork(nn.Module):
    """Run an ONNX model with OpenVINO's CPU plugin behind ``forward``.

    Inputs are moved to the CPU as float32; outputs come back float32 on the input's device.

    Args:
        model_file: the ``.onnx`` file (one float input of shape (N, C, X, Y, Z), one output; dynamic axes).
        num_threads: threads OpenVINO may use (0: its default, one per core).
        precision: the bundle's precision setting (:data:`scripts.model.precision.PRECISIONS`), resolved for the CPU:
            bf16 only where the CPU computes it natively.

    Raises:
        FileNotFoundError: when the model file does not exist.
        ValueError: when the model does not have one 5D input and one output.
    """

    def __init__(self, model_file: str | Path, num_threads: int = 0, precision: str = "auto") -> None:
        super().__init__()
        import openvino as ov

        self.model_file = onnx_model_file(model_file)
        model = ov.Core().read_model(str(self.model_file))
        if (
            len(model.inputs) != 1
            or len(model.outputs) != 1
            or model.inputs[0].get_partial_shape().rank.get_length() != 5
        ):
            raise ValueError(
                f"ONNX model {self.model_file} must have one 5D input and one output, not inputs "
                f"{[str(i.get_partial_shape()) for i in model.inputs]} and {len(model.outputs)} outputs."
            )
        self.precision = resolve_precision(precision, "cpu")
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": PRECISION_HINTS[self.precision]}
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = int(num_threads)
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        logger.info(
            "Compiled ONNX model %s with OpenVINO %s for the CPU in %s", self.model_file, ov.__version__, self.precision
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the model on a batch (N, C, X, Y, Z)."""
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        out = self.compiled(array)[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)
