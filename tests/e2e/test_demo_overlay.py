"""The demo overlay and the data check on a deliberately broken copy of the demo dataset."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from conftest import CONFIGS
from monai.bundle import ConfigParser
from test_data_check import damage, image_path, mask_path, truncate

from scripts.data.check.run import check_dataset
from scripts.data.demo import generate_dataset
from scripts.model.full_resolution import FullResolutionUNetPlusPlus

SHAPE = (64, 80, 72)


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("demo") / "ds005595_demo", n_subjects=12, shape=SHAPE, seed=0)


def test_demo_overlay_parses_and_creates_its_dataset_once_whatever_the_output_dir(tmp_path):
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "demo.json")])
    data_dir = tmp_path / "demo_data" / "ds005595_demo"
    settings = {"demo#data_dir": str(data_dir), "demo#n_subjects": 6, "demo#shape": [48, 64, 56]}
    parser.update({"output_dir": str(tmp_path / "eval"), **settings})
    dataset_dir = parser.get_parsed_content("dataset_dir")
    assert dataset_dir == str(data_dir)
    assert sorted(p.name for p in data_dir.glob("sub-*")) == [f"sub-{i:03d}" for i in range(1, 7)]
    marker = max(p.stat().st_mtime_ns for p in data_dir.rglob("*"))
    other = ConfigParser()
    other.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "demo.json")])
    other.update({"output_dir": str(tmp_path / "other_eval"), **settings})
    assert other.get_parsed_content("dataset_dir") == str(data_dir)  # reused, not regenerated
    assert max(p.stat().st_mtime_ns for p in data_dir.rglob("*")) == marker
    assert not (tmp_path / "eval" / "ds005595_demo").exists()
    datalist = parser.get_parsed_content("datalist")
    assert sum(len(datalist[k]) for k in ("training", "validation", "test")) >= 3
    network = parser.get_parsed_content("network_def")
    assert not any("BatchNorm" in type(m).__name__ for m in network.modules())  # demo.json's norm: group
    # demo.json's full-resolution head (0.15.0), its norm the network's: a GroupNorm after each of its convolutions
    assert isinstance(network, FullResolutionUNetPlusPlus)
    assert parser.get_parsed_content("model_settings")["full_res_channels"] == 16
    assert [type(m).__name__ for m in network.full_res.block] == ["Conv3d", "GroupNorm", "ReLU"] * 2
    assert network.full_res.block[0].out_channels == 16
    assert parser.get_parsed_content("patch_size") == [32, 32, 32]
    # in-training validation on windows that overlap by a quarter (0.16.0); evaluation and inference keep a half
    assert parser.get_parsed_content("validate#window_inferer").overlap == 0.25
    assert parser.get_parsed_content("sw_overlap") == 0.5
    plain = ConfigParser()
    plain.read_config([str(CONFIGS / "train.json")])
    assert plain.get_parsed_content("validate#window_inferer").overlap == 0.5  # train.json's validation: sw_overlap


def _plant(root, demo_dataset):
    """Break a copy of the demo dataset in 9 ways; return (file, problem, severity) of each."""
    affine = nib.load(str(root / image_path("001"))).affine
    mask = np.asarray(nib.load(str(root / mask_path("003"))).dataobj)
    image = np.asarray(nib.load(str(root / image_path("006"))).dataobj).astype(np.float32)
    truncate(root / image_path("001"))
    (root / mask_path("002")).write_bytes(b"<html>Not Found</html>" * 20)
    nib.save(nib.Nifti1Image((mask * 255).astype(np.int16), affine), str(root / mask_path("003")))
    nib.save(nib.Nifti1Image(mask[:-4].astype(np.int16), affine), str(root / mask_path("004")))
    shifted = affine.copy()
    shifted[1, 3] += 2.0
    nib.save(nib.Nifti1Image(mask.astype(np.int16), shifted), str(root / mask_path("005")))
    image[10, 10, 10] = np.nan
    nib.save(nib.Nifti1Image(image, affine), str(root / image_path("006")))
    nib.save(nib.Nifti1Image(np.stack([image, image], -1), affine), str(root / image_path("007")))
    nib.save(nib.load(str(root / image_path("008"))), str(root / image_path("008", ".nii")))  # same case twice
    damage(root / image_path("011"))
    return {
        (image_path("001"), "truncated", "error"),
        (mask_path("002"), "unreadable", "error"),
        (mask_path("003"), "non_binary_label", "warning"),
        (mask_path("004"), "shape_mismatch", "error"),
        (mask_path("005"), "affine_mismatch", "error"),
        (image_path("006"), "non_finite", "error"),
        (image_path("007"), "not_3d", "error"),
        (image_path("008", ".nii"), "duplicate", "error"),
        (image_path("011"), "corrupt", "error"),
    }


def test_data_check_finds_every_fault_planted_in_the_demo_dataset(demo_dataset, tmp_path):
    clean = check_dataset(demo_dataset, patch_size=(32, 32, 32))
    assert clean.errors == []
    natural = {(f.file, f.problem, f.severity) for f in clean.findings}
    assert {p for _, p, _ in natural} == {"empty_mask"}  # the demo's subjects without PVS
    root = shutil.copytree(demo_dataset, tmp_path / "broken")
    planted = _plant(root, demo_dataset)
    found = {(f.file, f.problem, f.severity) for f in check_dataset(root, patch_size=(32, 32, 32)).findings}
    assert planted <= found, sorted(planted - found)
    assert found - planted <= natural, sorted(found - planted - natural)
    print(json.dumps({"planted": len(planted), "found": len(planted & found)}))
