import json

import pytest
import torch

from scripts.errors import BundleError
from scripts.model.backend import export_onnx
from scripts.model.full_resolution import HEAD_PREFIX, FullResolutionHead
from scripts.model.model_file import check_model_settings, write_settings
from scripts.model.network import build_unetplusplus
from scripts.training.warm_start import load_pretrained_weights

SMALL = {"encoder_name": "efficientnet-b0", "decoder_channels": (32, 16, 8, 8, 4), "norm": "group"}
INTENSITY = {"mode": "percentile", "lower": 0.5, "upper": 99.5}
SETTINGS = dict(SMALL, decoder_channels=[32, 16, 8, 8, 4], patch_size=[32] * 3, pixdim=[0.8] * 3, intensity=INTENSITY)
SETTINGS.update(in_channels=1, classes=1)


def saved_plain_model(tmp_path, legacy_json: bool = False):
    """A plain UNet++ saved as training saves it; with ``legacy_json`` its model.json lacks full_res_channels."""
    torch.manual_seed(0)
    plain = build_unetplusplus(encoder_weights=None, **SMALL).eval()
    path = tmp_path / "model.pt"
    torch.save(plain.state_dict(), path)
    write_settings(path, SETTINGS)
    if legacy_json:
        saved = json.loads(path.with_suffix(".json").read_text())
        del saved["full_res_channels"]
        path.with_suffix(".json").write_text(json.dumps(saved))
    return plain, path


def test_a_grown_network_starts_as_the_plain_one_and_keeps_its_parameter_names(tmp_path):
    plain, _ = saved_plain_model(tmp_path)
    grown = build_unetplusplus(encoder_weights=None, full_res_channels=8, **SMALL).eval()
    result = grown.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(key.startswith(HEAD_PREFIX) for key in result.missing_keys)
    x = torch.rand(1, 1, 32, 32, 64)
    with torch.no_grad():
        assert torch.equal(grown(x), plain(x))


def test_the_head_reads_each_voxel_and_its_neighbours_at_full_resolution():
    torch.manual_seed(0)
    head = FullResolutionHead(1, 4, 6, 1).eval()
    torch.nn.init.normal_(head.out.weight)  # its start at zero would hide every path
    image = torch.rand(1, 1, 12, 12, 12, requires_grad=True)
    features = torch.rand(1, 4, 12, 12, 12)
    head(image, features)[0, 0, 6, 6, 6].backward()
    reach = image.grad[0, 0].abs() > 0
    # two 3x3x3 convolutions: the voxel itself and every voxel within 2 of it, nothing farther
    assert reach[6, 6, 6] and reach[4:9, 4:9, 4:9].all()
    assert reach.sum() == 125


@pytest.mark.parametrize("channels", [-1, True, 2.5])
def test_full_res_channels_must_be_a_count(channels):
    with pytest.raises(ValueError, match="full_res_channels must be 0"):
        build_unetplusplus(encoder_weights=None, full_res_channels=channels, **SMALL)


def test_a_model_json_without_the_setting_describes_a_plain_network(tmp_path):
    _, path = saved_plain_model(tmp_path, legacy_json=True)
    assert check_model_settings(path, {**SETTINGS, "full_res_channels": 0})["full_res_channels"] == 0
    with pytest.raises(BundleError, match=r"full_res_channels 0; this config builds full_res_channels 8.*--full_res"):
        check_model_settings(path, {**SETTINGS, "full_res_channels": 8})


def test_a_warm_start_grows_the_head_on_a_plain_model_and_not_the_other_way(tmp_path):
    plain, path = saved_plain_model(tmp_path, legacy_json=True)
    grown = build_unetplusplus(encoder_weights=None, full_res_channels=8, **SMALL).eval()
    load_pretrained_weights(grown, path, {**SETTINGS, "full_res_channels": 8})
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(grown(x), plain(x))
    torch.save(grown.state_dict(), tmp_path / "grown.pt")
    write_settings(tmp_path / "grown.pt", {**SETTINGS, "full_res_channels": 8})
    other = build_unetplusplus(encoder_weights=None, **SMALL)
    with pytest.raises(BundleError, match="full_res_channels 8; this config builds full_res_channels 0"):
        load_pretrained_weights(other, tmp_path / "grown.pt", {**SETTINGS, "full_res_channels": 0})


def test_the_grown_network_exports_to_torchscript_and_onnx(tmp_path):
    import onnxruntime

    torch.manual_seed(0)
    grown = build_unetplusplus(encoder_weights=None, full_res_channels=8, memory_efficient_swish=False, **SMALL)
    torch.nn.init.normal_(grown.full_res.out.weight, std=0.1)
    grown.eval()
    x = torch.rand(1, 1, 32, 32, 64)
    with torch.no_grad():
        eager = grown(x)
        assert torch.allclose(torch.jit.trace(grown, x)(x), eager, atol=1e-5)
    export_onnx(grown, tmp_path / "grown.onnx", [32, 32, 64])
    session = onnxruntime.InferenceSession(str(tmp_path / "grown.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert abs(out - eager.numpy()).max() < 1e-3
