"""The synthetic training source: label maps, domain-randomised rendering, validation volumes, datalist."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from scripts.data.synth.anatomy import CLASSES, label_map
from scripts.data.synth.dataset import (
    VALIDATION_SEED_OFFSET,
    SynthLabelMapd,
    ensure_validation_set,
    synthetic_datalist,
)
from scripts.data.synth.render import FINE_RANGE_MM, RandSynthPatchesd, Scan, draw_scan, render_region, render_volume

SMALL = (48, 56, 48)


def tube_map(shape=(48, 48, 64), radius_mm=1.2) -> tuple[np.ndarray, np.ndarray]:
    """White matter with one straight vertical tube of known radius through its centre (a hand-built label map)."""
    labels = np.full(shape, CLASSES["white_matter"], dtype=np.uint8)
    x, y = np.indices(shape[:2]) - ((np.array(shape[:2]) - 1) / 2)[:, None, None]
    distance_mm = np.hypot(x, y) * 0.8
    fraction = np.clip((radius_mm - distance_mm) / 0.8 + 0.5, 0.0, 1.0)
    pv = np.repeat(fraction[..., None], shape[2], axis=2)
    pv[..., :8] = 0.0
    pv[..., -8:] = 0.0
    return labels, np.rint(pv * 255).astype(np.uint8)


def plain_scan(family: str, voxel_mm=(0.8, 0.8, 0.8)) -> Scan:
    return draw_scan(np.random.default_rng(3), family, voxel_mm, plain=True)


def test_label_map_is_a_function_of_its_seed():
    a, b, c = label_map(11, SMALL), label_map(11, SMALL), label_map(12, SMALL)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.pv, b.pv)
    assert not np.array_equal(a.labels, c.labels)
    assert a.labels.shape == SMALL and a.pv.dtype == np.uint8


def test_pvs_lie_in_white_or_deep_grey_matter():
    drawn = label_map(3)
    assert len(drawn.centres) > 0
    inside = drawn.labels[drawn.pv >= 128]
    tissue = np.isin(inside, (CLASSES["white_matter"], CLASSES["deep_grey"]))
    assert tissue.mean() > 0.9, np.bincount(inside, minlength=8)


@pytest.mark.parametrize(("family", "brighter"), [("T2w", True), ("T1w", False), ("FLAIR", False)])
def test_pvs_polarity_per_contrast(family, brighter):
    labels, pv = tube_map()
    image, label = render_volume(labels, pv, plain_scan(family), np.random.default_rng(0))
    inside = image[label > 0].mean()
    ring = ndimage.binary_dilation(label > 0, iterations=4) & ~ndimage.binary_dilation(label > 0, iterations=2)
    around = image[ring].mean()
    assert (inside > around + 0.1) if brighter else (inside < around - 0.1), (family, inside, around)


@pytest.mark.parametrize("voxel_mm", [(0.8, 0.8, 0.8), (1.5, 1.5, 1.5), (0.8, 0.8, 1.6)])
def test_label_and_image_stay_aligned_after_acquisition(voxel_mm):
    labels, pv = tube_map(radius_mm=1.6)  # 3.2 mm wide: over half of some acquired voxel whatever the grid's phase
    image, label = render_volume(labels, pv, plain_scan("T2w", voxel_mm), np.random.default_rng(0))
    truth = np.argwhere(pv >= 128).mean(axis=0)
    centre = np.argwhere(label > 0).mean(axis=0)
    contrast = np.clip(image - np.median(image), 0, None)
    weighted = (np.indices(image.shape).reshape(3, -1) * contrast.ravel()).sum(axis=1) / contrast.sum()
    # the tube is vertical: its x, y centre must not move by half a voxel in the label or in the image
    assert np.abs(centre[:2] - truth[:2]).max() < 0.5
    assert np.abs(weighted[:2] - truth[:2]).max() < 0.5


def test_thick_voxels_lose_thin_pvs_in_the_label():
    labels, pv = tube_map(radius_mm=0.6)  # 1.2 mm wide: at least half of a 0.8 mm voxel, far less of a 2 mm one
    _, fine = render_volume(labels, pv, plain_scan("T2w"), np.random.default_rng(0))
    _, coarse = render_volume(labels, pv, plain_scan("T2w", (2.0, 2.0, 2.0)), np.random.default_rng(0))
    assert fine.sum() > 0 and coarse.sum() < fine.sum() / 2


@pytest.mark.parametrize("voxel_mm", [(1.5, 1.5, 1.5), (0.8, 0.8, 1.6)])
def test_label_rules_blocks_of_the_acquired_grid_or_the_pvs_own_width(voxel_mm):
    labels, pv = tube_map(radius_mm=1.6)  # 3.2 mm wide: seen by 1.5 and 1.6 mm voxels whatever the phase
    _, own = render_volume(labels, pv, plain_scan("T2w"), np.random.default_rng(0))
    _, blocks = render_volume(labels, pv, plain_scan("T2w", voxel_mm), np.random.default_rng(0), label_rule=1)
    _, width = render_volume(labels, pv, plain_scan("T2w", voxel_mm), np.random.default_rng(0), label_rule=2)
    inside = (slice(None), slice(None), slice(8, -8))  # away from the tube's ends
    # rule 1: the acquired grid's blocks reach past the PVS across it (a tube along the thick axis keeps its width)
    assert (blocks > own).any() == (voxel_mm[0] > 0.8)
    assert width.sum() > 0 and not (width > own).any()  # rule 2: never wider than the PVS
    assert width[inside].sum() >= 0.95 * own[inside].sum()  # and all of it where it is seen
    with pytest.raises(ValueError, match="label_rule"):
        render_volume(labels, pv, plain_scan("T2w", voxel_mm), np.random.default_rng(0), label_rule=3)


def test_patches_are_reproducible_and_centred_on_pvs():
    drawn = label_map(3, SMALL)
    data = {"labels": drawn.labels[None], "pv": drawn.pv[None], "centres": drawn.centres}
    make = RandSynthPatchesd([32, 32, 32], num_samples=3, pos=1.0, neg=0.0)
    first = make.set_random_state(5)(data)
    second = make.set_random_state(5)(data)
    assert len(first) == 3
    for a, b in zip(first, second, strict=True):
        assert a["image"].shape == (1, 32, 32, 32) and a["label"].shape == (1, 32, 32, 32)
        assert np.array_equal(a["image"].numpy(), b["image"].numpy()) and a["contrast"] == b["contrast"]
        assert float(a["image"].min()) >= 0.0 and float(a["image"].max()) <= 1.0
    assert sum(int(p["label"].sum() > 0) for p in first) >= 2


def test_families_can_be_restricted():
    drawn = label_map(4, SMALL)
    data = {"labels": drawn.labels[None], "pv": drawn.pv[None], "centres": drawn.centres}
    make = RandSynthPatchesd([32, 32, 32], num_samples=1, families=["T1w"]).set_random_state(0)
    assert {make(data)[0]["contrast"] for _ in range(4)} == {"T1w"}
    with pytest.raises(ValueError, match="family must be one of"):
        draw_scan(np.random.default_rng(0), "PD")


def test_fine_fraction_renders_at_fine_isotropic_voxels_and_leaves_the_default_stream_alone():
    drawn = label_map(4, SMALL)
    data = {"labels": drawn.labels[None], "pv": drawn.pv[None], "centres": drawn.centres}
    default = [RandSynthPatchesd([32, 32, 32], num_samples=1).set_random_state(s)(data)[0] for s in range(12)]
    zero = [
        RandSynthPatchesd([32, 32, 32], num_samples=1, fine_fraction=0.0).set_random_state(s)(data)[0]
        for s in range(12)
    ]
    assert [p["voxel_mm"] for p in default] == [p["voxel_mm"] for p in zero]  # 0: the shipped model's draws
    assert all(np.array_equal(a["image"].numpy(), b["image"].numpy()) for a, b in zip(default, zero, strict=True))
    coarse = [max(p["voxel_mm"]) > FINE_RANGE_MM[1] for p in default]
    assert sum(coarse) >= 6  # most default draws are coarser than the fine range
    fine = [
        RandSynthPatchesd([32, 32, 32], num_samples=1, fine_fraction=1.0).set_random_state(s)(data)[0]
        for s in range(12)
    ]
    for patch in fine:
        voxel = patch["voxel_mm"]
        assert voxel[0] == voxel[1] == voxel[2] and FINE_RANGE_MM[0] <= voxel[0] <= FINE_RANGE_MM[1]
    with pytest.raises(ValueError, match="fine_fraction"):
        RandSynthPatchesd([32, 32, 32], fine_fraction=1.5)


def test_render_region_pads_outside_the_map():
    labels, pv = tube_map()
    image, label = render_region(
        labels, pv, (40, 40, 0), (16, 16, 16), plain_scan("T2w"), (0.0, 1.0), np.random.default_rng(0)
    )
    assert image.shape == (16, 16, 16) and label.shape == (16, 16, 16)
    assert image[8:, 8:].mean() < 0.1 < image[:8, :8].mean()  # beyond the map: air


def test_validation_set_written_once_with_one_mask_per_subject(tmp_path):
    items = ensure_validation_set(tmp_path / "val", n_subjects=1, shape=SMALL)
    assert [i["contrast"] for i in items] == ["T2w", "T1w", "FLAIR"]
    assert len({i["label"] for i in items}) == 1
    image = nib.load(items[0]["image"])
    assert image.shape == SMALL and np.allclose(image.header.get_zooms(), 0.8)
    assert np.asarray(nib.load(items[0]["label"]).dataobj).sum() > 0
    stamp = (tmp_path / "val" / "sub-v01/anat/sub-v01_T2w.nii.gz").stat().st_mtime_ns
    assert ensure_validation_set(tmp_path / "val", n_subjects=1, shape=SMALL) == items
    assert (tmp_path / "val" / "sub-v01/anat/sub-v01_T2w.nii.gz").stat().st_mtime_ns == stamp
    marker = json.loads((tmp_path / "val" / ".pvs_synth_validation.json").read_text())
    assert marker["n_subjects"] == 1


def test_validation_set_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not synthetic validation volumes"):
        ensure_validation_set(tmp_path / "mine", n_subjects=1, shape=SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_datalist_alone_and_mixed():
    alone = synthetic_datalist(4, seed=1, validation=[{"image": "v"}])
    assert [i["seed"] for i in alone["training"]] == [4, 5, 6, 7]
    assert alone["validation"] == [{"image": "v"}]
    real = {"training": [{"image": f"r{k}", "label": "l"} for k in range(3)], "validation": [{"image": "rv"}]}
    mixed = synthetic_datalist(10, real=real, synthetic_fraction=0.5)
    sources = [i["source"] for i in mixed["training"]]
    assert sources.count("real") == 3 and sources.count("synthetic") == 3
    assert mixed["validation"] == [{"image": "rv"}]
    with pytest.raises(ValueError, match="synthetic_fraction"):
        synthetic_datalist(4, synthetic_fraction=0.0)
    with pytest.raises(ValueError, match="validation seeds"):
        synthetic_datalist(10, seed=VALIDATION_SEED_OFFSET)


def test_label_map_transform_adds_the_map():
    out = SynthLabelMapd(SMALL)({"seed": 2, "source": "synthetic"})
    assert out["labels"].shape == (1, *SMALL) and out["pv"].shape == (1, *SMALL) and out["csf"].shape == (1, *SMALL)
    assert out["source"] == "synthetic" and out["centres"].shape[1] == 3
    old = SynthLabelMapd(SMALL, version=2)({"seed": 2})
    assert not np.array_equal(out["labels"], old["labels"])  # each version draws its own maps
    with pytest.raises(ValueError, match="synth#generator_version"):
        SynthLabelMapd(SMALL, version=4)


def test_version_3_keeps_the_csf_fraction_and_version_2_its_whole_classes():
    new, old = label_map(5, SMALL), label_map(5, SMALL, version=2)
    assert new.version == 3 and old.version == 2 and new.csf.dtype == np.uint8 and new.csf.shape == SMALL
    assert np.array_equal(old.csf, np.where(old.labels == CLASSES["csf"], 255, 0))
    cortex = new.csf[new.labels == CLASSES["cortex"]]
    assert 0 < cortex.max() < 255 and (cortex > 0).mean() > 0.2  # sulcal CSF below a voxel's largest fraction
    assert not new.csf[np.isin(new.labels, (CLASSES["air"], CLASSES["skull"], CLASSES["lesion"]))].any()
    with pytest.raises(ValueError, match="generator_version"):
        label_map(5, SMALL, version=1)


def test_csf_partial_volume_brightens_cortex_on_t2w_and_darkens_it_on_flair():
    drawn = label_map(5, SMALL)
    partial = (drawn.labels == CLASSES["cortex"]) & (drawn.csf >= 80) & (drawn.pv == 0)
    pure = (drawn.labels == CLASSES["cortex"]) & (drawn.csf <= 3) & (drawn.pv == 0)
    assert partial.sum() > 50 and pure.sum() > 50
    for family, sign in (("T2w", 1), ("FLAIR", -1)):
        scan = plain_scan(family)
        mixed, _ = render_volume(drawn.labels, drawn.pv, scan, np.random.default_rng(0), csf=drawn.csf)
        whole, _ = render_volume(drawn.labels, drawn.pv, scan, np.random.default_rng(0))
        assert sign * (mixed[partial].mean() - mixed[pure].mean()) > 0.05, family
        assert abs(whole[partial].mean() - whole[pure].mean()) < 0.05, family  # whole classes: no sulcal CSF


def test_version_2_renders_as_before_its_csf_fraction_existed():
    drawn = label_map(4, SMALL, version=2)
    for family in ("T2w", "FLAIR"):
        scan = draw_scan(np.random.default_rng(1), family, (1.1, 1.1, 1.1))
        with_csf = render_volume(drawn.labels, drawn.pv, scan, np.random.default_rng(2), csf=drawn.csf)
        without = render_volume(drawn.labels, drawn.pv, scan, np.random.default_rng(2))
        assert all(np.array_equal(a, b) for a, b in zip(with_csf, without, strict=True))
    data = {"labels": drawn.labels[None], "pv": drawn.pv[None], "centres": drawn.centres}
    a = RandSynthPatchesd([32, 32, 32], num_samples=1).set_random_state(3)(data)[0]
    b = RandSynthPatchesd([32, 32, 32], num_samples=1).set_random_state(3)({**data, "csf": drawn.csf[None]})[0]
    assert np.array_equal(a["image"].numpy(), b["image"].numpy())
