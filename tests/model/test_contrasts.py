"""The contrasts a model accepts (model.json's "contrasts"), configs/pretrained.json, the model file's integrity."""

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import BUNDLE_ROOT, CONFIGS, run_bundle, synthetic_case, write_nifti
from inference_helpers import output
from monai.bundle import ConfigParser

from scripts.bids import ANAT_CONTRASTS, as_contrasts
from scripts.data.datalist import find_pairs, load_or_create_datalist
from scripts.errors import PREFIX, BundleError
from scripts.inference.inference_inputs import inference_datalist
from scripts.inference.prediction_writer import ID_COLUMNS
from scripts.io import sha256_file
from scripts.model.model_file import check_model_file, resolve_contrasts, write_settings
from scripts.model.network import network_from_settings

SHAPE = (40, 48, 36)  # non-cubic
ALL_THREE = ["T2w", "T1w", "FLAIR"]
# What pretrained.json builds, with a 32³ window to keep the runs small on a CPU.
PATCH = [32, 32, 32]
PRETRAINED_RUN = ["--patch_size", json.dumps(PATCH), "--sw_batch_size", "4", "--num_workers", "0"]


def write_image(path: Path, seed: int = 0) -> Path:
    return write_nifti(path, synthetic_case(SHAPE, seed=seed)[0])


def last_line(proc) -> str:
    return proc.stderr.strip().splitlines()[-1]


def pretrained_settings() -> dict:
    """The settings inference.json + pretrained.json build the network with, less the window (see PATCH)."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "pretrained.json")])
    parser["patch_size"] = PATCH
    return parser.get_parsed_content("model_settings")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random-init model built as pretrained.json builds it; its model.json lists three contrasts and its SHA-256."""
    settings = pretrained_settings()
    torch.manual_seed(0)
    network = network_from_settings(settings)
    model = tmp_path_factory.mktemp("pretrained") / "model.pt"
    torch.save(network.state_dict(), model)
    write_settings(model, settings, {"contrasts": ALL_THREE, "sha256": sha256_file(model)})
    return model.parent


def copy_model(model_dir: Path, to: Path, **extra) -> Path:
    """A copy of the model whose model.json stores the settings with ``extra`` in place of the stored extras."""
    to.mkdir(parents=True)
    (to / "model.pt").write_bytes((model_dir / "model.pt").read_bytes())
    stored = json.loads((model_dir / "model.json").read_text())
    settings = {k: v for k, v in stored.items() if k not in ("contrasts", "sha256")}
    write_settings(to / "model.pt", settings, extra)
    return to / "model.pt"


def infer_pretrained(*args: str):
    config = "['configs/inference.json','configs/pretrained.json']"
    return run_bundle(["run", "inferring", "--config_file", config, *PRETRAINED_RUN, *args])


# --- resolve_contrasts -------------------------------------------------------------------------------------------


def test_contrasts_auto_are_the_models_else_t2w(tmp_path, caplog):
    model = tmp_path / "model.pt"
    with caplog.at_level(logging.INFO, logger="pvs_bundle.model_file"):
        assert resolve_contrasts("auto", model) == ["T2w"]  # no model.json
        (tmp_path / "model.json").write_text(json.dumps({"encoder_name": "efficientnet-b0", "tta": "mirror"}))
        assert resolve_contrasts("auto", model) == ["T2w"]  # settings saved before 0.7
        (tmp_path / "model.json").write_text(json.dumps({"encoder_name": "efficientnet-b0", "contrasts": ALL_THREE}))
        assert resolve_contrasts("auto", model) == ALL_THREE
    assert f"Image contrasts T2w (contrasts auto: {tmp_path / 'model.json'} stores none)" in caplog.text
    assert f"Image contrasts T2w, T1w, FLAIR (contrasts auto: the model's, stored in {tmp_path / 'model.json'})" in (
        caplog.text
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["FLAIR"], ["FLAIR"]),
        ("T1w", ["T1w"]),
        ("['T1w','FLAIR']", ["T1w", "FLAIR"]),  # as the command line may pass a list
        ('["T1w", "FLAIR"]', ["T1w", "FLAIR"]),
        ("T1w,FLAIR", ["T1w", "FLAIR"]),
        (("T2w", "T2w", "T1w"), ["T2w", "T1w"]),
    ],
)
def test_explicit_contrasts_override_the_models(tmp_path, value, expected, caplog):
    (tmp_path / "model.json").write_text(json.dumps({"contrasts": ALL_THREE}))
    with caplog.at_level(logging.INFO, logger="pvs_bundle.model_file"):
        assert resolve_contrasts(value, tmp_path / "model.pt") == expected
    assert f"Image contrasts {', '.join(expected)} (set by contrasts)." in caplog.text


