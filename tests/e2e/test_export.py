"""Export through the real `python -m monai.bundle` commands, parity of the exported models, Model Zoo conformance."""

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import BUNDLE_ROOT, CONFIGS, REPO_ROOT, run_bundle, synthetic_case, write_nifti
from inference_helpers import (
    SHAPE,
    SMALL_NETWORK,
    SMALL_NETWORK_ARGS,
    infer,
    lps_copy,
    output,
    ras_affine,
    save_tiny_model,
)
from monai.bundle import ConfigParser, ConfigWorkflow

from scripts.model.network import build_unetplusplus
from scripts.model.onnx_network import OnnxRuntimeNetwork
from scripts.model.openvino_network import OpenVinoNetwork

SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "meta_schema_20240725.json"
EXPORT_SHAPE = "[1,1,32,32,32]"
ONNX_CONVERTER_KWARGS = (
    "{'dynamo': False, 'opset_version': 18, 'input_names': ['image'], 'output_names': ['pred'], "
    "'dynamic_axes': {'image': {0: 'batch', 2: 'x', 3: 'y', 4: 'z'}, 'pred': {0: 'batch', 2: 'x', 3: 'y', 4: 'z'}}}"
)
# ONNX Runtime's CPU kernels against PyTorch's, both float32. Probabilities: |difference| <= 1e-4 (measured 4.9e-6).
# Logits of this model reach |25|: |difference| <= 2e-4 + 1e-4 |logit| (measured up to 1.2e-4 on a CPU with
# AVX-512 and 1.4e-4 near zero on an AVX2-only AMD EPYC, whose kernels accumulate in another order).
ONNX_ATOL = 1e-4
ONNX_LOGIT_ATOL = 2e-4
ONNX_RTOL = 1e-4
# the exported paths are compared with eager at one precision: on a CPU with native bf16, `auto` would run bf16
FP32 = ("--precision", "fp32")
EXPORT_ARGS = [
    "--meta_file",
    "configs/metadata.json",
    "--config_file",
    "configs/inference.json",
    "--input_shape",
    EXPORT_SHAPE,
    *SMALL_NETWORK_ARGS,
]


def tiny_network(model_file: Path) -> torch.nn.Module:
    network = build_unetplusplus(encoder_weights=None, memory_efficient_swish=False, **SMALL_NETWORK)
    network.load_state_dict(torch.load(model_file, weights_only=True))
    return network.eval()


def probabilities(folder: Path) -> np.ndarray:
    return np.asarray(nib.load(str(folder / "lps_desc-pvs_probseg.nii.gz")).dataobj)


def mask(folder: Path) -> np.ndarray:
    return np.asarray(nib.load(str(folder / "lps_desc-pvs_mask.nii.gz")).dataobj)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny model, its TorchScript and ONNX exports, and the eager model's outputs on one LPS image."""
    root = tmp_path_factory.mktemp("export")
    write_nifti(root / "in" / "lps.nii.gz", *lps_copy(synthetic_case(SHAPE)[0], ras_affine()))
    model = save_tiny_model(root / "model.pt", root / "in" / "lps.nii.gz")
    ckpt = ["--ckpt_file", str(model), "--model_file", str(model)]  # model_file: whose model.json the config reads
    ts = run_bundle(
        ["ckpt_export", "network_def", "--filepath", str(root / "model.ts"), *ckpt, *EXPORT_ARGS, "--use_trace", "True"]
    )
    assert ts.returncode == 0, output(ts)
    onnx = run_bundle(
        [
            "onnx_export",
            "network_def",
            "--filepath",
            str(root / "model.onnx"),
            *ckpt,
            *EXPORT_ARGS,
            "--use_trace",
            "True",
            "--converter_kwargs",
            ONNX_CONVERTER_KWARGS,
        ]
    )
    assert onnx.returncode == 0, output(onnx)
    args = ["--input_dir", str(root / "in"), "--output_dir", str(root / "eager"), "--save_probabilities", "true"]
    args += ["--backend", "eager"]  # the PyTorch network itself, the reference of every exported path
    eager = infer(*args, "--model_file", str(model), *FP32)
    assert eager.returncode == 0, output(eager)
    return root


def test_torchscript_inference_gives_the_eager_masks(exported):
    config = "['configs/inference.json','configs/inference_torchscript.json']"
    proc = infer(
        "--input_dir",
        str(exported / "in"),
        "--output_dir",
        str(exported / "ts"),
        "--ts_file",
        str(exported / "model.ts"),
        "--model_file",  # whose model.json gives the preprocessing and window (none here: the defaults)
        str(exported / "model.pt"),
        "--save_probabilities",
        "true",
        *FP32,
        config=config,
    )
    assert proc.returncode == 0, output(proc)
    assert np.array_equal(mask(exported / "ts"), mask(exported / "eager"))
    assert mask(exported / "eager").any()
    np.testing.assert_allclose(probabilities(exported / "ts"), probabilities(exported / "eager"), atol=1e-6)


def test_onnx_inference_matches_eager_within_tolerance(exported):
    config = "['configs/inference.json','configs/inference_onnx.json']"
    proc = infer(
        "--input_dir",
        str(exported / "in"),
        "--output_dir",
        str(exported / "onnx"),
        "--onnx_file",
        str(exported / "model.onnx"),
        "--model_file",
        str(exported / "model.pt"),
        "--save_probabilities",
        "true",
        *FP32,
        config=config,
    )
    assert proc.returncode == 0, output(proc)
    eager_prob, onnx_prob = probabilities(exported / "eager"), probabilities(exported / "onnx")
    np.testing.assert_allclose(onnx_prob, eager_prob, atol=ONNX_ATOL)
    decided = np.abs(eager_prob - 0.5) > ONNX_ATOL  # voxels a difference within tolerance cannot flip
    assert np.array_equal(mask(exported / "onnx")[decided], mask(exported / "eager")[decided])


