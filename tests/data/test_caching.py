"""The disk cache of preprocessed cases (scripts/data/caching.py) on real NIfTI files and MONAI transforms."""

import logging
import os
from pathlib import Path

import pytest
import torch
from conftest import synthetic_case, write_nifti
from monai.transforms import Compose, MapTransform, RandGaussianNoised

from scripts.data.caching import DiskCacheDataset
from scripts.data.transforms import preprocessing

SETTINGS = {"pixdim": [0.8, 0.8, 0.8]}


class CountCalls(MapTransform):
    """A deterministic transform that counts how often the preprocessing really runs."""

    calls = 0

    def __call__(self, data):
        type(self).calls += 1
        return dict(data)


def _cases(tmp_path, n=3):
    cases = []
    for i in range(n):
        image, mask = synthetic_case((24, 28, 20), seed=i)
        cases.append(
            {
                "id": f"sub-{i:03d}",
                "image": str(write_nifti(tmp_path / "ds" / f"sub-{i:03d}_T2w.nii.gz", image)),
                "label": str(write_nifti(tmp_path / "ds" / f"sub-{i:03d}_desc-mask_PVS.nii.gz", mask)),
            }
        )
    return cases


def _transform():
    steps = preprocessing(SETTINGS["pixdim"], {"mode": "percentile", "lower": 0.5, "upper": 99.5})
    return Compose([CountCalls(["image"]), *steps, RandGaussianNoised("image", prob=1.0, std=0.01)])


def _dataset(cases, cache_dir, cache_rate=1.0, settings=SETTINGS):
    return DiskCacheDataset(cases, _transform(), cache_dir=cache_dir, settings=settings, cache_rate=cache_rate)


@pytest.fixture(autouse=True)
def _reset_count():
    CountCalls.calls = 0


def test_second_run_reads_the_preprocessed_cases_from_disk(tmp_path):
    cases = _cases(tmp_path)
    first = _dataset(cases, tmp_path / "cache")
    assert CountCalls.calls == 3
    (folder,) = (tmp_path / "cache").iterdir()
    files = sorted(folder.glob("*.pt"))
    assert len(files) == 3 and (folder / "settings.json").is_file()
    written = [f.stat().st_mtime_ns for f in files]
    second = _dataset(cases, tmp_path / "cache")
    assert CountCalls.calls == 3  # nothing preprocessed again
    assert [f.stat().st_mtime_ns for f in files] == written
    for i in range(3):
        assert torch.equal(second._cache[i]["image"], first._cache[i]["image"])
        assert torch.equal(second._cache[i]["label"], first._cache[i]["label"])
    assert not list(folder.glob(".*.tmp"))


def test_cases_outside_the_ram_cache_come_from_disk(tmp_path):
    cases = _cases(tmp_path)
    dataset = _dataset(cases, tmp_path / "cache", cache_rate=0.0)
    assert CountCalls.calls == 0  # nothing in RAM
    assert dataset.fill_disk_cache() == 3
    (folder,) = (tmp_path / "cache").iterdir()
    assert len(list(folder.glob("*.pt"))) == 3
    calls = CountCalls.calls
    for _ in range(2):
        out = dataset[1]
        assert out["image"].shape == out["label"].shape and out["image"].shape[0] == 1
    assert CountCalls.calls == calls  # read, not preprocessed
    plain = DiskCacheDataset(cases, _transform(), cache_dir=None, cache_rate=0.0)
    assert plain[1]["label"].shape == out["label"].shape
    assert CountCalls.calls == calls + 1  # without a disk cache the case is preprocessed every time
    with pytest.raises(ValueError, match="fill_disk_cache needs a cache_dir"):
        plain.fill_disk_cache()


def test_a_changed_file_or_setting_is_preprocessed_again(tmp_path):
    cases = _cases(tmp_path)
    _dataset(cases, tmp_path / "cache")
    image, _ = synthetic_case((24, 28, 20), seed=7)
    write_nifti(Path(cases[0]["image"]), image * 2)
    os.utime(cases[0]["image"], ns=(1, 1))  # another modification time
    dataset = _dataset(cases, tmp_path / "cache")
    assert CountCalls.calls == 4  # only the changed case
    (folder,) = (tmp_path / "cache").iterdir()
    assert len(list(folder.glob("*.pt"))) == 4
    _dataset(cases, tmp_path / "cache", settings={"pixdim": [1.0, 1.0, 1.0]})
    assert CountCalls.calls == 7 and len(list((tmp_path / "cache").iterdir())) == 2
    assert dataset._cache[0]["image"].shape == dataset._cache[1]["image"].shape


def test_a_damaged_cache_file_is_logged_and_recomputed(tmp_path, caplog):
    cases = _cases(tmp_path)
    _dataset(cases, tmp_path / "cache")
    (folder,) = (tmp_path / "cache").iterdir()
    damaged = sorted(folder.glob("*.pt"))[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="pvs_bundle.caching"):
        dataset = _dataset(cases, tmp_path / "cache")
    assert f"Unreadable cache file {damaged}" in caplog.text
    assert CountCalls.calls == 4
    assert torch.load(damaged, weights_only=True)["image"].shape == dataset._cache[0]["image"].shape