@pytest.mark.parametrize("value", ["T3w", "", [], ["T1w", "mask"], ["T2w", "PVS"], "t2w", None, 2])
def test_contrasts_that_are_not_bids_anatomical_suffixes_are_refused(tmp_path, value):
    with pytest.raises(ValueError, match=r"contrasts \(or 'auto'\) must be BIDS anatomical suffixes such as"):
        resolve_contrasts(value, tmp_path / "model.pt")


def test_bad_stored_contrasts_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"contrasts": "T1w"}))  # a string, not a list
    with pytest.raises(BundleError, match=r"the contrasts stored in .*model.json must be BIDS anatomical") as raised:
        resolve_contrasts("auto", tmp_path / "model.pt")
    assert "pass --contrasts" in str(raised.value)
    assert set(as_contrasts(list(ANAT_CONTRASTS))) == set(ANAT_CONTRASTS)


# --- inference inputs ---------------------------------------------------------------------------------------------


@pytest.fixture
def t1w_dataset(tmp_path) -> Path:
    """A BIDS dataset of T1w scans (one with a session), with a defacing mask and a brain mask beside them."""
    root = tmp_path / "ds"
    write_image(root / "sub-001" / "anat" / "sub-001_T1w.nii.gz")
    write_image(root / "sub-002" / "ses-1" / "anat" / "sub-002_ses-1_T1w.nii.gz", seed=1)
    write_nifti(root / "sub-001" / "anat" / "sub-001_defacemask.nii.gz", np.ones(SHAPE))
    write_nifti(root / "sub-001" / "anat" / "sub-001_desc-brain_mask.nii.gz", np.ones(SHAPE))
    return root


def test_bids_t1w_images_are_found_when_the_model_lists_t1w(t1w_dataset, tmp_path):
    items = inference_datalist(t1w_dataset, tmp_path / "out", contrasts=["T2w", "T1w"])
    assert [(Path(i["mask"]).relative_to(tmp_path / "out").as_posix(), i["row"]["contrast"]) for i in items] == [
        ("sub-001/anat/sub-001_desc-pvs_mask.nii.gz", "T1w"),
        ("sub-002/ses-1/anat/sub-002_ses-1_desc-pvs_mask.nii.gz", "T1w"),
    ]
    assert list(items[0]["row"]) == list(ID_COLUMNS)


def test_bids_t1w_images_are_refused_by_a_t2w_model_naming_the_fix(t1w_dataset, tmp_path):
    model = tmp_path / "models" / "model.pt"
    with pytest.raises(ValueError) as refused:
        inference_datalist(t1w_dataset, tmp_path / "out", contrasts=["T2w"], model_file=model)
    message = str(refused.value)
    assert message.startswith(f"input_dir {t1w_dataset} holds no T2w image (sub-*/[ses-*/]anat/*_T2w.nii[.gz])")
    assert (
        f"only images of other contrasts (2 T1w) such as {t1w_dataset / 'sub-001/anat/sub-001_T1w.nii.gz'}" in message
    )
    assert f"the model ({model.with_suffix('.json')}) was trained for T2w only" in message
    assert message.endswith("pass --allow_any_contrast true to segment them anyway.")
    assert "\n" not in message


