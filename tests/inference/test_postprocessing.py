"""The postprocessing chain (scripts.inference.postprocessing): inference and evaluation binarise predictions alike."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import CONFIGS
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, Orientationd, Spacingd

from scripts.inference.postprocessing import mask_transforms

SHARED = ["Activationsd", "Invertd", "HysteresisThresholdd", "RemoveSmallComponentsd"]


def parsed(files: list[str], id_: str, **updates) -> Compose:
    parser = ConfigParser(ConfigParser.load_config_files([str(CONFIGS / f) for f in files]))
    parser.update(updates)
    return parser.get_parsed_content(id_)


def names(transforms) -> list[str]:
    return [type(t).__name__ for t in transforms]


def test_inference_keeps_the_head_mask_and_the_probabilities():
    chain = parsed(["inference.json"], "postprocessing", threshold=0.3, grow_threshold=0.1, min_pvs_voxels=4)
    assert names(chain.transforms) == [
        "Activationsd",
        "Aliasd",  # image -> head
        "Invertd",  # pred and head back to the input's grid
        "Aliasd",  # pred -> prob, before the threshold
        "AsDiscreted",  # head at foreground_threshold
        "HysteresisThresholdd",
        "RemoveSmallComponentsd",
    ]
    _, head, invert, prob, head_mask, threshold, small = chain.transforms
    assert (head.keys, head.names, prob.keys, prob.names) == (("image",), ("head",), ("pred",), ("prob",))
    assert invert.keys == ("pred", "head") and invert.orig_keys == ("image", "image")
    assert head_mask.keys == ("head",) and list(head_mask.threshold) == [0.05]  # foreground_threshold
    assert (threshold.threshold, threshold.grow_threshold, small.min_pvs_voxels) == (0.3, 0.1, 4)


@pytest.mark.parametrize("save", [True, False])
def test_evaluation_binarises_as_inference_then_reads_the_label(save):
    files = ["train.json", "evaluate.json"]
    updates = {"threshold": 0.3, "grow_threshold": 0.1, "min_pvs_voxels": 4, "save_predictions": save}
    chain = parsed(files, "validate#postprocessing", **updates)
    assert names(chain.transforms) == SHARED + ["NativeLabeld"] + (["SaveImaged"] if save else [])
    inference = parsed(["inference.json"], "postprocessing", threshold=0.3, grow_threshold=0.1, min_pvs_voxels=4)
    for ours, theirs in zip(chain.transforms[2:4], inference.transforms[5:], strict=True):
        assert vars(ours).keys() == vars(theirs).keys()
        assert {k: v for k, v in vars(ours).items() if k != "keys"} == {
            k: v for k, v in vars(theirs).items() if k != "keys"
        }


def test_the_chain_thresholds_and_removes_small_components_on_the_inputs_grid():
    preprocessing = Compose([Orientationd(keys="image", axcodes="RAS")])  # invertible, a no-op here
    logits = torch.full((1, 10, 20, 30), -10.0)
    logits[0, 2:5, 2:5, 2:5] = 10.0  # 27 voxels
    logits[0, 8, 15, 25] = 10.0  # one voxel
    image = preprocessing({"image": MetaTensor(torch.zeros(1, 10, 20, 30))})["image"]
    item = {"pred": MetaTensor(logits), "image": image}
    out = Compose(mask_transforms(preprocessing, threshold=0.5, min_pvs_voxels=2, keep_probabilities=True))(item)
    assert out["pred"].shape == (1, 10, 20, 30) and int(out["pred"].sum()) == 27
    assert float(out["prob"].max()) == pytest.approx(1.0, abs=1e-4) and "head" not in out


def test_a_bad_growth_threshold_is_refused():
    with pytest.raises(ValueError, match="grow_threshold must be above 0"):
        mask_transforms(Compose([]), threshold=0.5, grow_threshold=-0.1)


def coarse_input_and_fine_logits(probabilities: dict[int, float]) -> tuple[Compose, dict]:
    """An input of 1.2 mm voxels along x brought to a 0.5 mm model grid, and logits on it (-10 elsewhere).

    Input voxel 1 lies at x = 1.2 mm, between model voxels 2 (1.0 mm, weight 0.6) and 3 (1.5 mm, weight 0.4).
    """
    preprocessing = Compose([Spacingd(keys="image", pixdim=(0.5, 1.0, 1.0), mode="bilinear")])
    image = MetaTensor(
        torch.zeros(1, 8, 3, 3), affine=torch.diag(torch.tensor([1.2, 1.0, 1.0, 1.0], dtype=torch.float64))
    )
    image = preprocessing({"image": image})["image"]
    assert float(image.affine[0, 0]) == 0.5 and float(image.affine[0, 3]) == 0.0  # model voxel k lies at k * 0.5 mm
    logits = torch.full(image.shape, -10.0)
    for x, p in probabilities.items():
        logits[0, x] = math.log(p / (1 - p))
    return preprocessing, {"pred": MetaTensor(logits, affine=image.affine), "image": image}


def test_thresholding_on_the_model_grid_keeps_the_input_voxels_whose_centre_is_inside_the_mask():
    # model voxels 2 (p 0.95) and 3 (p 0.55) at threshold 0.8: the mask is voxel 2 alone, 1.0 mm wide around 1.0 mm;
    # input voxel 1 (1.2 mm) is inside it: its interpolated mask is 0.6, so it is kept. Interpolated first, its
    # probability is 0.6 * 0.95 + 0.4 * 0.55 = 0.79, below the threshold, and the PVS is lost.
    preprocessing, item = coarse_input_and_fine_logits({2: 0.95, 3: 0.55})
    on_model = Compose(mask_transforms(preprocessing, threshold=0.8, threshold_on="model", keep_probabilities=True))
    on_input = Compose(mask_transforms(preprocessing, threshold=0.8, threshold_on="input"))
    kept = on_model(dict(item))
    assert kept["pred"].shape == (1, 8, 3, 3)
    assert kept["pred"][0, :, 1, 1].tolist() == [0, 1, 0, 0, 0, 0, 0, 0] and int(kept["pred"].sum()) == 9
    assert float(kept["prob"][0, 1, 1, 1]) == pytest.approx(0.79, abs=1e-3)  # probabilities back on the input grid
    assert int(on_input(dict(item))["pred"].sum()) == 0


def test_both_orders_agree_on_the_model_grid_and_an_unknown_order_is_refused():
    preprocessing = Compose([Orientationd(keys="image", axcodes="RAS")])  # the input is on the model's grid
    logits = torch.linspace(-4.0, 4.0, 10 * 20 * 30).reshape(1, 10, 20, 30)
    image = preprocessing({"image": MetaTensor(torch.zeros(1, 10, 20, 30))})["image"]
    masks = [
        Compose(mask_transforms(preprocessing, threshold=0.7, threshold_on=on))(
            {"pred": MetaTensor(logits), "image": image}
        )
        for on in ("input", "model")
    ]
    assert 0 < int(masks[0]["pred"].sum()) < logits.numel() and torch.equal(masks[0]["pred"], masks[1]["pred"])
    with pytest.raises(ValueError, match="threshold_on must be one of"):
        mask_transforms(preprocessing, threshold=0.5, threshold_on="label")
