"""Accuracy levers at prediction time: mirror TTA, removal of small components, the threshold stored with the model."""

import itertools
import json
import logging

import numpy as np
import pytest
import torch
from conftest import CONFIGS
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.inferers import SimpleInferer, SlidingWindowInferer
from scipy import ndimage

from scripts.errors import BundleError
from scripts.inference.head_windows import HeadSlidingWindowInferer
from scripts.inference.small_components import RemoveSmallComponentsd
from scripts.inference.tta import MirrorInferer, tta_inferer
from scripts.model.model_file import resolve_threshold, resolve_tta
from scripts.model.precision import AutocastInferer

SHAPE = (12, 16, 20)  # non-cubic; (size - 8) is a multiple of the window step 4, so the windows tile symmetrically


def toy_network(symmetric: bool) -> torch.nn.Conv3d:
    """A 3³ convolution, its kernel mirror-symmetric along every axis (a mirror-equivariant network) or random."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 1, 3, padding=1)
    with torch.no_grad():
        if symmetric:
            kernel = conv.weight
            for dims in ((2,), (3,), (4,)):
                kernel = (kernel + torch.flip(kernel, dims)) / 2
            conv.weight.copy_(kernel)
    return conv.eval()


def image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 1, *SHAPE)


def window_inferer() -> SlidingWindowInferer:
    return SlidingWindowInferer(roi_size=(8, 8, 8), sw_batch_size=2, overlap=0.5, mode="gaussian")


@torch.no_grad()
def test_tta_none_is_the_wrapped_inferer_itself():
    inferer = window_inferer()
    assert tta_inferer(inferer, "none") is inferer


@torch.no_grad()
def test_mirroring_a_mirror_equivariant_network_changes_nothing():
    network, x = toy_network(symmetric=True), image()
    plain = window_inferer()(x, network)
    mirrored = tta_inferer(window_inferer(), "mirror", [0, 1, 2])(x, network)
    assert mirrored.shape == plain.shape
    torch.testing.assert_close(mirrored, plain, atol=1e-4, rtol=0)


@torch.no_grad()
def test_mirroring_averages_the_probabilities_of_the_eight_flips():
    network, x = toy_network(symmetric=False), image()
    flips = [dims for k in range(4) for dims in itertools.combinations((2, 3, 4), k)]
    probs = [torch.flip(torch.sigmoid(network(torch.flip(x, dims))), dims) for dims in flips]
    expected = torch.logit(torch.stack(probs).mean(0), eps=1e-6)
    mirrored = MirrorInferer(SimpleInferer(), axes=[0, 1, 2])(x, network)
    torch.testing.assert_close(mirrored, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(mirrored, network(x), atol=1e-3)  # the toy network is not mirror-symmetric


@torch.no_grad()
def test_one_axis_runs_two_passes_and_keeps_the_metadata():
    calls = []

    def network(inputs):
        calls.append(inputs.shape)
        return toy_network(symmetric=False)(inputs)

    x = MetaTensor(image(), affine=torch.diag(torch.tensor([0.8, 1.1, 0.9, 1.0])))
    out = MirrorInferer(window_inferer(), axes=[1])(x, network)
    plain_windows = len(calls) // 2
    window_inferer()(x, network)
    assert len(calls) == 3 * plain_windows
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, x.affine)


@pytest.mark.parametrize("axes", [[], [3], [0, 0], [-1], [True]])
def test_bad_tta_axes_are_refused(axes):
    with pytest.raises(ValueError, match=r"tta_axes must be distinct spatial axes among \[0, 1, 2\]"):
        tta_inferer(SimpleInferer(), "mirror", axes)


def test_unknown_tta_is_refused():
    with pytest.raises(ValueError, match=r"tta must be one of \['none', 'mirror'\], not 'flip'"):
        tta_inferer(SimpleInferer(), "flip")


def components_of_known_sizes() -> np.ndarray:
    """A (6, 10, 14) mask with components of 1, 2 (diagonal neighbours: one 26-connected component), 5 and 9 voxels."""
    mask = np.zeros((6, 10, 14), dtype=np.float32)
    mask[1, 1, 1] = 1
    mask[3, 3, 3] = mask[4, 4, 4] = 1
    mask[1, 6, 2:7] = 1
    mask[2:5, 2:5, 10] = 1
    return mask


@pytest.mark.parametrize(("min_voxels", "kept_sizes"), [(0, [1, 2, 5, 9]), (2, [2, 5, 9]), (5, [5, 9]), (6, [9])])
def test_components_smaller_than_the_minimum_are_removed(min_voxels, kept_sizes):
    mask = components_of_known_sizes()
    affine = torch.diag(torch.tensor([0.8, 1.1, 0.9, 1.0], dtype=torch.float64))
    data = {"pred": MetaTensor(torch.as_tensor(mask)[None], affine=affine), "head": torch.ones(1, 6, 10, 14)}
    out = RemoveSmallComponentsd("pred", min_pvs_voxels=min_voxels)(data)
    pred = out["pred"]
    assert isinstance(pred, MetaTensor) and pred.dtype == torch.float32 and torch.equal(pred.affine, affine)
    labels, _ = ndimage.label(pred[0].numpy(), structure=np.ones((3, 3, 3)))
    assert sorted(np.bincount(labels.ravel())[1:].tolist()) == kept_sizes
    assert out["head"] is data["head"]
    assert np.array_equal(data["pred"][0].numpy(), mask)  # the input is not changed in place


@pytest.mark.parametrize("value", [-1, 2.5, True, "5"])
def test_bad_min_pvs_voxels_is_refused(value):
    with pytest.raises(ValueError, match="min_pvs_voxels must be an integer >= 0"):
        RemoveSmallComponentsd("pred", min_pvs_voxels=value)


def test_threshold_auto_uses_the_one_stored_with_the_model(tmp_path, caplog):
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    with caplog.at_level(logging.INFO, logger="pvs_bundle.model_file"):
        assert resolve_threshold("auto", model) == 0.5  # no model.json
        (tmp_path / "model.json").write_text(json.dumps({"encoder_name": "efficientnet-b0"}))
        assert resolve_threshold("auto", model) == 0.5  # settings without a threshold
        (tmp_path / "model.json").write_text(json.dumps({"encoder_name": "efficientnet-b0", "threshold": 0.3}))
        assert resolve_threshold("auto", model) == 0.3
        assert resolve_threshold(0.7, model) == 0.7  # a number overrides
    assert f"Probability threshold 0.3 (threshold auto: chosen on validation, stored in {tmp_path / 'model.json'})" in (
        caplog.text
    )
    assert "Probability threshold 0.7 (set by threshold)" in caplog.text


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.2, "high", None, True])
def test_bad_threshold_is_refused(tmp_path, value):
    with pytest.raises(ValueError, match=rf"threshold must be 'auto' or a number in \(0, 1\), not {value!r}"):
        resolve_threshold(value, tmp_path / "model.pt")


def test_bad_stored_threshold_names_the_file(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"threshold": 1.2}))
    with pytest.raises(BundleError, match=r"model.json must store a threshold in \(0, 1\), not 1.2"):
        resolve_threshold("auto", tmp_path / "model.pt")


def test_tta_auto_uses_the_one_stored_with_the_model(tmp_path, caplog):
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    with caplog.at_level(logging.INFO, logger="pvs_bundle.model_file"):
        assert resolve_tta("auto", model) == "none"  # no model.json
        (tmp_path / "model.json").write_text(json.dumps({"encoder_name": "efficientnet-b0", "threshold": 0.3}))
        assert resolve_tta("auto", model) == "none"  # settings saved before the recipe's tta was stored
        (tmp_path / "model.json").write_text(json.dumps({"encoder_name": "efficientnet-b0", "tta": "mirror"}))
        assert resolve_tta("auto", model) == "mirror"
        assert resolve_tta("none", model) == "none"  # a value overrides
    assert f"Test-time augmentation mirror (tta auto: the training recipe's, stored in {tmp_path / 'model.json'})" in (
        caplog.text
    )
    assert "Test-time augmentation none (set by tta)" in caplog.text


@pytest.mark.parametrize("value", ["flip", None, "", "Mirror"])
def test_bad_tta_setting_is_refused(tmp_path, value):
    with pytest.raises(ValueError, match=rf"tta must be 'auto' or one of \['none', 'mirror'\], not {value!r}"):
        resolve_tta(value, tmp_path / "model.pt")


def test_bad_stored_tta_names_the_file_and_the_fix(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"tta": "flips"}))
    with pytest.raises(BundleError, match=r"must store a tta among .*not 'flips': pass --tta none or mirror"):
        resolve_tta("auto", tmp_path / "model.pt")


@pytest.mark.parametrize("stored", ["mirror", "none"])
def test_the_demo_recipes_tta_reaches_evaluation_and_inference_in_the_documented_config_order(tmp_path, stored):
    """README: evaluation reads train.json, demo.json, evaluate.json; inference reads inference.json, demo.json.

    demo.json sets the recipe's ``model_tta`` (stored with the model), not ``tta`` (used at test time), so both
    follow the model under ``tta auto`` whatever the order of the configs."""
    (tmp_path / "model.json").write_text(json.dumps({"tta": stored}))
    demo = [str(CONFIGS / f) for f in ("train.json", "demo.json")]
    training = ConfigParser(ConfigParser.load_config_files(demo))
    assert training["model_tta"] == "mirror"  # what the demo recipe's BestModelSaver stores with its model
    assert "tta" not in training and training.get_parsed_content("validate#best_model_saver").tta == "mirror"
    evaluation = ConfigParser(ConfigParser.load_config_files([*demo, str(CONFIGS / "evaluate.json")]))
    evaluation["model_file"] = str(tmp_path / "model.pt")
    inferer = evaluation.get_parsed_content("validate#inferer").inferer
    assert isinstance(inferer, MirrorInferer) == (stored == "mirror")
    files = [str(CONFIGS / f) for f in ("inference.json", "demo.json")]
    inference = ConfigParser(ConfigParser.load_config_files(files))
    inference["model_file"] = str(tmp_path / "model.pt")
    assert isinstance(inference.get_parsed_content("precision_inferer").inferer, MirrorInferer) == (stored == "mirror")


@pytest.mark.parametrize(
    "overlay", [None, "inference_torchscript.json", "inference_onnx.json", "inference_openvino.json"]
)
def test_inference_configs_mirror_inside_the_precision_inferer(overlay):
    files = [str(CONFIGS / "inference.json"), *([str(CONFIGS / overlay)] if overlay else [])]
    parser = ConfigParser(ConfigParser.load_config_files(files))
    parser["tta"], parser["tta_axes"] = "mirror", [0, 2]
    inferer = parser.get_parsed_content("precision_inferer")
    assert isinstance(inferer, AutocastInferer) and isinstance(inferer.inferer, MirrorInferer)
    assert inferer.inferer.axes == (0, 2) and isinstance(inferer.inferer.inferer, HeadSlidingWindowInferer)


def test_evaluation_mirrors_inside_the_validation_inferer_and_training_does_not():
    train = ConfigParser(ConfigParser.load_config_files(str(CONFIGS / "train.json")))
    assert isinstance(train.get_parsed_content("validate#inferer").inferer, SlidingWindowInferer)
    files = [str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")]
    parser = ConfigParser(ConfigParser.load_config_files(files))
    parser["tta"] = "mirror"
    inferer = parser.get_parsed_content("validate#inferer")
    assert isinstance(inferer, AutocastInferer) and isinstance(inferer.inferer, MirrorInferer)
    assert inferer.inferer.axes == (0,) and isinstance(inferer.inferer.inferer, SlidingWindowInferer)  # left-right
