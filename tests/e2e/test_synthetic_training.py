"""Training with no dataset (configs/synthetic.json), releasing the model, and warm starts from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import BUNDLE_ROOT, CONFIGS, TINY_TRAINING, bundle_env, run_bundle
from monai.bundle import ConfigParser

SYNTHETIC = "['configs/train.json','configs/synthetic.json']"
TINY_SYNTH = [
    "--synth#n_label_maps",
    "2",
    "--synth#n_validation",
    "1",
    "--synth#shape",
    "[48,48,48]",
    "--max_cpu_minutes",
    "1000",
    "--val_interval",
    "1",
    *TINY_TRAINING,
]


def train(root: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["run", "training", "--config_file", SYNTHETIC, "--output_dir", str(root / "eval")]
    return run_bundle([*args, "--ckpt_dir", str(root / "models"), *TINY_SYNTH, *extra])


def release(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["--ckpt_dir", str(root / "models"), "--history", str(root / "eval/training_history.json")]
    return subprocess.run(
        [sys.executable, "-m", "scripts.model.release", *args, "--out_dir", str(out), "--command", "test", *extra],
        cwd=BUNDLE_ROOT,
        env=bundle_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    proc = train(root, "--max_epochs", "1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root


def test_training_needs_no_dataset_and_records_what_trained_it(trained):
    saved = json.loads((trained / "models/model.json").read_text())
    assert saved["contrasts"] == ["T2w", "T1w", "FLAIR"]
    assert saved["training_data"] == "synthetic"
    assert saved["generator"]["module"] == "scripts.data.synth" and saved["generator"]["n_label_maps"] == 2
    history = json.loads((trained / "eval/training_history.json").read_text())
    row = history["epochs"][-1]
    assert {"val_dice_T2w", "val_dice_T1w", "val_dice_FLAIR"} <= set(row)
    assert (trained / "eval/synthetic_validation/sub-v01/anat/sub-v01_FLAIR.nii.gz").is_file()


def test_release_halves_and_hashes_the_weights(trained, tmp_path):
    proc = release(trained, tmp_path / "pretrained", "--sw_roi_size", "32", "64", "32", "--sw_overlap", "0.4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = torch.load(tmp_path / "pretrained/model.pt", weights_only=True)
    full = torch.load(trained / "models/model.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    key = next(k for k, v in full.items() if v.is_floating_point() and v.numel() > 100)
    assert torch.allclose(state[key].float(), full[key], atol=1e-3, rtol=1e-3)
    saved = json.loads((tmp_path / "pretrained/model.json").read_text())
    import hashlib

    assert saved["sha256"] == hashlib.sha256((tmp_path / "pretrained/model.pt").read_bytes()).hexdigest()
    assert saved["training"]["epochs"] == 1 and saved["training"]["cpu_minutes"] > 0
    assert saved["contrasts"] == ["T2w", "T1w", "FLAIR"] and saved["weights_dtype"] == "float16"
    # inference.json alone runs the release with the network, preprocessing and window its model.json records
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update({"bundle_root": str(BUNDLE_ROOT), "model_file": str(tmp_path / "pretrained/model.pt")})
    assert parser.get_parsed_content("sw_roi_size") == [32, 64, 32] and parser.get_parsed_content("sw_overlap") == 0.4
    assert parser.get_parsed_content("model_settings") == {
        k: v for k, v in saved.items() if k in parser.get_parsed_content("model_settings")
    }


def test_release_stores_the_size_rule_inference_and_evaluation_apply_by_default(trained, tmp_path):
    proc = release(trained, tmp_path / "sized", "--min_pvs_mm3", "auto")
    assert proc.returncode == 0, proc.stderr[-2000:]
    path = tmp_path / "sized/model.json"
    saved = json.loads(path.read_text())
    assert saved["defaults"] == {"min_pvs_mm3": "auto"}
    path.write_text(json.dumps({**saved, "min_pvs_mm3": 2.0}))  # as a validation that chose 2 mm³ would store
    for files in (["inference.json"], ["train.json", "evaluate.json"]):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / f) for f in files])
        parser.update({"bundle_root": str(BUNDLE_ROOT), "model_file": str(tmp_path / "sized/model.pt")})
        assert parser.get_parsed_content("resolved_min_pvs_mm3") == 2.0, files
        parser["min_pvs_mm3"] = 0  # the command line still wins
        assert parser.get_parsed_content("resolved_min_pvs_mm3") == 0.0, files
    plain = release(trained, tmp_path / "plain")
    assert plain.returncode == 0 and "defaults" not in json.loads((tmp_path / "plain/model.json").read_text())
    bad = release(trained, tmp_path / "bad", "--min_pvs_mm3", "big")
    assert bad.returncode != 0 and "--min_pvs_mm3 must be 'auto' or a number >= 0, not 'big'" in bad.stderr
    assert not (tmp_path / "bad/model.pt").exists()


def test_warm_start_continues_and_keeps_the_cpu_record(trained, tmp_path):
    assert release(trained, tmp_path / "first").returncode == 0
    second = tmp_path / "second"
    proc = train(second, "--max_epochs", "1", "--pretrained_weights", str(tmp_path / "first/model.pt"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Warm start from {tmp_path / 'first/model.pt'}" in proc.stdout + proc.stderr
    continued = release(second, tmp_path / "again", "--continued_from", str(tmp_path / "first/model.json"))
    assert continued.returncode == 0, continued.stderr[-2000:]
    saved = json.loads((tmp_path / "again/model.json").read_text())
    assert len(saved["training"]["continued_from"]) == 1
    first_minutes = json.loads((tmp_path / "first/model.json").read_text())["training"]["cpu_minutes"]
    total = (first_minutes + saved["training"]["cpu_minutes"]) / 60
    assert saved["total_cpu_hours"] == pytest.approx(total, abs=0.01)


def test_warm_start_grows_the_full_resolution_head_onto_a_plain_model(trained, tmp_path):
    weights = str(trained / "models/model.pt")
    proc = train(tmp_path, "--max_epochs", "1", "--pretrained_weights", weights, "--full_res_channels", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "The full-resolution head is new: it starts at zero" in proc.stdout + proc.stderr
    assert json.loads((tmp_path / "models/model.json").read_text())["full_res_channels"] == 4
    state = torch.load(tmp_path / "models/model.pt", weights_only=True)
    assert any(key.startswith("full_res.") for key in state)


def test_warm_start_refuses_weights_of_another_network(trained, tmp_path):
    proc = train(
        tmp_path,
        "--max_epochs",
        "1",
        "--pretrained_weights",
        str(trained / "models/model.pt"),
        "--decoder_channels",
        "[16,16,8,8,4]",
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("pvs_bundle: error:") and "decoder_channels" in last and "model.pt" in last


def test_warm_start_names_a_missing_file(tmp_path):
    proc = train(tmp_path, "--max_epochs", "1", "--pretrained_weights", str(tmp_path / "nowhere.pt"))
    assert proc.returncode != 0
    assert "pretrained_weights" in proc.stderr.strip().splitlines()[-1] and "does not exist" in proc.stderr


def test_synthetic_and_labelled_cases_train_together(tmp_path, bids_dataset):
    proc = train(tmp_path, "--max_epochs", "1", "--dataset_dir", str(bids_dataset), "--synth#fraction", "0.5")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Training on 3 labelled case(s) and 3 synthetic label map(s)." in proc.stdout + proc.stderr
    saved = json.loads((tmp_path / "models/model.json").read_text())
    assert saved["training_data"] == "synthetic and labelled" and saved["generator"]["fraction"] == 0.5
    history = json.loads((tmp_path / "eval/training_history.json").read_text())
    assert "val_dice" in history["epochs"][-1]  # validated on the dataset's own validation split
    assert not (tmp_path / "eval/synthetic_validation").exists()
