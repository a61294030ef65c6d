"""The configs agree: keys copied between train.json and inference.json (and evaluate.json) stay identical, each key
has one meaning, and every composition the documents use resolves all its references."""

from __future__ import annotations

import json

import pytest
from conftest import CONFIGS
from monai.bundle import ConfigParser

from scripts.cpu import auto_workers
from scripts.regions import DEFAULT_REGIONS

# The keys inference.json repeats from train.json (it is read alone: `run inferring --config_file
# configs/inference.json`); its network and preprocessing come from the model's model.json (RECORDED below).
SHARED_WITH_TRAINING = [
    "bundle_root",
    "model_file",
    "device",
    "precision",
    "amp",
    "amp_kwargs",
    "num_threads",
    "parcellation_dir",
    "parcellation_files",
    "sw_batch_size",
    "model_settings",
]
# The network and preprocessing keys inference.json reads from the model's model.json, falling back to train.json's.
RECORDED = [
    "pixdim",
    "intensity",
    "patch_size",
    "sw_overlap",
    "sw_roi_size",
    "encoder_name",
    "decoder_channels",
    "norm",
    "full_res_channels",
]
# The test-time settings evaluate.json (over train.json) repeats from inference.json.
SHARED_WITH_EVALUATION = [
    "backend",
    "export_file",
    "backend_choice",
    "threshold",
    "resolved_threshold",
    "tta",
    "resolved_tta",
    "tta_axes",
    "min_pvs_voxels",
    "min_pvs_mm3",
    "grow_threshold",
    "threshold_on",
    "contrasts",
    "resolved_contrasts",
    "model_check",
    "foreground_threshold",
    "skip_background_windows",
    "clear_outside_head",
]
# Each workflow with the overlays the documents and the benchmarks compose it with.
COMPOSITIONS = [
    ("training", ["train.json"]),
    ("training", ["train.json", "demo.json"]),
    ("training", ["train.json", "synthetic.json"]),
    ("training", ["train.json", "seed_1p5mm.json"]),
    ("training", ["train.json", "multi_gpu_train.json"]),
    ("training", ["train.json", "demo.json", "multi_gpu_train.json"]),
    ("check_data", ["train.json"]),
    ("evaluating", ["train.json", "evaluate.json"]),
    ("evaluating", ["train.json", "demo.json", "evaluate.json"]),
    ("evaluating", ["train.json", "pretrained.json", "evaluate.json"]),
    ("evaluating", ["train.json", "synthetic.json", "evaluate.json"]),
    ("evaluating", ["train.json", "evaluate.json", "multi_gpu_evaluate.json"]),
    ("baseline", ["train.json", "evaluate.json"]),
    ("inferring", ["inference.json"]),
    ("inferring", ["inference.json", "demo.json"]),
    ("inferring", ["inference.json", "pretrained.json"]),
    ("inferring", ["inference.json", "inference_torchscript.json"]),
    ("inferring", ["inference.json", "inference_onnx.json"]),
    ("inferring", ["inference.json", "inference_openvino.json"]),
    ("inferring", ["inference.json", "multi_gpu_inference.json"]),
]


