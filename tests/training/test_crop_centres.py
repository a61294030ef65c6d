"""Patch centres by voxel or by component (issue 23, item 2): hand-built labels with one large and one small PVS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose, RandCropByLabelClassesd

from scripts.training.crop_centres import PVSCropCentresd, check_pvs_sampling, component_balanced_indices

SHAPE = (24, 24, 24)


def two_pvs() -> tuple[np.ndarray, np.ndarray]:
    """A 10³ cube (1000 voxels) and, apart from it, a 2-voxel PVS; and their component ids (1 cube, 2 small)."""
    ids = np.zeros(SHAPE, dtype=np.int64)
    ids[2:12, 2:12, 2:12] = 1
    ids[20, 20, 20:22] = 2
    return ids > 0, ids


def test_component_lists_give_each_pvs_the_same_share_and_stay_inside_it():
    mask, ids = two_pvs()
    indices = component_balanced_indices(mask)
    owners = ids.ravel()[indices]
    assert (owners > 0).all()  # every entry is a PVS voxel
    assert np.count_nonzero(owners == 1) == np.count_nonzero(owners == 2) == 501  # ceil(1002 / 2) each
    assert set(np.flatnonzero(ids.ravel() == 2)) == set(indices[owners == 2])  # both small voxels listed
    assert len(set(indices[owners == 1])) == 501  # spread over the cube, no repeats where it has room


def test_the_bound_keeps_one_entry_per_component():
    mask, ids = two_pvs()
    assert len(component_balanced_indices(mask, max_indices=10)) == 10
    assert np.bincount(ids.ravel()[component_balanced_indices(mask, max_indices=1)]).tolist() == [0, 1, 1]
    assert component_balanced_indices(np.zeros(SHAPE, dtype=bool)).size == 0


def centre_owners(pvs_sampling: str, draws: int = 300) -> np.ndarray:
    """The component id at the centre of ``draws`` PVS-centred 3³ patches cropped by the real MONAI chain."""
    mask, ids = two_pvs()
    chain = Compose(
        [
            PVSCropCentresd("label", pvs_sampling=pvs_sampling, image_key="image"),
            RandCropByLabelClassesd(
                keys=["image", "label", "ids"],
                label_key="label",
                spatial_size=(3, 3, 3),
                ratios=[0, 1],
                num_classes=2,
                num_samples=draws,
                indices_key="label_cls_indices",
            ),
        ]
    )
    chain.set_random_state(seed=0)
    item = {
        "image": torch.ones((1, *SHAPE)),
        "label": torch.from_numpy(mask[None].astype(np.uint8)),
        "ids": torch.from_numpy(ids[None]),
    }
    return np.array([int(patch["ids"][0, 1, 1, 1]) for patch in chain(item)])


def test_by_component_the_small_pvs_is_centred_half_the_time_by_voxel_almost_never():
    by_voxel, by_component = centre_owners("voxel"), centre_owners("component")
    assert (by_voxel > 0).all() and (by_component > 0).all()
    assert np.count_nonzero(by_voxel == 2) <= 6  # expected 300 × 2 / 1002 ≈ 0.6
    assert 110 <= np.count_nonzero(by_component == 2) <= 190  # expected 150


def test_the_background_list_is_the_same_in_both_modes():
    mask, _ = two_pvs()
    item = {"image": torch.ones((1, *SHAPE)), "label": torch.from_numpy(mask[None].astype(np.uint8))}
    voxel = PVSCropCentresd("label", pvs_sampling="voxel")(item)["label_cls_indices"]
    component = PVSCropCentresd("label", pvs_sampling="component")(item)["label_cls_indices"]
    assert torch.equal(torch.as_tensor(voxel[0]), torch.as_tensor(component[0]))
    assert len(voxel[1]) == 1002 and len(component[1]) == 1002


def test_an_unknown_sampling_is_refused_with_the_setting_named():
    assert check_pvs_sampling("component") == "component"
    with pytest.raises(ValueError, match=r"augmentation#pvs_sampling must be one of \['voxel', 'component'\]"):
        PVSCropCentresd("label", pvs_sampling="size")
