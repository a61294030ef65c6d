r"""A torch module that runs an exported ONNX model with ONNX Runtime on the CPU, for the inference workflow.

Export the network with its batch and spatial dimensions dynamic, so sliding windows of any size run (from
``pvs_bundle/``)::

    python -m monai.bundle onnx_export network_def --filepath models/model.onnx --ckpt_file models/model.pt \
        --meta_file configs/metadata.json --config_file configs/inference.json --input_shape "[1,1,96,96,96]" \
        --use_trace True --converter_kwargs "{'dynamo': False, 'opset_version': 18, 'input_names': ['image'], \
        'output_names': ['pred'], 'dynamic_axes': {'image': {0: 'batch', 2: 'x', 3: 'y', 4: 'z'}, \
        'pred': {0: 'batch', 2: 'x', 3: 'y', 4: 'z'}}}"

A model exported with fixed dimensions still runs: a fixed batch size of 1 is met by running the windows one
at a time, and a window of another fixed spatial size is refused with a message naming the model file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger("pvs_bundle.onnx_network")

# graph_optimization_level -> ONNX Runtime's GraphOptimizationLevel
GRAPH_OPTIMIZATION_LEVELS: dict[str, str] = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def onnx_model_file(model_file: str | Path) -> Path:
    """Return the path of an exported ONNX model, checked to exist.

    Args:
        model_file: the ONNX file (``~`` expanded).

    Returns:
        The expanded path.

    Raises:
        FileNotFoundError: when the file does not exist, saying how to export it.
    """
    path = Path(model_file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"ONNX model {path} does not exist: export it with `python -m monai.bundle onnx_export "
            "network_def --filepath models/model.onnx ...` (see scripts/model/onnx_network.py), or pass --onnx_file."
        )
    return path


class OnnxRuntimeNetwork(nn.Module):
    """Run an ONNX model with ONNX Runtime's CPU execution provider behind ``forward``.

    Inputs are moved to the CPU as float32; outputs come back on the input's device.

    Args:
        model_file: the ``.onnx`` file (one float input of shape (N, C, X, Y, Z), one output).
        num_threads: threads ONNX Runtime may use inside an operator (0: its default, one per core).
        graph_optimization_level: ONNX Runtime's graph optimisations: disable, basic, extended or all.

    Raises:
        FileNotFoundError: when the model file does not exist.
        ValueError: when the model does not have one 5D input and one output, or on an unknown level.
    """

    def __init__(self, model_file: str | Path, num_threads: int = 0, graph_optimization_level: str = "all") -> None:
        super().__init__()
        import onnxruntime as ort

        if graph_optimization_level not in GRAPH_OPTIMIZATION_LEVELS:
            levels = tuple(GRAPH_OPTIMIZATION_LEVELS)
            raise ValueError(f"graph_optimization_level must be one of {levels}, not {graph_optimization_level!r}.")

        self.model_file = onnx_model_file(model_file)
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION_LEVELS[graph_optimization_level]
        )
        self.session = ort.InferenceSession(str(self.model_file), options, providers=["CPUExecutionProvider"])
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0].shape) != 5:
            raise ValueError(
                f"ONNX model {self.model_file} must have one 5D input and one output, not inputs "
                f"{[(i.name, i.shape) for i in inputs]} and outputs {[o.name for o in outputs]}."
            )
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.input_shape = [d if isinstance(d, int) else None for d in inputs[0].shape]
        logger.info("Loaded ONNX model %s (input %s %s)", self.model_file, self.input_name, inputs[0].shape)

    def _check(self, shape: tuple[int, ...]) -> None:
        batch, *fixed = self.input_shape
        fits = len(shape) == 5 and all(size is None or shape[axis] == size for axis, size in enumerate(fixed, start=1))
        if not fits or (batch is not None and shape[0] % batch):
            sizes = ["N" if batch in (None, 1) else f"{batch}k", *(str(s) if s is not None else "*" for s in fixed)]
            raise ValueError(
                f"input to ONNX model {self.model_file} must have shape ({', '.join(sizes)}), not {tuple(shape)}: "
                "export it with dynamic axes, or run with --patch_size equal to its spatial size."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the model on a batch (N, C, X, Y, Z); a model exported with batch size 1 runs item by item.

        Raises:
            ValueError: when the input's shape does not fit the model's fixed dimensions.
        """
        self._check(tuple(x.shape))
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        batches = [array] if self.input_shape[0] is None else np.split(array, array.shape[0] // self.input_shape[0])
        out = np.concatenate([self.session.run([self.output_name], {self.input_name: b})[0] for b in batches])
        return torch.from_numpy(out).to(x.device)
