"""A newcomer's first hour: the demo model on one's own scans, self-describing model files, inputs checked for
their contrast, and failures that end in one readable line."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIGS, run_bundle, write_nifti
from ignite.engine import Engine, Events
from inference_helpers import SHAPE, infer, output, ras_affine
from monai.bundle import ConfigParser

from scripts.errors import PREFIX, BundleError, one_line, root_cause
from scripts.inference.inference_inputs import inference_datalist
from scripts.model.model_file import SETTINGS, check_model_settings, read_settings, settings_file, write_settings
from scripts.model.network import network_from_settings
from scripts.training.checkpoint import BestModelSaver


def short(stderr: str) -> bool:
    """No traceback: MONAI's two-line notice that configs are code, where the log is, and the error line."""
    return "Traceback" not in stderr and len(stderr.strip().splitlines()) <= 4


def demo_settings() -> dict:
    """The settings train.json + demo.json build the network and preprocessing with."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "demo.json")])
    return parser.get_parsed_content("model_settings")


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory) -> Path:
    """An untrained model built as demo.json builds it (B0, GroupNorm, 32³), saved as training saves it."""
    settings = demo_settings()
    torch.manual_seed(0)
    network = network_from_settings(settings)
    path = tmp_path_factory.mktemp("models") / "model.pt"
    torch.save(network.state_dict(), path)
    write_settings(path, settings)
    return path


@pytest.fixture
def own_scans(tmp_path) -> Path:
    """A user's folder of two scans, named as BIDS would name them."""
    rng = np.random.default_rng(0)
    for name in ("sub-101_T2w.nii.gz", "sub-102_ses-2_run-1_T2w.nii.gz"):
        write_nifti(tmp_path / "mine" / name, rng.uniform(0, 500, SHAPE), ras_affine())
    return tmp_path / "mine"


def test_demo_overlay_segments_the_users_own_scans_not_the_demo_dataset(tmp_path, own_scans, demo_model):
    demo_data = tmp_path / "demo_data"
    proc = run_bundle(
        [
            "run",
            "inferring",
            "--config_file",
            "['configs/inference.json','configs/demo.json']",
            "--input_dir",
            str(own_scans),
            "--output_dir",
            str(tmp_path / "out"),
            "--model_file",
            str(demo_model),
            "--demo#data_dir",
            str(demo_data),
            "--num_workers",
            "0",
        ]
    )
    assert proc.returncode == 0, output(proc)
    rows = json.loads((tmp_path / "out" / "pvs_burden.json").read_text())
    assert [(r["subject"], r["session"], r["run"], r["image"]) for r in rows] == [
        ("sub-101", "", "", "sub-101_T2w.nii.gz"),
        ("sub-102", "ses-2", "run-1", "sub-102_ses-2_run-1_T2w.nii.gz"),
    ]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == [
        "sub-101_desc-pvs_mask.nii.gz",
        "sub-102_ses-2_run-1_desc-pvs_mask.nii.gz",
    ]
    assert not demo_data.exists()
    assert f"Segmenting 2 image(s) from {own_scans}" in proc.stdout
    assert "Wrote 2 mask(s)" in proc.stdout


@pytest.mark.parametrize("given", ["dataset_dir", "input_files"])
def test_demo_overlay_yields_to_a_dataset_or_files_the_user_gives(tmp_path, own_scans, given):
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "demo.json")])
    value = str(own_scans) if given == "dataset_dir" else [str(p) for p in sorted(own_scans.iterdir())]
    parser.update({given: value, "demo#data_dir": str(tmp_path / "demo_data")})
    items = parser.get_parsed_content("dataset#data")
    assert [Path(i["image"]).parent for i in items] == [own_scans, own_scans]
    assert not (tmp_path / "demo_data").exists()


def test_a_model_trained_otherwise_stops_with_one_line_naming_the_differences(tmp_path, own_scans, demo_model):
    proc = infer("--input_dir", str(own_scans), "--output_dir", str(tmp_path / "out"), "--model_file", str(demo_model))
    assert proc.returncode != 0
    # inference.json takes norm and the rest from the model's model.json; the flags given here (decoder_channels)
    # contradict it, and only they are named
    assert proc.stderr.strip().splitlines()[-1] == (
        f"{PREFIX}{demo_model} was trained with decoder_channels [256, 128, 64, 32, 16]; this config "
        "builds decoder_channels [32, 16, 8, 8, 4]: add the config it was trained with "
        "(configs/demo.json for models/demo/) or pass --decoder_channels '[256,128,64,32,16]'"
    )
    assert short(proc.stderr), proc.stderr
    assert not (tmp_path / "out").exists()


