"""Cohort runs: inference and evaluation on two processes (torchrun, gloo), resuming killed inference, BIDS outputs.

Every run here uses one thread per process, so one- and two-process runs compute the same floating-point results.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import BUNDLE_ROOT, CONFIGS, TINY_TRAINING, bundle_env, make_bids_dataset, synthetic_case, write_nifti
from inference_helpers import SHAPE, TINY_INFERENCE, load, ras_affine, save_tiny_model
from monai.bundle import ConfigParser
from monai.transforms import Compose

from scripts.data.datalist import create_datalist
from scripts.evaluation.native_space import PER_CASE_JSON, SUMMARY_FILE
from scripts.inference.derivatives import BURDEN_KEY, DESCRIPTION_FILE, Provenance, sidecar_path
from scripts.inference.inference_inputs import MASK_SUFFIX

ENV = {**bundle_env(), "OMP_NUM_THREADS": "1"}
# Entities of the inputs, kept in their outputs' names: sub, ses, acq, run.
NAMES = [
    ("101", "1", "x", "1"),
    ("101", "1", "x", "2"),
    ("101", "2", None, None),
    ("102", "1", "y", None),
    ("103", None, None, "1"),
    ("104", None, None, None),
    ("105", "1", None, "3"),
]
# BIDS derivatives: entities in the specification's order (sub, ses, task, acq, ce, rec, run, space, desc), suffix.
DERIVATIVE_NAME = re.compile(
    r"^sub-[a-zA-Z0-9]+(_ses-[a-zA-Z0-9]+)?(_task-[a-zA-Z0-9]+)?(_acq-[a-zA-Z0-9]+)?(_ce-[a-zA-Z0-9]+)?"
    r"(_rec-[a-zA-Z0-9]+)?(_run-[0-9]+)?(_space-[a-zA-Z0-9]+)?_desc-[a-zA-Z0-9]+_(mask|probseg)\.(nii\.gz|json)$"
)


def _bids_name(sub, ses, acq, run) -> str:
    parts = [f"sub-{sub}", *([f"ses-{ses}"] if ses else []), *([f"acq-{acq}"] if acq else [])]
    return "_".join([*parts, *([f"run-{run}"] if run else []), "T2w.nii.gz"])


def _bundle(args: list[str], cwd: Path = BUNDLE_ROOT, processes: int = 1) -> subprocess.CompletedProcess:
    """Run the bundle in one process, or in ``processes`` under torchrun; fail with its output if it fails."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    command = [sys.executable, *launcher, "-m", "monai.bundle", *args]
    proc = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _infer_args(dataset: Path, out: Path, model: Path, *extra: str, processes: int = 1) -> list[str]:
    configs = "['configs/inference.json','configs/multi_gpu_inference.json']" if processes > 1 else None
    config = configs or "configs/inference.json"
    paths = ["--input_dir", str(dataset), "--output_dir", str(out), "--model_file", str(model)]
    return ["run", "inferring", "--config_file", config, *TINY_INFERENCE, *paths, *extra]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A BIDS dataset with sessions, acquisitions and runs, a tiny model, and its one-process inference."""
    root = tmp_path_factory.mktemp("cohort")
    dataset = root / "ds"
    for i, entities in enumerate(NAMES):
        sub, ses = entities[:2]
        folder = dataset / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "anat"
        write_nifti(folder / _bids_name(*entities), synthetic_case(SHAPE, seed=i)[0], ras_affine())
    (dataset / DESCRIPTION_FILE).write_text(
        json.dumps({"Name": "t", "BIDSVersion": "1.8.0", "DatasetDOI": "doi:10.1/x"})
    )
    model = save_tiny_model(root / "model.pt", next(dataset.glob("sub-101/ses-1/anat/*run-1*")))
    _bundle(_infer_args(dataset, root / "one", model, "--save_probabilities", "true"))
    return dataset, model, root / "one"


def _masks(out: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(out)): load(p) for p in sorted(out.rglob(f"*{MASK_SUFFIX}"))}


def test_output_folder_is_a_bids_derivatives_dataset(cohort):
    dataset, model, out = cohort
    description = json.loads((out / DESCRIPTION_FILE).read_text())
    metadata = json.loads((BUNDLE_ROOT / "configs" / "metadata.json").read_text())
    assert description["DatasetType"] == "derivative" and description["BIDSVersion"] and description["Name"]
    assert description["GeneratedBy"] == [{"Name": "pvs_bundle", "Version": metadata["version"]}]
    assert description["SourceDatasets"] == [{"DOI": "10.1/x", "URL": "https://doi.org/10.1/x"}]
    assert description["DatasetLinks"] == {"raw": dataset.resolve().as_uri()}
    written = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    outputs = [p for p in written if p.parts[0].startswith("sub-")]
    assert len(outputs) == 3 * len(NAMES)  # mask, its sidecar, probability map
    for path in outputs:
        assert DERIVATIVE_NAME.match(path.name), path
    for entities in NAMES:
        source = next(dataset.rglob(_bids_name(*entities)))
        relative = source.relative_to(dataset)
        mask = out / relative.parent / _bids_name(*entities).replace("_T2w.nii.gz", MASK_SUFFIX)
        assert mask.is_file() and (out / relative.parent / mask.name.replace("mask", "probseg")).is_file()
        sidecar = json.loads(sidecar_path(mask).read_text())
        assert sidecar["Sources"] == [f"bids:raw:{relative.as_posix()}"]
        assert sidecar["ModelFile"] == str(model) and sidecar["Threshold"] == 0.5
        assert sidecar["ModelSHA256"] == Provenance(out, dataset, model_file=model).model_sha256
        assert sidecar["Settings"]["patch_size"] == [32, 32, 32] and sidecar["Settings"]["sw_overlap"] == 0.5
        assert sidecar["BundleVersion"] == metadata["version"] and sidecar["Type"] == "ROI"
        assert sidecar[BURDEN_KEY]["image"] == source.name and sidecar[BURDEN_KEY]["subject"] == relative.parts[0]


def test_two_processes_write_the_same_masks_and_table_as_one(cohort, tmp_path):
    dataset, model, one = cohort
    out = tmp_path / "two"
    proc = _bundle(_infer_args(dataset, out, model, "--save_probabilities", "true", processes=2), processes=2)
    assert "Rank 1 of 2 handles 3 of 7 input(s)" in proc.stdout + proc.stderr
    reference, masks = _masks(one), _masks(out)
    assert list(masks) == list(reference)
    for name, mask in masks.items():
        np.testing.assert_array_equal(mask, reference[name], err_msg=name)
    for table in ("pvs_burden.csv", "pvs_burden.json"):
        assert (out / table).read_bytes() == (one / table).read_bytes()
    assert json.loads((out / DESCRIPTION_FILE).read_text()) == json.loads((one / DESCRIPTION_FILE).read_text())


def test_refusal_to_overwrite_says_how_to_resume(cohort):
    dataset, model, one = cohort
    command = [sys.executable, "-m", "monai.bundle", *_infer_args(dataset, one, model)]
    proc = subprocess.run(command, cwd=BUNDLE_ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode != 0
    assert "--skip_existing true" in proc.stderr and "--overwrite true" in proc.stderr


def _kill_once_written(args: list[str], folder: Path, pattern: str) -> None:
    """Run the bundle and SIGKILL it as soon as a file matching ``pattern`` appears under ``folder``."""
    command = [sys.executable, "-m", "monai.bundle", *args]
    run = subprocess.Popen(command, cwd=BUNDLE_ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not list(folder.rglob(pattern)) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()


def test_a_killed_run_resumes_with_skip_existing(cohort, tmp_path):
    dataset, model, one = cohort
    out = tmp_path / "resumed"
    _kill_once_written(_infer_args(dataset, out, model), out, "*_mask.json")
    done = sorted(out.rglob("*_mask.json"))
    assert 1 <= len(done) < len(NAMES) and not (out / "pvs_burden.json").exists()
    damaged = next(p for p in sorted(out.rglob(f"*{MASK_SUFFIX}")) if sidecar_path(p) in done)
    damaged.write_bytes(damaged.read_bytes()[:100])  # a partial file: redone, not kept
    proc = _bundle(_infer_args(dataset, out, model, "--skip_existing", "true"))
    assert f"Skipping {len(done) - 1} of {len(NAMES)} image(s)" in proc.stdout + proc.stderr
    reference, masks = _masks(one), _masks(out)
    assert list(masks) == list(reference)
    for name, mask in masks.items():
        np.testing.assert_array_equal(mask, reference[name], err_msg=name)
    assert json.loads((out / "pvs_burden.json").read_text()) == json.loads((one / "pvs_burden.json").read_text())
    assert (out / "pvs_burden.csv").read_bytes() == (one / "pvs_burden.csv").read_bytes()
    # Everything complete: a second resume segments nothing and writes the same table.
    proc = _bundle(_infer_args(dataset, out, model, "--skip_existing", "true"))
    assert f"Skipping {len(NAMES)} of {len(NAMES)} image(s)" in proc.stdout + proc.stderr
    assert (out / "pvs_burden.csv").read_bytes() == (one / "pvs_burden.csv").read_bytes()


def test_outputs_of_another_model_or_on_another_grid_are_not_complete(cohort, tmp_path):
    dataset, model, one = cohort
    image = next(dataset.rglob("*run-1_T2w.nii.gz"))
    mask = next(one.rglob(image.name.replace("_T2w.nii.gz", MASK_SUFFIX)))
    provenance = Provenance(one, dataset, model_file=model, threshold=0.5, settings=_settings(mask))
    assert provenance.completed_row(image, [mask]) == json.loads(sidecar_path(mask).read_text())[BURDEN_KEY]
    other = tmp_path / "other.pt"
    other.write_bytes(model.read_bytes() + b"\0")
    assert Provenance(one, dataset, model_file=other, settings=_settings(mask)).completed_row(image, [mask]) is None
    moved = tmp_path / mask.name
    nib.save(nib.Nifti1Image(load(mask), ras_affine(origin=(0.0, 0.0, 0.0))), str(moved))
    sidecar_path(moved).write_text(sidecar_path(mask).read_text())
    assert provenance.completed_row(image, [moved]) is None


def _settings(mask: Path) -> dict:
    return json.loads(sidecar_path(mask).read_text())["Settings"]


def test_two_process_evaluation_equals_one_process(tmp_path):
    dataset = make_bids_dataset(tmp_path / "ds", subjects=tuple(f"{i:03d}" for i in range(1, 9)))
    datalist, _ = create_datalist(dataset, fractions=(0.25, 0.25, 0.5))
    assert len(datalist["test"]) == 4
    model = save_tiny_model(tmp_path / "model.pt", dataset / datalist["test"][0]["image"])
    runs = {}
    for processes in (1, 2):
        root = tmp_path / f"p{processes}"
        (root / "eval").mkdir(parents=True)
        (root / "eval" / "datalist.json").write_text(json.dumps(datalist))
        overlay = ",'configs/multi_gpu_evaluate.json'" if processes > 1 else ""
        configs = f"['configs/train.json','configs/evaluate.json'{overlay}]"
        paths = ["--dataset_dir", str(dataset), "--output_dir", str(root / "eval"), "--model_file", str(model)]
        _bundle(["run", "evaluating", "--config_file", configs, *paths, *TINY_TRAINING], processes=processes)
        summary = json.loads((root / "eval" / SUMMARY_FILE).read_text())
        runs[processes] = (json.loads((root / "eval" / PER_CASE_JSON).read_text()), summary)
    (rows_1, summary_1), (rows_2, summary_2) = runs[1], runs[2]
    assert [row["subject"] for row in rows_2] == [case["subject"] for case in datalist["test"]]
    assert rows_2 == rows_1
    metrics_1, metrics_2 = summary_1.pop("evaluator_metrics"), summary_2.pop("evaluator_metrics")
    assert metrics_2 == pytest.approx(metrics_1)  # averaged across ranks: the same mean, summed in another order
    for summary in (summary_1, summary_2):
        summary.pop("datalist_file"), summary.pop("training_history_file")
    assert summary_2 == summary_1


def test_train_and_evaluate_configs_together_still_build_the_training_chain(tmp_path):
    """The Model Zoo's tests read ['configs/train.json','configs/evaluate.json'] for every workflow."""
    dataset = make_bids_dataset(tmp_path / "ds", subjects=("001", "002", "003", "004"), shape=SHAPE)
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")])
    parser.update({"bundle_root": str(BUNDLE_ROOT), "dataset_dir": str(dataset), "output_dir": str(tmp_path / "eval")})
    first = create_datalist(dataset)[0]["training"][0]
    case = {key: str(dataset / first[key]) for key in ("image", "label")}
    trained = Compose(parser.get_parsed_content("preprocessing_transforms"))(dict(case))
    assert isinstance(trained["label"], torch.Tensor) and trained["label"].shape == trained["image"].shape
    evaluated = parser.get_parsed_content("validate#preprocessing")(dict(case))
    assert evaluated["label"] == case["label"]  # evaluation reads the label natively, later


