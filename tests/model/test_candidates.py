"""Unshipped training stages in ``candidates/``: intact, described, and loadable by the warm start."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from conftest import BUNDLE_ROOT, CONFIGS
from monai.bundle import ConfigParser

from scripts.training.warm_start import load_pretrained_weights

CANDIDATES = BUNDLE_ROOT.parent / "candidates"
STAGES = sorted(p.parent for p in CANDIDATES.glob("*/model.json"))


def test_every_stage_is_listed_in_the_candidates_readme():
    listed = (CANDIDATES / "README.md").read_text()
    assert STAGES, "candidates/ holds at least the stage issue 26's training continues from"
    for stage in STAGES:
        assert f"[`{stage.name}`]({stage.name}/model.json)" in listed, stage.name


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_a_stage_is_intact_and_a_warm_start_continues_it(stage):
    model = stage / "model.pt"
    saved = json.loads((stage / "model.json").read_text())
    assert model.stat().st_size <= 25 * 1024 * 1024 and saved["weights_dtype"] == "float16"
    assert saved["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    earlier = saved["training"]["continued_from"]
    assert earlier, "a stage continues an earlier release, whose CPU time stays on record"
    minutes = saved["training"]["cpu_minutes"] + sum(run["cpu_minutes"] for run in earlier)
    assert saved["total_cpu_hours"] == pytest.approx(minutes / 60.0, abs=0.01)
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "synthetic.json")])
    parser.update({"bundle_root": str(BUNDLE_ROOT), "full_res_channels": saved["full_res_channels"]})
    network = parser.get_parsed_content("network_def")
    load_pretrained_weights(network, model, parser.get_parsed_content("model_settings"))  # strict: every tensor fits
    state = torch.load(model, weights_only=True)
    loaded = network.state_dict()
    assert all(torch.equal(loaded[k], v.float()) for k, v in state.items() if v.is_floating_point())