def test_model_settings_sidecar_round_trip_and_legacy_files(tmp_path, demo_model):
    settings = demo_settings()
    assert list(read_settings(demo_model)) == list(SETTINGS)
    assert check_model_settings(demo_model, settings) == json.loads(json.dumps(settings))
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(demo_model.read_bytes())
    assert check_model_settings(legacy, {**settings, "encoder_name": "efficientnet-b7"}) is None  # unchecked
    with pytest.raises(BundleError, match=r"trained with pixdim \[0.8, 0.8, 0.8\]; this config builds pixdim \[1.5"):
        check_model_settings(demo_model, {**settings, "pixdim": [1.5, 1.5, 1.5]})
    with pytest.raises(ValueError, match="model settings must hold"):
        write_settings(tmp_path / "m.pt", {"encoder_name": "efficientnet-b0"})


def test_best_model_saver_writes_the_settings_beside_the_weights(tmp_path):
    network = torch.nn.Conv3d(1, 1, 1)
    settings = demo_settings()
    saver = BestModelSaver(tmp_path / "model.pt", network, settings=settings)
    engine = Engine(lambda engine, batch: None)
    engine.add_event_handler(Events.STARTED, lambda e: e.state.__dict__.update(best_metric=0.5, best_metric_epoch=1))
    saver.attach(engine)
    engine.run([0], max_epochs=1)
    state = torch.load(tmp_path / "model.pt", weights_only=True)  # still a plain state dict
    assert set(state) == {"weight", "bias"}
    saved = json.loads(settings_file(tmp_path / "model.pt").read_text())
    assert saved == {**json.loads(json.dumps(settings)), "tta": "none"}  # the settings, then the recipe's tta


def test_other_contrasts_are_refused_unless_allowed(tmp_path):
    folder = tmp_path / "in"
    for name in ("sub-101_T1w.nii.gz", "sub-101_desc-mask_PVS.nii.gz", "sub-102_T2w.nii.gz", "scan7.nii.gz"):
        write_nifti(folder / name, np.ones(SHAPE), ras_affine())
    with pytest.raises(ValueError, match="2 of 4 input") as refused:
        inference_datalist(folder, tmp_path / "out")
    assert f"{folder / 'sub-101_T1w.nii.gz'}: is a T1w image by its name, but the model was trained for T2w only" in (
        str(refused.value)
    )
    assert f"{folder / 'sub-101_desc-mask_PVS.nii.gz'}: is a PVS image by its name" in str(refused.value)
    assert "--allow_any_contrast true" in str(refused.value)
    items = inference_datalist(folder, tmp_path / "out", allow_any_contrast="true")
    assert [i["row"]["subject"] for i in items] == ["scan7", "sub-101", "sub-101", "sub-102"]


def test_missing_dataset_ends_with_the_bundles_message_and_a_log(tmp_path):
    legacy_model = tmp_path / "model.pt"  # exists, and has no settings to check: the dataset is what is missing
    torch.save({}, legacy_model)  # a readable state dict: the model check passes
    args = ["--input_dir", str(tmp_path / "absent"), "--output_dir", str(tmp_path / "out")]
    proc = infer(*args, "--model_file", str(legacy_model))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"{PREFIX}input_dir {tmp_path / 'absent'} does not exist: pass --input_dir")
    assert short(proc.stderr), proc.stderr
    log = Path(re.search(r"full traceback in (\S+),", proc.stderr).group(1))
    assert "Traceback" in log.read_text() and "does not exist" in log.read_text()
    assert re.fullmatch(r"pvs_bundle_error\.\d+\.log", log.name)  # one per process: runs failing together keep theirs
    assert not (tmp_path / "out").exists()  # no output folder made just for the log


def test_missing_model_ends_with_the_bundles_message_and_debug_shows_the_traceback(tmp_path, own_scans):
    absent = tmp_path / "models" / "model.pt"
    args = ["--input_dir", str(own_scans), "--output_dir", str(tmp_path / "out"), "--model_file", str(absent)]
    proc = infer(*args)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"{PREFIX}model file {absent} does not exist: run training first")
    assert short(proc.stderr), proc.stderr
    debug = infer(*args, "--debug", "true")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_root_cause_prefers_the_bundles_own_error():
    try:
        try:
            raise BundleError("models/model.pt was trained with norm group")
        except BundleError as inner:
            raise RuntimeError("Failed to instantiate component") from inner
    except RuntimeError as outer:
        assert isinstance(root_cause(outer), BundleError)
        assert one_line(outer) == "models/model.pt was trained with norm group"
    try:
        raise RuntimeError("Failed to evaluate") from KeyError("dataset_dir")
    except RuntimeError as outer:
        assert one_line(outer) == "KeyError: 'dataset_dir'"