def raw(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


@pytest.mark.parametrize("key", SHARED_WITH_TRAINING)
def test_inference_repeats_the_training_model_and_preprocessing_keys_exactly(key):
    assert raw("inference.json")[key] == raw("train.json")[key]


def _resolved(files: list[str], keys: list[str], **overrides) -> dict:
    parser = ConfigParser(ConfigParser.load_config_files([str(CONFIGS / f) for f in files]))
    parser.update({"bundle_root": str(CONFIGS.parent), **overrides})
    return {key: parser.get_parsed_content(key) for key in keys}


def test_inference_builds_the_shipped_model_by_default_and_train_json_s_network_without_a_model_json(tmp_path):
    """The zoo's check: inference.json's defaults build the model the bundle ships (models/model.pt, whose
    model.json gives the shipped settings, pretrained.json's); a model without model.json gets train.json's."""
    shipped = _resolved(["inference.json"], RECORDED)
    pretrained = raw("pretrained.json")
    assert shipped == {key: pretrained[key] for key in RECORDED}
    bare = _resolved(["inference.json"], RECORDED, model_file=str(tmp_path / "model.pt"))
    train = _resolved(["train.json"], RECORDED)
    assert bare == train and bare["encoder_name"] == "efficientnet-b7"
    demo = _resolved(["inference.json", "demo.json"], RECORDED)
    assert demo == _resolved(["train.json", "demo.json"], RECORDED)


def test_inference_builds_the_network_training_built():
    """Both build network_def from model_settings (what training saves and inference checks); only the encoder's
    starting weights differ (the trained weights replace them) and inference's Swish (the exportable one)."""
    train, inference = raw("train.json")["network_def"], raw("inference.json")["network_def"]
    for network_def in (train, inference):
        assert network_def["_target_"] == "scripts.model.network.network_from_settings"
        assert network_def["settings"] == "@model_settings"
    assert (
        raw("train.json")["encoder_weights"] == "imagenet"
        and raw("inference.json")["network_def"]["encoder_weights"] is None
    )


@pytest.mark.parametrize("key", SHARED_WITH_EVALUATION)
def test_evaluation_repeats_the_inference_settings_exactly(key):
    assert raw("evaluate.json")[key] == raw("inference.json")[key]


def test_one_meaning_per_key():
    """``model_tta`` is the recipe's TTA stored with the model, ``tta`` the one used at test time; evaluation's
    detection size filter and the small-component removal have names that say which is which."""
    assert "tta" not in raw("train.json") and "tta" not in raw("demo.json")
    assert raw("train.json")["model_tta"] == "none" and raw("demo.json")["model_tta"] == "mirror"
    assert raw("inference.json")["tta"] == raw("evaluate.json")["tta"] == "auto"
    for name in ("train.json", "demo.json", "evaluate.json", "inference.json", "pretrained.json", "synthetic.json"):
        text = (CONFIGS / name).read_text()
        assert "min_pvs_size" not in text and ("model_tta" not in text or name in ("train.json", "demo.json"))
    assert raw("evaluate.json")["detection_min_voxels"] == 0 and raw("inference.json")["min_pvs_voxels"] == 0


@pytest.mark.parametrize(("workflow", "files"), COMPOSITIONS, ids=lambda v: v if isinstance(v, str) else "+".join(v))
def test_every_documented_composition_resolves_its_references(workflow, files):
    """Resolve the workflow's references without building or running anything: a key renamed in one config and
    still used in another fails here."""
    parser = ConfigParser(ConfigParser.load_config_files([str(CONFIGS / f) for f in files]))
    for id_ in (workflow, "initialize", "finalize"):
        if id_ in parser:
            parser.get_parsed_content(id_, instantiate=False, eval_expr=False)


@pytest.mark.parametrize(("name", "limit"), [("train.json", 400), ("inference.json", 220)])
def test_the_main_configs_stay_within_their_length(name, limit):
    lines = len((CONFIGS / name).read_text().splitlines())
    assert lines <= limit, f"{name} has {lines} lines, over its {limit} (issue 24): move logic to scripts/, not keys"


def test_one_input_is_read_in_the_main_process_and_a_cohort_by_workers():
    """A loader worker reads the next scan while the network runs; with one scan there is no next one, and starting
    the worker and passing the volume back cost 2.2 s of a 208 x 300 x 320 head (docs/performance.md)."""
    expression = raw("inference.json")["num_workers"]
    assert expression.startswith(raw("train.json")["num_workers"])  # train.json's workers for a cohort
    parser = ConfigParser(raw("inference.json"))
    for inputs, expected in ((["a.nii.gz"], 0), (["a.nii.gz", "b.nii.gz"], auto_workers())):
        parser["dataset"] = inputs
        assert parser.get_parsed_content("num_workers") == expected


def test_evaluation_scores_by_the_region_map_inference_measures_by():
    assert raw("inference.json")["regions"] == raw("evaluate.json")["regions"] == "$@scripts.regions.DEFAULT_REGIONS"
    assert ConfigParser(raw("inference.json")).get_parsed_content("regions") == DEFAULT_REGIONS
