"""The evaluation workflow: native-space scoring, `run evaluating`, `run` and `run baseline` end to end."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import BUNDLE_ROOT, CONFIGS, REPO_ROOT, TINY_TRAINING, make_bids_dataset, run_bundle, synthetic_case
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from PIL import Image

from scripts.data.datalist import load_or_create_datalist
from scripts.evaluation.case_metrics import CASE_METRICS
from scripts.evaluation.frangi import AGREEMENT_FIGURE_FILE as FRANGI_AGREEMENT_FIGURE_FILE
from scripts.evaluation.frangi import PER_CASE_JSON as FRANGI_PER_CASE_JSON
from scripts.evaluation.frangi import SUMMARY_FILE as FRANGI_SUMMARY_FILE
from scripts.evaluation.native_labels import NativeLabeld
from scripts.evaluation.native_space import (
    AGREEMENT_FIGURE_FILE,
    FIGURE_FILE,
    PER_CASE_CSV,
    PER_CASE_JSON,
    SUMMARY_FILE,
    NativeSpaceMetricsHandler,
    prediction_name,
)
from scripts.evaluation.voxel_errors import VOXEL_ERROR_METRICS
from scripts.io import sha256_file
from scripts.model.model_file import check_model_file
from scripts.nifti import ras_spacing, to_ras

EVAL_CONFIGS = "['configs/train.json','configs/evaluate.json']"
# A non-RAS grid (axis 0 runs anterior -> posterior, axis 1 right -> left), anisotropic and non-cubic: the
# training pixdim of 0.8 mm differs from it on two axes.
NATIVE_SHAPE = (24, 40, 16)
NATIVE_AFFINE = np.array([[0.0, -0.8, 0.0, 20.0], [-1.6, 0.0, 0.0, 30.0], [0.0, 0.0, 2.4, -10.0], [0.0, 0.0, 0.0, 1.0]])


class BrightTubes(torch.nn.Module):
    """A voxel-wise 'network': a large positive logit where the normalised image is PVS-bright, negative elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(40.0))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.gain * (image - 0.75)


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.int16), NATIVE_AFFINE), str(path))
    return path


def _paths(dataset, output_dir, ckpt_dir):
    return ["--dataset_dir", str(dataset), "--output_dir", str(output_dir), "--ckpt_dir", str(ckpt_dir)]


def _native_space_parser(tmp_path, label):
    """train.json + evaluate.json parsed in-process, on one case in NATIVE_AFFINE's grid, with BrightTubes."""
    image, _ = synthetic_case(NATIVE_SHAPE, seed=3)
    image[label > 0] = 1000.0
    _write(tmp_path / "ds" / "sub-007" / "anat" / "sub-007_T2w.nii.gz", image)
    _write(tmp_path / "ds" / "derivatives" / "mask" / "sub-007" / "sub-007_desc-mask_PVS.nii.gz", label)
    case = {
        "image": "sub-007/anat/sub-007_T2w.nii.gz",
        "label": "derivatives/mask/sub-007/sub-007_desc-mask_PVS.nii.gz",
        "id": "sub-007",
        "subject": "sub-007",
    }
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "datalist.json").write_text(json.dumps({"training": [], "validation": [], "test": [case]}))
    (tmp_path / "models").mkdir()
    torch.save(BrightTubes().state_dict(), tmp_path / "models" / "model.pt")
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")])
    parser.update(
        {
            "bundle_root": str(BUNDLE_ROOT),
            "dataset_dir": str(tmp_path / "ds"),
            "output_dir": str(tmp_path / "eval"),
            "ckpt_dir": str(tmp_path / "models"),
            "device": torch.device("cpu"),
            "num_workers": 0,
            "patch_size": [32, 32, 32],
            "intensity": {"mode": "range", "a_min": 0, "a_max": 1000},
            "network": BrightTubes(),
            "save_predictions": True,
        }
    )
    return parser