def test_allow_any_contrast_finds_every_anatomical_image_but_no_mask(t1w_dataset, tmp_path):
    write_image(t1w_dataset / "sub-003" / "anat" / "sub-003_FLAIR.nii.gz")
    items = inference_datalist(t1w_dataset, tmp_path / "out", allow_any_contrast="true")
    assert [(Path(i["image"]).name, i["case"], i["row"]["contrast"]) for i in items] == [
        ("sub-001_T1w.nii.gz", "sub-001", "T1w"),
        ("sub-002_ses-1_T1w.nii.gz", "sub-002_ses-1", "T1w"),
        ("sub-003_FLAIR.nii.gz", "sub-003", "FLAIR"),
    ]


def test_a_mixed_dataset_gives_the_accepted_contrast_and_says_what_it_leaves(t1w_dataset, tmp_path, caplog):
    write_image(t1w_dataset / "sub-003" / "anat" / "sub-003_T2w.nii.gz")
    with caplog.at_level(logging.WARNING, logger="pvs_bundle.inference_inputs"):
        items = inference_datalist(t1w_dataset, tmp_path / "out")
    assert [Path(i["image"]).name for i in items] == ["sub-003_T2w.nii.gz"]
    assert f"Not segmenting 2 image(s) of {t1w_dataset} of other contrasts (2 T1w)" in caplog.text
    assert "--allow_any_contrast true segments them" in caplog.text


def test_two_contrasts_of_one_scan_are_refused_naming_both_and_the_fix(t1w_dataset, tmp_path):
    flair = write_image(t1w_dataset / "sub-001" / "anat" / "sub-001_FLAIR.nii.gz")
    with pytest.raises(ValueError, match="must have different names") as refused:
        inference_datalist(t1w_dataset, tmp_path / "out", contrasts=ALL_THREE)
    assert f"inputs {flair} and {t1w_dataset / 'sub-001/anat/sub-001_T1w.nii.gz'}" in str(refused.value)
    assert "--contrasts FLAIR, then --contrasts T1w" in str(refused.value)


def test_a_flair_file_is_refused_by_a_t2w_model_and_accepted_by_one_that_lists_flair(tmp_path):
    flair = write_image(tmp_path / "in" / "sub-005_FLAIR.nii.gz")
    model = tmp_path / "models" / "model.pt"
    with pytest.raises(ValueError, match="1 of 1 input") as refused:
        inference_datalist("", tmp_path / "out", input_files=[str(flair)], model_file=model)
    stored = model.with_suffix(".json")
    assert (
        f"{flair}: is a FLAIR image by its name, but the model ({stored}) was trained for T2w only: pass "
        "--allow_any_contrast true to segment it anyway."
    ) in str(refused.value)
    for accepted in (
        {"contrasts": ["T2w", "FLAIR"]},
        {"allow_any_contrast": True},
    ):
        (item,) = inference_datalist("", tmp_path / "out", input_files=[str(flair)], model_file=model, **accepted)
        assert Path(item["mask"]).name == "sub-005_desc-pvs_mask.nii.gz"
        assert item["row"] == {
            "subject": "sub-005",
            "session": "",
            "acq": "",
            "run": "",
            "contrast": "FLAIR",
            "image": "sub-005_FLAIR.nii.gz",
        }


def test_a_name_without_a_contrast_is_segmented_as_the_models_contrasts(tmp_path, caplog):
    plain = write_image(tmp_path / "in" / "case7.nii")
    with caplog.at_level(logging.WARNING, logger="pvs_bundle.inference_inputs"):
        (item,) = inference_datalist(tmp_path / "in", tmp_path / "out", contrasts=ALL_THREE)
    assert item["image"] == str(plain) and item["case"] == "case7" and item["row"]["contrast"] == ""
    assert "1 input name(s) do not state a contrast (case7.nii): segmenting them as T2w, T1w or FLAIR images" in (
        caplog.text
    )


# --- the evaluation datalist --------------------------------------------------------------------------------------


