"""The training workflow run for real through `python -m monai.bundle run` on NIfTI files in a temp dir."""

import json
import time

import pytest
import torch
from conftest import BUNDLE_ROOT, CONFIGS, REPO_ROOT, TINY_TRAINING, run_bundle, run_dirs
from monai.bundle import ConfigWorkflow

from scripts.model.network import build_unetplusplus
from scripts.training.threshold import THRESHOLDS


def test_training_writes_model_history_and_plot(bids_dataset, tmp_path):
    # Half the cases in RAM, the rest read from the disk cache every epoch.
    disk_cache = ["--cache_rate", "0.5", "--cache_dir", str(tmp_path / "cache")]
    args = ["run", "training", "--config_file", "configs/train.json", *run_dirs(tmp_path, bids_dataset)]
    proc = run_bundle([*args, *TINY_TRAINING, *disk_cache])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    model = build_unetplusplus(encoder_name="efficientnet-b0", encoder_weights=None, decoder_channels=(32, 16, 8, 8, 4))
    model.load_state_dict(state)
    settings = json.loads((tmp_path / "models" / "model.json").read_text())
    assert settings["encoder_name"] == "efficientnet-b0" and settings["decoder_channels"] == [32, 16, 8, 8, 4]
    assert settings["norm"] == "batch" and settings["patch_size"] == [32, 32, 32] and settings["pixdim"] == [0.8] * 3
    # the threshold chosen on the validation split goes with the model it was chosen for
    selection = settings["threshold_selection"]
    assert settings["threshold"] in THRESHOLDS and selection["validation_cases"] >= 1
    if selection["validation_pvs"] < 50:  # too few validation PVS to trust a tuned threshold (issue 23)
        assert settings["threshold"] == 0.5 and selection["val_dice"] == selection["val_dice_at_0.5"]
    else:
        assert selection["val_dice_pooled"] == selection["best_pooled"]["dice"]
    assert settings["tta"] == "none"  # train.json's recipe: evaluation and inference under tta auto do not mirror
    history = json.loads((tmp_path / "eval" / "training_history.json").read_text())
    assert [row["epoch"] for row in history["epochs"]] == [1, 2]
    for row in history["epochs"]:
        assert {"train_loss", "lr", "val_loss", "val_dice", "val_iou", "val_precision", "val_recall"} <= set(row)
        assert row["val_threshold"] in THRESHOLDS
        if row["val_threshold"] == 0.5:  # the sweep's mean case Dice at 0.5 is the key metric's
            assert row["val_dice_tuned"] == pytest.approx(row["val_dice"], abs=1e-6)
    assert (tmp_path / "eval" / "training_history.png").stat().st_size > 1000
    datalist = json.loads((tmp_path / "eval" / "datalist.json").read_text())
    assert "sub-006" not in json.dumps(datalist)  # its mask is empty
    folders = sorted((tmp_path / "cache").iterdir())  # training and validation cache different transform chains
    assert sorted(len(list(folder.glob("*.pt"))) for folder in folders) == sorted(
        [len(datalist["training"]), len(datalist["validation"])]
    )
    assert "sub-006_desc-mask_PVS.nii.gz is empty" in proc.stdout + proc.stderr


def test_default_run_id_from_the_repository_root(bids_dataset, tmp_path):
    args = ["run", "--config_file", "pvs_bundle/configs/train.json", "--bundle_root", "pvs_bundle"]
    proc = run_bundle([*args, *run_dirs(tmp_path, bids_dataset), *TINY_TRAINING, "--max_epochs", "1"], cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "models" / "model.pt").is_file()


def test_missing_dataset_fails_at_once_with_what_was_looked_for(tmp_path):
    start = time.monotonic()
    proc = run_bundle(
        ["run", "training", "--config_file", "configs/train.json", *run_dirs(tmp_path, tmp_path / "absent")]
    )
    assert proc.returncode != 0
    assert f"dataset_dir {tmp_path / 'absent'} does not exist" in proc.stderr
    assert "_T2w.nii[.gz]" in proc.stderr
    assert time.monotonic() - start < 120  # no training started: only imports and the check
    assert not (tmp_path / "models" / "model.pt").exists()


