"""The postprocessing chain (scripts.inference.postprocessing): inference and evaluation binarise predictions alike."""

from __future__ import annotations

import pytest
import torch
from conftest import CONFIGS
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, Orientationd

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
