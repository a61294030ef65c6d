"""Training's random transforms (scripts.training.augmentation): the list train.json built before 0.7.2, one switch."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import CONFIGS
from monai.bundle import ConfigParser

from scripts.training.augmentation import random_transforms

BOTH = ("image", "label")
# What train.json's 140 lines of JSON built (0.7.1), per transform: type, probability and parameters.
PATCH = [
    ("CastToTyped", None, {"keys": ("label",), "dtype": [torch.uint8]}),
    ("SpatialPadd", None, {"keys": BOTH, "spatial_size": (96, 96, 96)}),
    # ClassesToIndicesd until 0.10.0 (its subclass with "voxel" lists the same centres); by component since 0.11.0
    (
        "PVSCropCentresd",
        None,
        {"keys": ("label",), "max_samples_per_class": 100000, "image_key": "image", "pvs_sampling": "component"},
    ),
    (
        "RandCropByLabelClassesd",
        None,
        {"keys": BOTH, "spatial_size": (96, 96, 96), "ratios": [1, 2], "num_samples": 4},
    ),
    ("CastToTyped", None, {"keys": ("label",), "dtype": [torch.float32]}),
]
AUGMENTATION = [
    ("RandAffined", 0.2, {"keys": BOTH, "rotate_range": (0.26, 0.26, 0.26), "scale_range": (0.1, 0.1, 0.1)}),
    ("OneOf", (0.1, 0.9), {"sigma_range": (5.0, 8.0), "magnitude_range": (50.0, 150.0)}),
    ("RandFlipd", 0.5, {"keys": BOTH, "spatial_axis": 0}),
    ("RandFlipd", 0.5, {"keys": BOTH, "spatial_axis": 1}),
    ("RandFlipd", 0.5, {"keys": BOTH, "spatial_axis": 2}),
    ("RandBiasFieldd", 0.2, {"keys": ("image",), "coeff_range": (0.0, 0.1)}),
    ("RandAdjustContrastd", 0.2, {"keys": ("image",), "gamma": (0.7, 1.5)}),
    ("RandGaussianNoised", 0.2, {"keys": ("image",), "std": 0.02}),
]


def summary(transform) -> tuple:
    """The type, probability (OneOf: its weights) and parameters of one transform, as in the tables above."""
    name = type(transform).__name__
    params: dict = {"keys": tuple(transform.keys)} if hasattr(transform, "keys") else {}
    if name == "CastToTyped":
        params["dtype"] = list(transform.dtype)
    elif name == "SpatialPadd":
        params["spatial_size"] = tuple(transform.padder.spatial_size)
    elif name == "PVSCropCentresd":
        params.update(max_samples_per_class=transform.converter.max_samples_per_class, image_key=transform.image_key)
        params["pvs_sampling"] = transform.pvs_sampling
    elif name == "RandCropByLabelClassesd":
        crop = transform.cropper
        params.update(spatial_size=tuple(crop.spatial_size), ratios=list(crop.ratios), num_samples=crop.num_samples)
    elif name == "RandAffined":
        grid = transform.rand_affine.rand_affine_grid
        params.update(rotate_range=tuple(grid.rotate_range), scale_range=tuple(grid.scale_range))
        assert list(transform.mode) == ["bilinear", "nearest"] and list(transform.padding_mode) == ["reflection"] * 2
    elif name == "OneOf":
        elastic, identity = transform.transforms
        assert type(elastic).__name__ == "Rand3DElasticd" and elastic.prob == 1.0 and elastic.keys == BOTH
        assert list(elastic.mode) == ["bilinear", "nearest"] and list(elastic.padding_mode) == ["reflection"] * 2
        assert type(identity).__name__ == "Identityd" and identity.keys == BOTH
        params = {
            "sigma_range": tuple(elastic.rand_3d_elastic.sigma_range),
            "magnitude_range": tuple(elastic.rand_3d_elastic.magnitude_range),
        }
        return name, tuple(round(w, 9) for w in transform.weights), params
    elif name == "RandFlipd":
        params["spatial_axis"] = transform.flipper.spatial_axis
    elif name == "RandBiasFieldd":
        params["coeff_range"] = tuple(transform.rand_bias_field.coeff_range)
    elif name == "RandAdjustContrastd":
        params["gamma"] = tuple(transform.adjuster.gamma)
    elif name == "RandGaussianNoised":
        params["std"] = transform.rand_gaussian_noise.std
    return name, getattr(transform, "prob", None), params


def expected(augment: bool) -> list[tuple]:
    """The 0.7.1 list with augmentation on, or with every augmentation's probability 0 (and elastic's weight 0)."""
    if augment:
        return PATCH + AUGMENTATION
    off = [(name, (0.0, 1.0) if name == "OneOf" else 0.0, params) for name, _, params in AUGMENTATION]
    return PATCH + off


def config_transforms(augment, files=("train.json",), **updates) -> list:
    parser = ConfigParser(ConfigParser.load_config_files([str(CONFIGS / f) for f in files]))
    parser.update({"augment": augment, **updates})
    return parser.get_parsed_content("train#random_transforms")


@pytest.mark.parametrize("augment", [True, False])
def test_train_json_builds_the_same_transforms_as_before(augment):
    assert [summary(t) for t in config_transforms(augment)] == expected(augment)


def test_voxel_sampling_is_one_setting_of_train_json():
    centres = config_transforms(True, **{"augmentation#pvs_sampling": "voxel"})[2]
    assert type(centres).__name__ == "PVSCropCentresd" and centres.pvs_sampling == "voxel"
    with pytest.raises(RuntimeError) as refused:  # monai.bundle wraps the error of the function it instantiates
        config_transforms(True, **{"augmentation#pvs_sampling": "by_size"})
    assert "augmentation#pvs_sampling must be one of ['voxel', 'component']" in str(refused.value.__cause__)


@pytest.mark.parametrize("augment", ["true", "false", "False"])
def test_the_switch_as_the_command_line_spells_it(augment):
    assert [summary(t) for t in config_transforms(augment)] == expected(augment.lower() == "true")


def test_one_switch_turns_every_augmentation_off_and_keeps_the_patch_sampling():
    off = [summary(t) for t in config_transforms(False, ("train.json", "demo.json"))]
    assert all(prob in (0.0, (0.0, 1.0)) for _, prob, _ in off[len(PATCH) :])
    assert off[3][2]["spatial_size"] == (32, 32, 32)  # demo.json's patch


def test_a_setting_reaches_its_transform():
    transforms = config_transforms(True, **{"augmentation#affine#prob": 0.7, "augmentation#pos": 4})
    assert transforms[5].prob == 0.7 and list(transforms[3].cropper.ratios) == [1, 4]


def test_synthetic_overlay_still_slices_the_list():
    files = ("train.json", "synthetic.json")
    parser = ConfigParser(ConfigParser.load_config_files([str(CONFIGS / f) for f in files]))
    chain = parser.get_parsed_content("train#preprocessing")
    real = chain.transforms[1].real  # RandSourceSwitchd's real-data branch: random_transforms[3:]
    assert [type(t).__name__ for t in real.transforms] == [name for name, _, _ in PATCH[3:] + AUGMENTATION]


SETTINGS = {
    "pos": 2,
    "neg": 1,
    "max_crop_centres": 10,
    "pvs_sampling": "voxel",
    "affine": {"prob": 0.2, "rotate_range": [0.26] * 3, "scale_range": [0.1] * 3},
    "elastic": {"prob": 0.1, "sigma_range": [5.0, 8.0], "magnitude_range": [50.0, 150.0]},
    "flip_prob": 0.5,
    "bias_field": {"prob": 0.2, "coeff_range": [0.0, 0.1]},
    "contrast": {"prob": 0.2, "gamma": [0.7, 1.5]},
    "noise": {"prob": 0.2, "std": 0.02},
}


def test_bad_switch_is_refused():
    with pytest.raises(ValueError, match="augment must be true or false, not 'yes'"):
        random_transforms([32, 32, 32], 2, "yes", SETTINGS)


@pytest.mark.parametrize("value", [1.5, -0.1, "0.2", True])
def test_bad_probability_is_refused_naming_the_setting(value):
    settings = copy.deepcopy(SETTINGS)
    settings["noise"]["prob"] = value
    with pytest.raises(ValueError, match=r"augmentation#noise#prob must be a number in \[0, 1\]"):
        random_transforms([32, 32, 32], 2, True, settings)


def test_missing_setting_is_named():
    settings = {k: v for k, v in SETTINGS.items() if k != "flip_prob"}
    with pytest.raises(KeyError, match="augmentation#flip_prob is missing"):
        random_transforms([32, 32, 32], 2, True, settings)
