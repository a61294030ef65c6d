"""Every faster inference path gives the fp32 eager mask: voxel Dice >= 0.995 and PVS count within 1 %."""

import re

import numpy as np
import pytest
import torch
from conftest import CONFIGS, synthetic_case, write_nifti
from inference_helpers import SHAPE, SMALL_NETWORK, infer, output, ras_affine, save_tiny_model
from monai.bundle import ConfigParser
from monai.inferers import SlidingWindowInferer
from monai.losses import DiceCELoss
from monai.transforms import Compose

from scripts.evaluation.path_agreement import mask_agreement
from scripts.inference.head_windows import HeadSlidingWindowInferer
from scripts.model.network import build_unetplusplus
from scripts.model.openvino_network import OpenVinoNetwork
from scripts.model.precision import autocast_network, cpu_has_native_bf16

WINDOW = {"roi_size": [32, 32, 32], "sw_batch_size": 4, "overlap": 0.5, "mode": "gaussian"}
MIN_DICE, MAX_COUNT_CHANGE = 0.995, 0.01


def head_in_field_of_view(image: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``image``'s head (no background noise, like a masked scan) in a corner of a larger field of view, and a bright
    marker in the opposite corner: the head crop keeps both, and the windows between them hold no head."""
    volume = np.zeros(shape)
    volume[: image.shape[0], : image.shape[1], : image.shape[2]] = np.where(image > 100, image, 0)
    volume[-4:, -4:, -4:] = image.max()
    return volume


def bright_voxels(x: torch.Tensor) -> torch.Tensor:
    """The tubes and the marker of the preprocessed case: at 1.0, the head about 0.4."""
    return x > 0.7


def train_tiny_network(x: torch.Tensor, steps: int = 160, seed: int = 0) -> torch.nn.Module:
    """A tiny GroupNorm UNet++ trained briefly, on 32³ windows of the preprocessed volume ``x``, to find its bright
    tubes: its logits are confident away from the tubes' borders, as a trained model's are, so the masks test the
    paths and not the rounding of logits that an untrained model leaves near the threshold everywhere."""
    torch.manual_seed(seed)
    network = build_unetplusplus(encoder_weights=None, memory_efficient_swish=False, norm="group", **SMALL_NETWORK)
    target = bright_voxels(x).float()
    bright = torch.nonzero(target[0, 0])
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    loss = DiceCELoss(sigmoid=True, batch=True)
    limits = torch.tensor(x.shape[2:]) - 32
    for _ in range(steps):
        windows = []
        for i in range(4):  # half the windows around a tube voxel, half anywhere
            if i % 2 == 0:
                corner = bright[torch.randint(len(bright), (1,))][0] - torch.randint(4, 28, (3,))
                corner = corner.clamp(torch.zeros(3, dtype=torch.long), limits)
            else:
                corner = (torch.rand(3) * (limits + 1)).long()
            windows.append((slice(None), slice(None), *[slice(int(c), int(c) + 32) for c in corner]))
        optimizer.zero_grad()
        loss(network(torch.cat([x[w] for w in windows])), torch.cat([target[w] for w in windows])).backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
    return network.eval()


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A preprocessed head in a padded field of view, and a briefly trained tiny UNet++ whose masks hold many PVS.

    120 tubes make the intensity normalisation's 99.5th percentile land on them (tubes 1.0, head about 0.4, as PVS
    stand out in a real T2w): with fewer, the percentile lands in the head's noise, the tubes differ from the head by
    less than bf16's resolution near 1.0 (2^-8), and any bf16 path would flip voxels of the input itself."""
    folder = tmp_path_factory.mktemp("fast_paths")
    image, _ = synthetic_case(shape=(40, 56, 36), seed=3, n_tubes=120)
    image_file = write_nifti(folder / "sub-01_T2w.nii.gz", head_in_field_of_view(image, (72, 88, 64)))
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    x = Compose(parser.get_parsed_content("preprocessing_transforms"))({"image": str(image_file)})["image"][None]
    x = x.as_tensor()
    network = train_tiny_network(x)
    onnx_file = folder / "model.onnx"
    axes = {0: "batch", 2: "x", 3: "y", 4: "z"}
    torch.onnx.export(
        network,
        (torch.rand(1, 1, 32, 32, 32),),
        str(onnx_file),
        dynamo=False,
        input_names=["image"],
        output_names=["pred"],
        dynamic_axes={"image": axes, "pred": axes},
    )
    return x, network, float(parser["foreground_threshold"]), onnx_file


def mask(logits: torch.Tensor) -> np.ndarray:
    return (logits[0, 0] > 0).numpy()


def paths(network: torch.nn.Module, threshold: float, onnx_file) -> dict:
    """The faster fp32 paths; the bf16 ones (only where the CPU computes bf16 natively) have their own test below."""
    traced = torch.jit.trace(network, torch.rand(1, 1, 32, 32, 32))
    openvino = OpenVinoNetwork(onnx_file, precision="fp32")
    skipping = HeadSlidingWindowInferer(threshold, **WINDOW)
    runs = {
        "skip windows": lambda x: skipping(x, network),
        "torchscript + skip windows": lambda x: skipping(x, traced),
        "openvino fp32 + skip windows": lambda x: skipping(x, openvino),
    }
    return runs


def skipped_windows(x: torch.Tensor, threshold: float) -> int:
    inferer = HeadSlidingWindowInferer(threshold, **WINDOW)
    inferer(x, lambda windows: torch.zeros_like(windows))
    return inferer.windows_skipped


def test_faster_paths_agree_with_fp32_eager(case):
    x, network, threshold, onnx_file = case
    with torch.no_grad():
        reference = mask(SlidingWindowInferer(**WINDOW)(x, network))
        runs = paths(network, threshold, onnx_file)
        results = {name: mask_agreement(reference, mask(run(x))) for name, run in runs.items()}
    assert reference.mean() > 0.005 and mask_agreement(reference, reference)["count_reference"] >= 15
    assert mask_agreement(bright_voxels(x)[0, 0].numpy(), reference)["dice"] >= 0.6  # the model found the tubes
    assert skipped_windows(x, threshold) > 0
    for name, result in results.items():
        assert result["dice"] >= MIN_DICE, (name, result)
        assert result["count_change"] <= MAX_COUNT_CHANGE, (name, result)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="bf16 runs only on a CPU with AMX or AVX512-BF16")