COHORT_TABLES = [f"{name}.{ext}" for name in ("pvs_burden", "pvs_census", "pvs_regions") for ext in ("csv", "json")]


def _shard(dataset: Path, out: Path, model: Path, index: int, *extra: str) -> list[str]:
    flags = ["--num_shards", "2", "--shard_index", str(index)] if index is not None else []
    return _infer_args(dataset, out, model, "--save_probabilities", "true", *flags, *extra)


def _merge(out: Path, *extra: str, ok: bool = True) -> subprocess.CompletedProcess:
    command = ["run", "merging", "--config_file", "configs/inference.json", "--output_dir", str(out), *extra]
    if ok:
        return _bundle(command)
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *command], cwd=BUNDLE_ROOT, env=ENV, capture_output=True, text=True
    )
    assert proc.returncode != 0, proc.stdout[-2000:]
    return proc


def test_job_array_shards_killed_resumed_and_merged_write_what_one_process_writes(cohort, tmp_path):
    dataset, model, one = cohort
    out = tmp_path / "array"
    cases = out / "shards" / "shard-1-of-2" / "cases"
    # Job 1 of 2 (inputs 1, 3, 5) is killed after its first case.
    _kill_once_written(_shard(dataset, out, model, 1), cases, "*.json")
    assert 1 <= len(list(cases.glob("*.json"))) < 3
    assert "shard-0-of-2 is missing" in _merge(out, ok=False).stderr
    # Job 0 of 2 takes its place from a SLURM job array numbered from 1 (task 1 of 2), without the flags.
    env = {**ENV, "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *_shard(dataset, out, model, None)],
        cwd=BUNDLE_ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Job 0 of 2 of a job array" in proc.stdout + proc.stderr and not (out / "pvs_burden.csv").exists()
    refused = _merge(out, ok=False).stderr
    assert "shard-1-of-2 is incomplete" in refused and "--shard_index 1 --skip_existing true" in refused
    resumed = _bundle(_shard(dataset, out, model, 1, "--skip_existing", "true"))
    assert re.search(r"Skipping [12] of 3 image\(s\)", resumed.stdout + resumed.stderr)
    _merge(out)
    reference, masks = _masks(one), _masks(out)
    assert list(masks) == list(reference)
    for name, mask in masks.items():
        np.testing.assert_array_equal(mask, reference[name], err_msg=name)
    for table in COHORT_TABLES:
        assert (out / table).read_bytes() == (one / table).read_bytes(), table
    assert (out / "qc_report.html").read_bytes() == (one / "qc_report.html").read_bytes()
    assert "--overwrite true" in _merge(out, ok=False).stderr
    # A shard run again with another threshold no longer belongs to the cohort: the merge names it.
    _bundle(_shard(dataset, out, model, 1, "--threshold", "0.4", "--overwrite", "true"))
    refused = _merge(out, "--overwrite", "true", ok=False).stderr
    assert "shard-1-of-2 was run with other settings than shard-0-of-2 (Threshold)" in refused
