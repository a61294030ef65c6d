"""Make the network exportable: TorchScript can trace it and save it, ONNX can export it.

segmentation_models_pytorch_3d's EfficientNet encoders compute Swish with a custom autograd function that
saves memory in training; ``torch.jit.save`` cannot serialise it ("Could not export Python function call
'SwishImplementation'"). Inference keeps no activations for backward, so the plain Swish (``nn.SiLU``) costs
nothing there and gives the same values.
"""

from __future__ import annotations

from torch import nn


def exportable(network: nn.Module) -> nn.Module:
    """Switch an EfficientNet encoder to the plain Swish; other networks are returned unchanged.

    Args:
        network: a network from :func:`scripts.network.build_unetplusplus`.

    Returns:
        The same network, modified in place.
    """
    encoder = getattr(network, "encoder", None)
    if hasattr(encoder, "set_swish"):
        encoder.set_swish(memory_efficient=False)
    return network