def test_bad_patch_size_fails_before_any_data_is_read(bids_dataset, tmp_path):
    args = ["run", "training", "--config_file", "configs/train.json", *run_dirs(tmp_path, bids_dataset)]
    proc = run_bundle([*args, *TINY_TRAINING, "--patch_size", "[48,48,48]"])
    assert proc.returncode != 0
    assert "patch_size must be three positive multiples of 32" in proc.stderr
    assert not (tmp_path / "eval" / "datalist.json").exists()


def test_train_config_meets_the_model_zoo_property_contract(bids_dataset, tmp_path):
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train",
        dataset_dir=str(bids_dataset),
        output_dir=str(tmp_path / "eval"),
        encoder_weights=None,
        encoder_name="efficientnet-b0",
        num_workers=0,
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert workflow.val_interval == 1 and workflow.bundle_root == "."
    assert BUNDLE_ROOT.joinpath("configs", "train.json").is_file()


def test_corrupt_file_fails_fast_naming_it(bids_dataset, tmp_path):
    image = bids_dataset / "sub-002" / "anat" / "sub-002_T2w.nii.gz"
    image.write_bytes(image.read_bytes()[:-200])  # a truncated download
    args = ["run", "training", "--config_file", "configs/train.json", *run_dirs(tmp_path, bids_dataset)]
    proc = run_bundle([*args, *TINY_TRAINING])
    assert proc.returncode != 0
    assert "the data check found 1 error(s)" in proc.stderr
    assert "sub-002/anat/sub-002_T2w.nii.gz" in proc.stderr
    assert (tmp_path / "eval" / "data_check_training.json").is_file()
    assert not (tmp_path / "models" / "model.pt").exists()


def test_check_data_run_id_reports_every_fault(bids_dataset, tmp_path):
    mask = bids_dataset / "derivatives" / "mask" / "sub-003" / "sub-003_desc-mask_PVS.nii.gz"
    mask.write_bytes(b"not a nifti file")
    (bids_dataset / "sub-004" / "anat" / "sub-004_T2w.mgz").write_bytes(b"x")
    proc = run_bundle(["run", "check_data", "--config_file", "configs/train.json", *run_dirs(tmp_path, bids_dataset)])
    assert proc.returncode != 0
    report = json.loads((tmp_path / "eval" / "data_check.json").read_text())
    found = {(f["file"], f["problem"]) for f in report["findings"]}
    assert ("derivatives/mask/sub-003/sub-003_desc-mask_PVS.nii.gz", "unreadable") in found or any(
        f.startswith("derivatives/mask/sub-003") and p in ("truncated", "corrupt") for f, p in found
    )
    assert any(f.endswith("sub-004_T2w.mgz") and p == "not_nifti" for f, p in found)
    assert any(f.endswith("sub-006_desc-mask_PVS.nii.gz") and p == "empty_mask" for f, p in found)


def test_training_with_the_thin_structure_terms_on(bids_dataset, tmp_path):
    args = ["run", "training", "--config_file", "configs/train.json", *run_dirs(tmp_path, bids_dataset)]
    terms = ["--loss_weights#skeleton_recall", "1.0", "--loss_weights#cldice", "0.5", "--loss_weights#blob", "0.5"]
    proc = run_bundle([*args, *TINY_TRAINING, "--max_epochs", "1", *terms])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    history = json.loads((tmp_path / "eval" / "training_history.json").read_text())["epochs"]
    plain = run_bundle([*args[:4], *run_dirs(tmp_path / "plain", bids_dataset), *TINY_TRAINING, "--max_epochs", "1"])
    assert plain.returncode == 0, plain.stderr[-3000:]
    baseline = json.loads((tmp_path / "plain" / "eval" / "training_history.json").read_text())["epochs"]
    # the same data, seed and network: the added terms (all >= 0) raise the training and validation loss
    assert history[0]["train_loss"] > baseline[0]["train_loss"] and history[0]["val_loss"] > baseline[0]["val_loss"]