def test_bf16_paths_agree_with_fp32_eager(case):
    """Eager bf16 (CPU autocast) and OpenVINO bf16 (``configs/inference_openvino.json``, ``precision auto``), held to
    the same bar as the fp32 paths; their logits differ from fp32's, so bf16 did run."""
    x, network, threshold, onnx_file = case
    openvino = OpenVinoNetwork(onnx_file, precision="auto")
    assert openvino.precision == "bf16"
    skipping = HeadSlidingWindowInferer(threshold, **WINDOW)
    runs = {
        "eager bf16 + skip windows": lambda x: skipping(x, autocast_network(network, torch.bfloat16)),
        "openvino bf16 + skip windows": lambda x: skipping(x, openvino),
    }
    with torch.no_grad():
        logits = SlidingWindowInferer(**WINDOW)(x, network)
        outputs = {name: run(x) for name, run in runs.items()}
    for name, out in outputs.items():
        result = mask_agreement(mask(logits), mask(out))
        assert result["dice"] >= MIN_DICE, (name, result)
        assert result["count_change"] <= MAX_COUNT_CHANGE, (name, result)
        assert float((out.float() - logits).abs().max()) > 1e-3, name  # bf16 rounding moved the logits


def test_inferring_says_which_precision_and_windows_ran(tmp_path):
    """The real `run inferring` with --precision: the precision that ran and the windows skipped are logged."""
    volume = head_in_field_of_view(synthetic_case(SHAPE)[0], (48, 56, 44))
    image = write_nifti(tmp_path / "in" / "sub-01_T2w.nii.gz", volume, ras_affine())
    model = save_tiny_model(tmp_path / "model.pt", image)
    common = ["--input_dir", str(tmp_path / "in"), "--model_file", str(model)]
    proc = infer(*common, "--output_dir", str(tmp_path / "out"), "--precision", "bf16", "--device", "cpu")
    assert proc.returncode == 0, output(proc)
    ran = "bf16" if cpu_has_native_bf16() else "fp32"
    assert f"Network precision on cpu: {ran}" in output(proc)
    assert ("precision bf16 is not available on cpu" in output(proc)) != cpu_has_native_bf16()
    skipped = re.search(r"Sliding windows: ran (\d+), skipped (\d+) without head", output(proc))
    assert skipped and int(skipped[1]) > 0 and int(skipped[2]) > 0, output(proc)
    assert list((tmp_path / "out").rglob("sub-01_desc-pvs_mask.nii.gz"))

    proc = infer(*common, "--output_dir", str(tmp_path / "bad"), "--precision", "fp64")
    assert proc.returncode != 0
    assert "precision must be one of ('auto', 'fp32', 'bf16', 'fp16'), not 'fp64'" in output(proc)
