"""Helpers of the inference and export tests: a tiny network, tiny inference overrides, oriented copies."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from conftest import BUNDLE_ROOT, CONFIGS, run_bundle
from monai.bundle import ConfigParser
from monai.inferers import SlidingWindowInferer
from monai.transforms import Compose

from scripts.model.network import build_unetplusplus

SMALL_NETWORK = {"encoder_name": "efficientnet-b0", "decoder_channels": (32, 16, 8, 8, 4)}
SMALL_NETWORK_ARGS = [
    "--encoder_name",
    SMALL_NETWORK["encoder_name"],
    "--decoder_channels",
    json.dumps(list(SMALL_NETWORK["decoder_channels"])),
]
TINY_INFERENCE = [
    *SMALL_NETWORK_ARGS,
    "--patch_size",
    "[32,32,32]",
    "--sw_batch_size",
    "4",
    "--num_workers",
    "0",
]
SHAPE = (20, 24, 18)  # non-cubic; smaller than the 32³ window after resampling, so it is padded
SPACING = (0.8, 1.1, 0.9)  # anisotropic
PVS_FRACTION = 0.03


def ras_affine(spacing=SPACING, origin=(-8.0, -12.0, -7.0)) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def lps_copy(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored left-to-right and anterior-to-posterior flipped (an LPS grid)."""
    flipped = affine.copy()
    for axis in (0, 1):
        flipped[:3, 3] += affine[:3, axis] * (data.shape[axis] - 1)
        flipped[:3, axis] *= -1
    return data[::-1, ::-1].copy(), flipped


def permuted_copy(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored with its voxel axes in the order (z, x, y): an SRA grid."""
    permuted = affine.copy()
    permuted[:3, :3] = affine[:3, [2, 0, 1]]
    return data.transpose(2, 0, 1).copy(), permuted


def save_tiny_model(path: Path, image: Path) -> Path:
    """Save an untrained tiny UNet++ whose logits are rescaled so that about 3 % of ``image`` is PVS.

    An untrained network's logits barely vary; scaling its last layer spreads them, so masks hold many
    components, which makes geometry and parity checks meaningful.
    """
    torch.manual_seed(0)
    network = build_unetplusplus(encoder_weights=None, **SMALL_NETWORK).eval()
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    preprocess = Compose(parser.get_parsed_content("preprocessing_transforms"))
    x = preprocess({"image": str(image)})["image"][None]
    inferer = SlidingWindowInferer([32, 32, 32], sw_batch_size=4, overlap=0.5, mode="gaussian")
    head = network.segmentation_head[0]
    with torch.no_grad():
        scale = 4.0 / float(inferer(x, network).std())
        head.weight.mul_(scale)
        head.bias.mul_(scale)
        head.bias.sub_(float(torch.quantile(inferer(x, network).flatten(), 1 - PVS_FRACTION)))
    torch.save(network.state_dict(), path)
    return path


def infer(*args: str, cwd: Path = BUNDLE_ROOT, config: str = "configs/inference.json"):
    return run_bundle(["run", "inferring", "--config_file", config, *TINY_INFERENCE, *args], cwd=cwd)


def output(proc) -> str:
    return proc.stdout[-4000:] + proc.stderr[-4000:]


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)