def test_a_prediction_equal_to_the_label_scores_dice_1_in_the_label_native_grid(tmp_path):
    _, label = synthetic_case(NATIVE_SHAPE, seed=3)
    assert label.sum() > 20
    parser = _native_space_parser(tmp_path, label)
    preprocessed = parser.get_parsed_content("validate#preprocessing")(parser.get_parsed_content("datalist")["test"][0])
    assert preprocessed["image"].shape[1:] != NATIVE_SHAPE  # the network sees another grid than the label's
    assert preprocessed["label"] == preprocessed["label_file"]  # the label is not loaded there: read once, natively

    parser.get_parsed_content("evaluating")

    row = json.loads((tmp_path / "eval" / PER_CASE_JSON).read_text())[0]
    assert row["subject"] == "sub-007"
    assert row["dice"] == row["iou"] == row["det_f1"] == 1.0
    assert row["hd95_mm"] == row["abs_volume_diff_mm3"] == row["count_abs_diff"] == 0.0
    summary = json.loads((tmp_path / "eval" / SUMMARY_FILE).read_text())
    assert summary["evaluator_metrics"]["test_dice"] == 1.0  # the key metric is scored in the native grid too
    saved = nib.load(tmp_path / "eval" / "predictions" / "sub-007_desc-pvs_mask.nii.gz")
    np.testing.assert_allclose(saved.affine, NATIVE_AFFINE, atol=1e-5)
    np.testing.assert_array_equal(np.asanyarray(saved.dataobj), label)


def test_missing_model_is_a_clear_error_before_any_case_is_read(tmp_path):
    _, label = synthetic_case(NATIVE_SHAPE, seed=3)
    parser = _native_space_parser(tmp_path, label)
    (tmp_path / "models" / "model.pt").unlink()
    with pytest.raises(RuntimeError, match="check_model_file") as raised:  # MONAI wraps what a component raises
        parser.get_parsed_content("evaluating")
    message = f"model file {tmp_path / 'models' / 'model.pt'} does not exist: run training first"
    assert isinstance(raised.value.__cause__, FileNotFoundError) and message in str(raised.value.__cause__)
    assert not (tmp_path / "eval" / SUMMARY_FILE).exists()


def test_native_label_replaces_the_preprocessed_label_and_rejects_a_plain_tensor(tmp_path):
    label = np.zeros(NATIVE_SHAPE, dtype=np.int16)
    label[3:5, 10:20, 4] = 1
    path = _write(tmp_path / "sub-001_desc-mask_PVS.nii.gz", label)
    preprocessed = MetaTensor(torch.zeros(1, 5, 6, 7), meta={"filename_or_obj": str(path)})
    native = NativeLabeld("label")({"label": preprocessed})["label"]
    assert native.shape == (1, *NATIVE_SHAPE) and int(native.sum()) == 20
    assert native.meta["spacing_mm"] == pytest.approx((1.6, 0.8, 2.4))
    with pytest.raises(ValueError, match="must be a MetaTensor loaded from a file"):
        NativeLabeld("label")({"label": torch.zeros(1, 5, 6, 7)})
    from_path = NativeLabeld("label", path_key="label_file")({"label": None, "label_file": str(path)})["label"]
    assert torch.equal(from_path, native)


def test_handler_rejects_a_prediction_on_another_grid(tmp_path):
    label = MetaTensor(torch.zeros(1, *NATIVE_SHAPE), affine=torch.as_tensor(NATIVE_AFFINE))
    label.meta.update({"filename_or_obj": "sub-001_desc-mask_PVS.nii.gz", "spacing_mm": (1.6, 0.8, 2.4)})
    output = {"pred": torch.zeros(1, 24, 40, 15), "label": label, "image": label, "id": "sub-001"}
    evaluator = Engine(lambda engine, batch: [output])
    NativeSpaceMetricsHandler(tmp_path).attach(evaluator)
    with pytest.raises(ValueError, match=r"must match the label sub-001_desc-mask_PVS\.nii\.gz"):
        evaluator.run([[{}]], max_epochs=1)


