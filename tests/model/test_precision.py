"""The precision setting: validation, what runs where, and CPU autocast that keeps float32 logits and gradients."""

import logging

import pytest
import torch
from inference_helpers import SMALL_NETWORK
from monai.inferers import SimpleInferer

from scripts.model.network import build_unetplusplus
from scripts.model.precision import (
    AutocastInferer,
    amp_kwargs,
    autocast_network,
    cpu_has_native_bf16,
    engine_amp,
    resolve_precision,
)


def small_network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_unetplusplus(encoder_weights=None, norm="group", **SMALL_NETWORK)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match=r"precision must be one of .* not 'fp64'"):
        resolve_precision("fp64", "cpu")


def test_cuda_gets_amp_through_monai_engines():
    # torch.device("cuda") needs no GPU: what the engines are told is decided from the device type alone.
    assert resolve_precision("auto", "cuda") == "fp16"
    assert engine_amp("bf16", "cuda") and amp_kwargs("bf16", "cuda") == {"dtype": torch.bfloat16}
    assert not engine_amp("fp32", "cuda:0") and amp_kwargs("fp32", "cuda:0") == {}
    assert not engine_amp("auto", "cpu") and not engine_amp("bf16", "cpu")


def test_cpu_precision_follows_native_bf16(caplog):
    with caplog.at_level(logging.WARNING, logger="pvs_bundle.precision"):
        assert resolve_precision("fp16", "cpu") == "fp32"
        assert resolve_precision("bf16", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert "precision fp16 is not available on cpu" in caplog.text
    assert ("precision bf16 is not available" in caplog.text) != cpu_has_native_bf16()
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32"


def test_autocast_network_gives_float32_logits_close_to_fp32_and_trains():
    # A small convolutional network: bf16 convolutions are emulated, and slow, on CPUs without native bf16.
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.GroupNorm(4, 8), torch.nn.ReLU(), torch.nn.Conv3d(8, 1, 1)
    )
    x = torch.rand(2, 1, 8, 12, 10, generator=torch.Generator().manual_seed(1))
    reference = network(x).detach()
    out = autocast_network(network, torch.bfloat16)(x)
    assert out.dtype == torch.float32
    assert not torch.equal(out.detach(), reference)  # bf16 really ran
    assert torch.corrcoef(torch.stack([out.detach().flatten(), reference.flatten()]))[0, 1] > 0.999
    out.mean().backward()
    grads = [p.grad for p in network.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_autocast_inferer_is_plain_where_bf16_is_not_native():
    network = small_network().eval()
    x = torch.rand(1, 1, 32, 32, 64, generator=torch.Generator().manual_seed(2))
    inferer = AutocastInferer(SimpleInferer(), precision="bf16", device="cpu")
    with torch.no_grad():
        out, reference = inferer(x, network), network(x)
    assert out.dtype == torch.float32
    assert torch.equal(out, reference) != cpu_has_native_bf16()