def test_openvino_inference_in_fp32_matches_eager_within_tolerance(exported):
    config = "['configs/inference.json','configs/inference_openvino.json']"
    args = ["--input_dir", str(exported / "in"), "--output_dir", str(exported / "openvino")]
    onnx = ("--onnx_file", str(exported / "model.onnx"), "--model_file", str(exported / "model.pt"))
    proc = infer(*args, *onnx, "--save_probabilities", "true", *FP32, config=config)
    assert proc.returncode == 0, output(proc)
    assert "with OpenVINO" in proc.stderr + proc.stdout and "for the CPU in fp32" in proc.stderr + proc.stdout
    eager_prob, openvino_prob = probabilities(exported / "eager"), probabilities(exported / "openvino")
    np.testing.assert_allclose(openvino_prob, eager_prob, atol=ONNX_ATOL)
    decided = np.abs(eager_prob - 0.5) > ONNX_ATOL
    assert np.array_equal(mask(exported / "openvino")[decided], mask(exported / "eager")[decided])


def test_openvino_model_takes_windows_of_any_size_and_batch(exported):
    network = OpenVinoNetwork(exported / "model.onnx", num_threads=1, precision="fp32")
    x = torch.rand(3, 1, 32, 64, 96)
    with torch.no_grad():
        expected = tiny_network(exported / "model.pt")(x).numpy()
    np.testing.assert_allclose(network(x).numpy(), expected, rtol=ONNX_RTOL, atol=ONNX_LOGIT_ATOL)


def test_onnx_model_takes_windows_of_any_size_and_batch(exported):
    network = OnnxRuntimeNetwork(exported / "model.onnx")
    assert network.input_shape == [None, 1, None, None, None]
    x = torch.rand(3, 1, 32, 64, 96)
    with torch.no_grad():
        expected = tiny_network(exported / "model.pt")(x).numpy()
        np.testing.assert_allclose(network(x).numpy(), expected, rtol=ONNX_RTOL, atol=ONNX_LOGIT_ATOL)


def test_onnx_model_with_fixed_shape_runs_windows_one_by_one_and_refuses_other_sizes(exported, tmp_path):
    network = tiny_network(exported / "model.pt")
    fixed = tmp_path / "fixed.onnx"
    torch.onnx.export(network, (torch.rand(1, 1, 32, 32, 32),), str(fixed), dynamo=False)
    runtime = OnnxRuntimeNetwork(fixed)
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(runtime(x).numpy(), network(x).numpy(), rtol=ONNX_RTOL, atol=ONNX_ATOL)
    expected = rf"input to ONNX model {fixed} must have shape \(N, 1, 32, 32, 32\), not \(1, 1, 64, 32, 32\)"
    with pytest.raises(ValueError, match=expected):
        runtime(torch.rand(1, 1, 64, 32, 32))


def test_missing_onnx_model_says_how_to_export_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"ONNX model {tmp_path / 'model.onnx'} does not exist: export it"):
        OnnxRuntimeNetwork(tmp_path / "model.onnx")


@pytest.mark.parametrize(
    "overlay", [None, "inference_torchscript.json", "inference_onnx.json", "inference_openvino.json"]
)
def test_inference_configs_meet_the_model_zoo_property_contract(exported, tmp_path, overlay):
    configs = [str(CONFIGS / "inference.json")] + ([str(CONFIGS / overlay)] if overlay else [])
    workflow = ConfigWorkflow(
        config_file=configs,
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="infer",
        input_dir=str(exported / "in"),
        output_dir=str(tmp_path / "out"),
        ts_file=str(exported / "model.ts"),
        onnx_file=str(exported / "model.onnx"),
        encoder_name=SMALL_NETWORK["encoder_name"],
        decoder_channels=list(SMALL_NETWORK["decoder_channels"]),
        num_workers=0,
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert workflow.dataset_dir == str(exported / "in") and workflow.bundle_root == "."


def test_metadata_is_valid_against_the_model_zoo_schema(tmp_path):
    if not SCHEMA.is_file():
        pytest.skip(f"the zoo schema is not at {SCHEMA} (CI has ../shared beside the repository)")
    schema = shutil.copy(SCHEMA, tmp_path / "schema.json")  # verify_metadata downloads only when it is absent
    proc = run_bundle(["verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(schema)])
    assert proc.returncode == 0, output(proc)
    assert "metadata is verified with no error" in proc.stdout + proc.stderr


def test_network_input_and_output_match_the_metadata():
    """As the zoo runs it: inference.json's defaults, the shipped network."""
    args = ["--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", "--device", "cpu"]
    proc = run_bundle(["verify_net_in_out", "network_def", *args])
    assert proc.returncode == 0, output(proc)
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr


def test_model_zoo_files_are_in_place():
    apache = "Apache License\n                           Version 2.0, January 2004"
    assert apache in (REPO_ROOT / "LICENSE").read_text()
    assert (BUNDLE_ROOT / "LICENSE").read_text() == (REPO_ROOT / "LICENSE").read_text()
    data_license = (BUNDLE_ROOT / "docs" / "data_license.txt").read_text()
    assert "CC0" in data_license and "10.18112/openneuro.ds005595.v1.0.0" in data_license
    large_files = ConfigParser.load_config_file(BUNDLE_ROOT / "large_files.yml")["large_files"]  # as the zoo reads it
    assert large_files == []  # the shipped weights are in git: nothing for the zoo to download, no placeholder URL
    assert "large_files.yml" in (BUNDLE_ROOT / "docs" / "README.md").read_text()  # says how to produce them