def make_t1w_labelled(root: Path, subjects=("001", "002", "003", "004")) -> Path:
    for i, sub in enumerate(subjects):
        image, mask = synthetic_case(SHAPE, seed=i)
        write_nifti(root / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz", image)
        write_nifti(root / "derivatives" / "mask" / f"sub-{sub}" / f"sub-{sub}_desc-mask_PVS.nii.gz", mask)
    return root


def test_evaluation_datalist_pairs_t1w_images_with_masks(tmp_path):
    root = make_t1w_labelled(tmp_path / "ds")
    cases, report = find_pairs(root, contrasts=["T1w"])
    assert (cases[0]["image"], cases[0]["label"]) == (
        "sub-001/anat/sub-001_T1w.nii.gz",
        "derivatives/mask/sub-001/sub-001_desc-mask_PVS.nii.gz",
    )
    assert len(cases) == 4 and report.labels_without_image == []
    with pytest.raises(FileNotFoundError, match=r"holds no T2w image: looked for T2w images sub-\*/\[ses-\*/\]anat"):
        load_or_create_datalist(root, tmp_path / "out" / "datalist.json")  # training's default: T2w
    write_image(root / "sub-001" / "anat" / "sub-001_FLAIR.nii.gz")
    with pytest.raises(ValueError, match=r"two files for the same case sub-001: .*pass --contrasts with one of"):
        find_pairs(root, contrasts=["T1w", "FLAIR"])


def test_evaluate_config_passes_the_models_contrasts_to_the_datalist(tmp_path):
    root = make_t1w_labelled(tmp_path / "ds")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.json").write_text(json.dumps({"contrasts": ["T1w"]}))
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")])
    parser.update(
        {
            "bundle_root": str(BUNDLE_ROOT),
            "dataset_dir": str(root),
            "output_dir": str(tmp_path / "eval"),
            "ckpt_dir": str(tmp_path / "models"),
            "split_fractions": [0.5, 0.25, 0.25],
            "datalist#must_exist": False,
        }
    )
    datalist = parser.get_parsed_content("datalist")
    assert sorted(Path(c["image"]).name for k in ("training", "validation", "test") for c in datalist[k]) == [
        f"sub-00{i}_T1w.nii.gz" for i in range(1, 5)
    ]


# --- configs/pretrained.json --------------------------------------------------------------------------------------


def test_pretrained_overlay_points_at_the_shipped_model_and_sets_no_data_path():
    overlay = json.loads((CONFIGS / "pretrained.json").read_text())
    assert not {"dataset_dir", "input_dir", "input_files", "datalist_file"} & set(overlay)
    for base in (["inference.json"], ["train.json", "evaluate.json"]):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / name) for name in (*base, "pretrained.json")])
        parser["bundle_root"] = str(BUNDLE_ROOT)
        assert Path(parser.get_parsed_content("model_file")) == BUNDLE_ROOT / "models" / "model.pt"
        settings = parser.get_parsed_content("model_settings")
        assert (settings["encoder_name"], settings["norm"], parser.get_parsed_content("contrasts")) == (
            "efficientnet-b0",
            "group",
            "auto",
        )
        assert parser.get_parsed_content("encoder_weights") is None


# --- end to end: `python -m monai.bundle run inferring` ----------------------------------------------------------


