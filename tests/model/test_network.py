import pytest
import torch

from scripts.model.network import build_unetplusplus, check_patch_size, network_from_settings

SMALL = {"encoder_name": "efficientnet-b0", "decoder_channels": (32, 16, 8, 8, 4)}


def test_output_is_one_logit_channel_of_the_input_size():
    model = build_unetplusplus(encoder_weights=None, **SMALL).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 32, 64, 96))
    assert out.shape == (1, 1, 32, 64, 96)


@pytest.mark.parametrize("size", [[96, 96, 80], [96, 96], [0, 32, 32], [32.0, 32, 32]])
def test_bad_patch_size_fails_with_a_clear_message(size):
    with pytest.raises(ValueError, match="patch_size must be three positive multiples of 32"):
        check_patch_size(size)
    with pytest.raises(ValueError, match="multiples of 32"):
        build_unetplusplus(encoder_weights=None, patch_size=size, **SMALL)


def test_offline_imagenet_names_the_cache_file_and_the_override(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    with pytest.raises(RuntimeError) as err:
        build_unetplusplus(encoder_weights="imagenet", **SMALL)
    message = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints" / "efficientnet-b0-355c32eb.pth") in message
    assert "--encoder_weights null" in message


def test_local_encoder_weights_are_loaded(tmp_path):
    source = build_unetplusplus(encoder_weights=None, **SMALL)
    path = tmp_path / "encoder.pth"
    torch.save(source.encoder.state_dict(), path)
    loaded = build_unetplusplus(encoder_weights=str(path), **SMALL)
    for (name, a), b in zip(source.encoder.state_dict().items(), loaded.encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_missing_local_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_unetplusplus(encoder_weights=str(tmp_path / "none.pth"), **SMALL)


def test_null_spelling_means_no_weights():
    assert isinstance(build_unetplusplus(encoder_weights="null", **SMALL), torch.nn.Module)


def test_unknown_encoder():
    with pytest.raises(ValueError, match="encoder_name must be one of"):
        build_unetplusplus(encoder_name="resnet9000", encoder_weights=None)


def test_group_norm_replaces_every_batchnorm_and_keeps_affine_weights():
    batch = build_unetplusplus(encoder_weights=None, **SMALL)
    with torch.no_grad():
        for m in batch.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.weight.uniform_(0.5, 1.5)
    weights = [m.weight.clone() for m in batch.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    group = build_unetplusplus(encoder_weights=None, norm="group", **SMALL)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in group.modules())
    from scripts.model.network import batchnorm_to_groupnorm

    converted = [m for m in batchnorm_to_groupnorm(batch).modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(converted) == len(weights)
    assert all(torch.equal(g.weight, w) for g, w in zip(converted, weights, strict=True))
    assert all(g.num_channels % g.num_groups == 0 for g in converted)


def test_group_norm_model_predicts_the_same_whatever_the_batch():
    model = build_unetplusplus(encoder_weights=None, norm="group", **SMALL).eval()
    x = torch.randn(3, 1, 32, 32, 64)
    with torch.no_grad():
        alone = model(x[:1])
        together = model(x)[:1]
    assert torch.allclose(alone, together, atol=1e-5)


def test_unknown_norm():
    with pytest.raises(ValueError, match="norm must be one of"):
        build_unetplusplus(encoder_weights=None, norm="layer", **SMALL)


def test_network_from_settings_builds_what_the_settings_name():
    settings = {
        "encoder_name": "efficientnet-b0",
        "norm": "group",
        "decoder_channels": [32, 16, 8, 8, 4],
        "patch_size": [32, 32, 32],
        "in_channels": 1,
        "classes": 1,
        "pixdim": [0.8, 0.8, 0.8],
        "intensity": {"mode": "percentile", "lower": 0.5, "upper": 99.5},
    }
    torch.manual_seed(0)
    built = network_from_settings(settings, encoder_weights=None)
    torch.manual_seed(0)
    direct = build_unetplusplus("efficientnet-b0", None, 1, 1, [32, 16, 8, 8, 4], [32, 32, 32], "group")
    assert built.state_dict().keys() == direct.state_dict().keys()
    pairs = zip(built.state_dict().values(), direct.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    with pytest.raises(KeyError, match=r"missing \['norm'\]"):
        network_from_settings({k: v for k, v in settings.items() if k != "norm"})