def test_ras_reordering_and_bids_prediction_names():
    volume = np.arange(np.prod(NATIVE_SHAPE)).reshape(NATIVE_SHAPE)
    ras = to_ras(volume, NATIVE_AFFINE)
    assert ras.shape == (40, 24, 16)
    assert ras[0, 0, 0] == volume[-1, -1, 0]  # left, posterior, inferior corner
    assert ras_spacing((1.6, 0.8, 2.4), NATIVE_AFFINE) == (0.8, 1.6, 2.4)
    names = prediction_name({"filename_or_obj": "/d/sub-001/ses-2/anat/sub-001_ses-2_T2w.nii.gz"}, None)
    assert names == {"subject": "sub-001_ses-2", "idx": None}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_model_file("/nonexistent/model.pt")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dataset and a model trained on it for one epoch by `run training` (shared, used read-only)."""
    root = tmp_path_factory.mktemp("trained")
    dataset = make_bids_dataset(root / "ds", subjects=("001", "002", "003", "004", "005", "006"), empty=("006",))
    args = ["run", "training", "--config_file", "configs/train.json", *_paths(dataset, root / "eval", root / "models")]
    proc = run_bundle([*args, *TINY_TRAINING, "--max_epochs", "1"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root


def _copy_training_outputs(trained, tmp_path):
    output_dir = tmp_path / "eval"
    output_dir.mkdir()
    for name in ("datalist.json", "training_history.json"):
        shutil.copy(trained / "eval" / name, output_dir / name)
    return output_dir


def test_evaluating_writes_metrics_tables_figure_and_predictions_of_the_test_split(trained, tmp_path):
    output_dir = _copy_training_outputs(trained, tmp_path)
    history = (output_dir / "training_history.json").read_bytes()
    args = ["run", "evaluating", "--config_file", EVAL_CONFIGS, *_paths(trained / "ds", output_dir, trained / "models")]
    proc = run_bundle([*args, *TINY_TRAINING, "--save_predictions", "true"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    test_ids = [case["id"] for case in json.loads((output_dir / "datalist.json").read_text())["test"]]
    rows = json.loads((output_dir / PER_CASE_JSON).read_text())
    assert [row["subject"] for row in rows] == test_ids
    csv_lines = (output_dir / PER_CASE_CSV).read_text().splitlines()
    assert csv_lines[0] == ",".join(["subject", *CASE_METRICS])
    assert [line.split(",")[0] for line in csv_lines[1:]] == test_ids
    summary = json.loads((output_dir / SUMMARY_FILE).read_text())
    assert set(summary["metrics"]) == set(CASE_METRICS)
    for stats in summary["metrics"].values():
        assert {"mean", "std", "median"} <= set(stats)
    assert summary["n_cases"] == len(test_ids)
    model_file = (trained / "models" / "model.pt").resolve()
    assert summary["model_file"] == str(model_file) and summary["model_sha256"] == sha256_file(model_file)
    assert summary["pixdim"] == [0.8, 0.8, 0.8] and summary["sw_overlap"] == 0.5
    assert summary["training_history_file"] == str(output_dir / "training_history.json")
    assert summary["evaluator_metrics"]["test_dice"] == pytest.approx(summary["metrics"]["dice"]["mean"], abs=1e-4)
    assert not any(name.startswith("val_") for name in summary["evaluator_metrics"])
    assert summary["agreement"]["count"]["n"] == len(test_ids) and "ICC(A,1)" in summary["agreement"]["icc_form"]
    with_pvs = [row for row in rows if row["ref_volume_mm3"] > 0]
    assert summary["with_pvs"]["n_cases"] == len(with_pvs) == summary["with_pvs"]["agreement"]["count"]["n"]
    assert summary["with_pvs"]["metrics"]["dice"]["mean"] == pytest.approx(
        sum(row["dice"] for row in with_pvs) / len(with_pvs), abs=1e-4
    )
    assert summary["pvs_free"]["n_cases"] == len(rows) - len(with_pvs)
    assert f"over the {len(with_pvs)} with reference PVS" in proc.stdout + proc.stderr
    lost = [summary["with_pvs"]["metrics"][name]["mean"] for name in VOXEL_ERROR_METRICS]
    assert sum(lost) == pytest.approx(1.0 - summary["with_pvs"]["metrics"]["dice"]["mean"], abs=1e-3)
    logged = proc.stdout + proc.stderr
    assert f"Dice lost over the cases with reference PVS: {lost[0]:.4f} to PVS drawn too wide" in logged
    for row in rows:
        assert isinstance(row["pred_count"], int) and isinstance(row["det_tp"], int)
        assert row["volume_diff_mm3"] == pytest.approx(row["pred_volume_mm3"] - row["ref_volume_mm3"], abs=0.2)
    with Image.open(output_dir / AGREEMENT_FIGURE_FILE) as figure:
        assert figure.format == "PNG" and tuple(round(d) for d in figure.info["dpi"]) == (300, 300)
    with Image.open(output_dir / FIGURE_FILE) as figure:
        assert figure.format == "JPEG"
        assert tuple(round(d) for d in figure.info["dpi"]) == (300, 300)
    assert sorted(p.name for p in (output_dir / "predictions").iterdir()) == [
        f"{case}_desc-pvs_mask.nii.gz" for case in test_ids
    ]
    assert (output_dir / "training_history.json").read_bytes() == history
    assert not (output_dir / "training_history.png").exists()
    census = json.loads((output_dir / "test_pvs_census.json").read_text())
    for case in test_ids:  # one row per predicted PVS, numbered from 1 in each case
        ids = [row["pvs_id"] for row in census if row["case"] == case]
        assert ids == list(range(1, len(ids) + 1))
    assert {row["case"] for row in census} <= set(test_ids)
    assert all(row["region"] == "unknown" and row["volume_mm3"] > 0 for row in census)


def test_default_run_id_evaluates_from_the_repository_root(trained, tmp_path):
    output_dir = _copy_training_outputs(trained, tmp_path)
    configs = "['pvs_bundle/configs/train.json','pvs_bundle/configs/evaluate.json']"
    args = ["run", "--config_file", configs, "--bundle_root", "pvs_bundle"]
    levers = ["--tta", "mirror", "--tta_axes", "[2]", "--min_pvs_voxels", "5"]
    paths = _paths(trained / "ds", output_dir, trained / "models")
    proc = run_bundle([*args, *paths, *TINY_TRAINING, *levers], cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (output_dir / SUMMARY_FILE).is_file() and (output_dir / FIGURE_FILE).is_file()
    assert not (output_dir / "predictions").exists()  # save_predictions defaults to false
    summary = json.loads((output_dir / SUMMARY_FILE).read_text())
    stored = json.loads((trained / "models" / "model.json").read_text()).get("threshold", 0.5)
    assert (summary["threshold"], summary["tta"], summary["tta_axes"], summary["min_pvs_voxels"]) == (
        stored,
        "mirror",
        [2],
        5,
    )
    census = json.loads((output_dir / "test_pvs_census.json").read_text())
    assert all(row["voxels"] >= 5 for row in census)  # the census counts the cleaned mask


def test_baseline_chooses_its_threshold_on_training_and_scores_the_test_split(bids_dataset, tmp_path):
    output_dir = tmp_path / "eval"
    datalist = load_or_create_datalist(bids_dataset, output_dir / "datalist.json")
    args = ["run", "baseline", "--config_file", EVAL_CONFIGS, *_paths(bids_dataset, output_dir, tmp_path / "absent")]
    proc = run_bundle([*args, "--baseline_max_train_cases", "2"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((output_dir / FRANGI_SUMMARY_FILE).read_text())
    assert summary["method"] == "frangi" and summary["n_train_cases"] == 2
    assert summary["n_test_cases"] == len(datalist["test"])
    assert set(summary["metrics"]) == set(CASE_METRICS)
    rows = json.loads((output_dir / FRANGI_PER_CASE_JSON).read_text())
    assert [row["subject"] for row in rows] == [case["subject"] for case in datalist["test"]]
    assert set(summary["agreement"]) == {"icc_form", "count", "volume_mm3"}
    assert (output_dir / FRANGI_AGREEMENT_FIGURE_FILE).is_file()


def test_missing_datalist_is_a_clear_error_and_no_new_split_is_built(tmp_path):
    _, label = synthetic_case(NATIVE_SHAPE, seed=3)
    parser = _native_space_parser(tmp_path, label)
    (tmp_path / "eval" / "datalist.json").unlink()
    with pytest.raises(RuntimeError) as raised:  # MONAI wraps what a component raises
        parser.get_parsed_content("evaluating")
    message = f"datalist {tmp_path / 'eval' / 'datalist.json'} does not exist: run training first"
    assert isinstance(raised.value.__cause__, FileNotFoundError) and message in str(raised.value.__cause__)
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == []
