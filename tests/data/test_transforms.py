import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import CONFIGS, synthetic_case, write_nifti
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose

from scripts.data.transforms import Aliasd, intensity_transform, preprocessing


def _lps_case(tmp_path):
    """A 20 x 30 x 12 case on an LPS, anisotropic grid, with a 0/255 mask."""
    affine = np.diag([-0.8, -0.8, 1.6, 1.0])
    image = np.zeros((20, 30, 12))
    image[2:18, 3:27, 1:11] = 500
    image[5, 6, 4] = 1500
    mask = np.zeros((20, 30, 12))
    mask[5, 6, 4:6] = 255
    return {
        "image": str(write_nifti(tmp_path / "img.nii.gz", image, affine)),
        "label": str(write_nifti(tmp_path / "lbl.nii.gz", mask, affine)),
    }


def test_preprocessing_reorients_resamples_normalises_and_binarises(tmp_path):
    out = Compose(preprocessing([0.8, 0.8, 0.8], {"mode": "percentile", "lower": 0.5, "upper": 99.5}))(
        _lps_case(tmp_path)
    )
    image, label = out["image"], out["label"]
    assert nib.orientations.aff2axcodes(image.affine.numpy()) == ("R", "A", "S")
    assert np.allclose(np.abs(np.diag(image.affine.numpy())[:3]), 0.8)
    assert image.shape == label.shape and image.shape[0] == 1
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert set(torch.unique(label).tolist()) == {0.0, 1.0}
    assert label.sum() > 0  # the 0/255 mask survived as PVS


def test_preprocessing_is_invertible_back_to_the_native_grid(tmp_path):
    case = _lps_case(tmp_path)
    transform = Compose(preprocessing([1.0, 1.0, 1.0], {"mode": "percentile", "lower": 0.5, "upper": 99.5}))
    out = transform(case)
    restored = transform.inverse(out)["label"]
    assert restored.shape[1:] == (20, 30, 12)
    assert np.allclose(restored.affine.numpy(), nib.load(case["label"]).affine)


def test_image_only_preprocessing_for_inference(tmp_path):
    case = _lps_case(tmp_path)
    out = Compose(preprocessing([0.8, 0.8, 0.8], {"mode": "percentile", "lower": 1, "upper": 99}, keys=["image"]))(
        {"image": case["image"]}
    )
    assert set(out) >= {"image"} and "label" not in out


def test_unknown_intensity_mode():
    with pytest.raises(ValueError, match="intensity mode must be one of"):
        intensity_transform("image", {"mode": "minmax"})


def test_zscore_uses_the_heads_statistics_and_stays_invertible(tmp_path):
    """Head voxels get mean 0 and sd 1 whatever the field of view; the grid still maps back to the native one."""
    rng = np.random.default_rng(0)
    image = np.zeros((40, 48, 36))
    image[8:32, 10:38, 6:30] = rng.normal(600, 60, (24, 28, 24))
    zscore = {"mode": "zscore", "lower": 0.5, "upper": 99.5}
    transform = Compose(preprocessing([0.8, 0.8, 0.8], zscore, keys=["image"]))
    small = transform({"image": str(write_nifti(tmp_path / "small.nii.gz", image))})["image"]
    padded = np.pad(image, 20)  # the same head in a larger field of view
    large = transform({"image": str(write_nifti(tmp_path / "large.nii.gz", padded))})["image"]
    for out in (small, large):
        values = out.array.ravel()
        head = values[values > values.min() + 1.0]  # background sits ~10 sd below the head
        assert abs(head.mean()) < 0.05 and abs(head.std() - 1.0) < 0.05
    assert np.allclose(small.array.max(), large.array.max(), atol=1e-4)
    restored = transform.inverse({"image": small})["image"]
    assert restored.shape[1:] == image.shape


def test_seed_overlay_restores_the_original_script_preprocessing():
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "seed_1p5mm.json")])
    assert parser.get_parsed_content("pixdim") == [1.5, 1.5, 1.5]
    transforms = parser.get_parsed_content("preprocessing_transforms")
    spacing = next(t for t in transforms if type(t).__name__ == "Spacingd")
    scale = next(t for t in transforms if type(t).__name__ == "ScaleIntensityRanged")
    assert np.allclose(spacing.spacing_transform.pixdim, 1.5)
    assert (scale.scaler.a_min, scale.scaler.a_max, scale.scaler.b_min, scale.scaler.b_max) == (-1000, 3000, 0, 1)


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_training_augmentation_never_changes_the_cached_volumes(tmp_path, prob):
    """train.json's CacheDataset hands out its cached volumes without a copy (copy_cache false), so no random
    transform may write into them: with every augmentation on (new tensors) or off (patches are views of the
    cache until the batch is collated), train through the loader and compare the cache."""
    image, mask = synthetic_case((48, 56, 40))
    case = {
        "id": "sub-001",
        "image": str(write_nifti(tmp_path / "img.nii.gz", image)),
        "label": str(write_nifti(tmp_path / "lbl.nii.gz", mask)),
    }
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"datalist": {"training": [case], "validation": [], "test": []}, "patch_size": [32, 32, 32]})
    parser.update({"num_samples": 3, "num_workers": 0, "augmentation#flip_prob": prob})
    for name in ("affine", "elastic", "bias_field", "contrast", "noise"):
        parser[f"augmentation#{name}#prob"] = prob
    loader = parser.get_parsed_content("train#dataloader")
    assert loader.dataset.copy_cache is False
    cached = loader.dataset._cache[0]  # what CacheDataset keeps: the preprocessing up to the first random transform
    assert cached["label"].dtype == torch.uint8  # the label is cached at a quarter of float32's size
    before = {key: (cached[key].clone(), len(cached[key].applied_operations)) for key in ("image", "label")}
    for _ in range(3):
        batch = next(iter(loader))
        assert batch["image"].shape == batch["label"].shape == (3, 1, 32, 32, 32)
        assert batch["label"].dtype == torch.float32
        assert set(torch.unique(batch["label"]).tolist()) <= {0.0, 1.0}
        batch["image"] += 1.0  # an in-place change to a batch must not reach the cache either
        batch["label"] *= 0.0
    for key, (values, n_operations) in before.items():
        assert torch.equal(cached[key], values), key
        assert len(cached[key].applied_operations) == n_operations, key


def test_validation_keeps_the_logits_for_the_loss_without_copying_them():
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    postprocessing = parser.get_parsed_content("validate#postprocessing")
    logits = MetaTensor(torch.randn(1, 12, 10, 8, generator=torch.Generator().manual_seed(0)))
    before = logits.clone()
    out = postprocessing({"pred": logits, "label": torch.zeros(1, 12, 10, 8)})
    assert out["logits"] is logits  # an alias, not a copy of the volume
    assert torch.equal(out["logits"], before)  # Activationsd and AsDiscreted made new tensors
    assert torch.equal(out["pred"].as_tensor(), (torch.sigmoid(before.as_tensor()) >= 0.5).float())


def test_alias_needs_one_name_per_key():
    with pytest.raises(ValueError, match="one name per key"):
        Aliasd(["pred", "image"], "logits")
