"""A torch module that runs an exported ONNX model with OpenVINO on the CPU, for the inference workflow.

OpenVINO reads the ``.onnx`` file that ``onnx_export`` writes (see :mod:`scripts.model.onnx_network` for the
command), compiles it for this CPU (its own convolution kernels and graph fusions) and runs it at the bundle's
``precision``: ``auto`` and ``bf16`` compute in bfloat16 where the CPU has AMX or AVX512-BF16 (as the eager path's
autocast), fp32 elsewhere and with ``fp32``. Use it with ``configs/inference_openvino.json``; ``docs/performance.md``
says where it pays.

The ONNX file keeps dynamic axes, but OpenVINO runs a static shape faster (measured in ``docs/performance.md``: 208
against 272 ms a 96³ window in bf16, 166 against 192 ms a 64³ window in fp32). So the model is compiled once per
window shape met, for one window at a time (a sliding window meets one shape; two at most, where the image is
smaller than the window), with OpenVINO's throughput hint: the windows of a batch run as parallel inference requests
(one stream per core or so, as OpenVINO chooses), 7-12 % faster a window than one request on both cores.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

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
        self.config = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": PRECISION_HINTS[self.precision]}
        if num_threads:
            self.config["INFERENCE_NUM_THREADS"] = int(num_threads)
        self.core = ov.Core()
        self.model = model
        self.queues: dict[tuple[int, ...], Any] = {}
        self.version = ov.__version__

    def queue_for(self, shape: tuple[int, ...]) -> Any:
        """Inference requests of the model compiled for one input of ``shape`` ``(1, C, X, Y, Z)`` (made once)."""
        if shape not in self.queues:
            import openvino as ov

            model = self.model.clone()
            model.reshape(list(shape))
            compiled = self.core.compile_model(model, "CPU", self.config)
            requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self.queues[shape] = ov.AsyncInferQueue(compiled, requests)
            logger.info(
                "Compiled ONNX model %s with OpenVINO %s for the CPU in %s, input %s, %d parallel requests",
                self.model_file,
                self.version,
                self.precision,
                list(shape),
                requests,
            )
        return self.queues[shape]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the model on a batch (N, C, X, Y, Z): each window one request, the requests in parallel."""
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        queue = self.queue_for((1, *array.shape[1:]))
        outputs: list[np.ndarray | None] = [None] * len(array)

        def keep(request: Any, index: int) -> None:
            outputs[index] = np.array(request.get_output_tensor(0).data, dtype=np.float32)  # a copy of its buffer

        queue.set_callback(keep)
        for index in range(len(array)):
            queue.start_async({0: array[index : index + 1]}, index)
        queue.wait_all()
        return torch.from_numpy(np.concatenate(outputs)).to(x.device)