@pytest.mark.slow
def test_pretrained_overlay_segments_t1w_and_flair_images_of_a_bids_dataset(tmp_path, model_dir):
    dataset = tmp_path / "ds"
    t1w = write_image(dataset / "sub-001" / "anat" / "sub-001_T1w.nii.gz")
    flair = write_image(dataset / "sub-002" / "ses-1" / "anat" / "sub-002_ses-1_FLAIR.nii.gz", seed=1)
    out = tmp_path / "out"
    proc = infer_pretrained("--input_dir", str(dataset), "--output_dir", str(out), "--ckpt_dir", str(model_dir))
    assert proc.returncode == 0, output(proc)
    stored = model_dir / "model.json"
    assert f"Image contrasts T2w, T1w, FLAIR (contrasts auto: the model's, stored in {stored})" in proc.stdout
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert written == [
        "sub-001/anat/sub-001_desc-pvs_mask.nii.gz",
        "sub-002/ses-1/anat/sub-002_ses-1_desc-pvs_mask.nii.gz",
    ]
    for image, mask in zip((t1w, flair), written, strict=True):
        assert nib.load(out / mask).shape == nib.load(image).shape
    rows = json.loads((out / "pvs_burden.json").read_text())
    assert [(r["subject"], r["session"], r["contrast"], r["image"]) for r in rows] == [
        ("sub-001", "", "T1w", "sub-001_T1w.nii.gz"),
        ("sub-002", "ses-1", "FLAIR", "sub-002_ses-1_FLAIR.nii.gz"),
    ]
    header = (out / "pvs_burden.csv").read_text().splitlines()[0].split(",")
    assert header[: len(ID_COLUMNS)] == list(ID_COLUMNS) and "contrast" in header


@pytest.mark.slow
def test_a_t2w_model_refuses_a_t1w_dataset_in_one_line(tmp_path, model_dir):
    model = copy_model(model_dir, tmp_path / "t2w_model", contrasts=["T2w"])
    dataset = tmp_path / "ds"
    t1w = write_image(dataset / "sub-001" / "anat" / "sub-001_T1w.nii.gz")
    proc = infer_pretrained(
        "--input_dir", str(dataset), "--output_dir", str(tmp_path / "out"), "--ckpt_dir", str(model.parent)
    )
    assert proc.returncode != 0
    line = last_line(proc)
    assert line.startswith(PREFIX) and str(t1w) in line and "--allow_any_contrast true" in line, proc.stderr
    assert f"the model ({model.with_suffix('.json')}) was trained for T2w only" in line
    assert not (tmp_path / "out").exists()


# --- the model file's integrity -----------------------------------------------------------------------------------


def test_model_file_check_refuses_a_damaged_file_and_another_digest(tmp_path, model_dir):
    intact = copy_model(model_dir, tmp_path / "intact")  # no digest recorded: loaded to check
    assert check_model_file(intact) == intact
    truncated = copy_model(model_dir, tmp_path / "truncated")
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(BundleError, match="cannot be read as a PyTorch state dict") as damaged:
        check_model_file(truncated)
    assert str(damaged.value).startswith(str(truncated)) and "\n" not in str(damaged.value)
    assert f"fetch it again (git checkout -- {truncated}, or the URL in large_files.yml) or retrain" in str(
        damaged.value
    )
    tensor = copy_model(model_dir, tmp_path / "tensor")
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(BundleError, match=r"must hold a PyTorch state dict .*, not a Tensor"):
        check_model_file(tensor)
    recorded = copy_model(model_dir, tmp_path / "recorded", sha256=sha256_file(model_dir / "model.pt"))
    assert check_model_file(recorded) == recorded
    other = copy_model(model_dir, tmp_path / "other", sha256="0" * 64)
    with pytest.raises(BundleError, match="does not match the SHA-256 recorded in") as mismatch:
        check_model_file(other)
    assert f"it is {sha256_file(other)}, not '{'0' * 64}'" in str(mismatch.value)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "another_digest"])
def test_inference_stops_on_a_damaged_model_in_one_line(tmp_path, model_dir, damage):
    recorded = {} if damage == "truncated" else {"sha256": "f" * 64}
    model = copy_model(model_dir, tmp_path / "model", contrasts=ALL_THREE, **recorded)
    if damage == "truncated":
        model.write_bytes(model.read_bytes()[:20000])
    image = write_image(tmp_path / "in" / "sub-001_T1w.nii.gz")
    args = ["--input_files", f"['{image}']", "--output_dir", str(tmp_path / "out"), "--ckpt_dir", str(model.parent)]
    proc = infer_pretrained(*args)
    assert proc.returncode != 0
    expected = "cannot be read as a PyTorch state dict" if damage == "truncated" else "does not match the SHA-256"
    assert last_line(proc).startswith(f"{PREFIX}{model} {expected}"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
