"""DistributedDataParallel training through torchrun and configs/multi_gpu_train.json: two CPU processes (gloo).

torchrun tees every worker's output with a ``[rank<N>]: `` prefix, so each rank's own log lines can be compared.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import BUNDLE_ROOT, TINY_TRAINING, bundle_env, make_bids_dataset, run_bundle, run_dirs

from scripts.data.datalist import create_datalist
from scripts.distributed import (
    TORCHRUN_VARIABLES,
    local_rank,
    training_sampler,
    training_shard,
    validation_shard,
)
from scripts.model.network import build_unetplusplus

CONFIGS = "['configs/train.json','configs/multi_gpu_train.json']"
WORLD_SIZE = 2
RANK_PREFIX = re.compile(r"^\[rank(\d+)\]: (.*)$", re.MULTILINE)
# Eight subjects split 4/2/2: each rank trains on two cases and validates a different one.
SUBJECTS = tuple(f"{i:03d}" for i in range(1, 9))
SPLIT = ["--split_fractions", "[0.5,0.25,0.25]"]


def _by_rank(output: str, pattern: str) -> dict[int, list[str]]:
    """The matches of ``pattern`` in each rank's lines, in order."""
    found: dict[int, list[str]] = {rank: [] for rank in range(WORLD_SIZE)}
    for rank, line in RANK_PREFIX.findall(output):
        match = re.search(pattern, line)
        if match:
            found[int(rank)].append(match.group(0))
    return found


def _torchrun(root: Path, dataset: Path, *extra: str) -> str:
    """Train with two processes into ``root``; return their combined output (each line prefixed by its rank)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",  # what the torchrun command runs
        "--standalone",
        f"--nproc_per_node={WORLD_SIZE}",
        "--tee",
        "3",
        "--log-dir",
        str(root / "torchrun_logs"),
        "--log-line-prefix-template",
        "[rank${rank}]: ",
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        CONFIGS,
        *run_dirs(root, dataset),
        *TINY_TRAINING,
        *SPLIT,
        *extra,
    ]
    env = {**bundle_env(), "OMP_NUM_THREADS": "1"}  # two processes share the CI's cores
    proc = subprocess.run(command, cwd=BUNDLE_ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    return output


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Train 2 epochs with two processes once for the whole module; return (run folder, combined output)."""
    root = tmp_path_factory.mktemp("ddp")
    dataset = make_bids_dataset(root / "ds", subjects=SUBJECTS)
    return root, _torchrun(root, dataset)


def test_every_rank_reports_the_same_validation_metrics(ddp_run):
    root, output = ddp_run
    datalist = json.loads((root / "eval" / "datalist.json").read_text())
    assert len({case["id"] for case in datalist["validation"]}) == WORLD_SIZE  # one different case per rank
    metrics = _by_rank(output, r"Epoch\[\d+\] Metrics -- val_.*")
    assert [line.split(" Metrics")[0] for line in metrics[0]] == ["Epoch[1]", "Epoch[2]"]
    assert metrics[1] == metrics[0]
    best = _by_rank(output, r"Key metric: val_dice best value: \S+ at epoch: \d+")  # full float precision
    assert len(best[0]) == 2 and best[1] == best[0]
    recorded = json.loads((root / "eval" / "training_history.json").read_text())["best"]
    assert best[0][-1] == f"Key metric: val_dice best value: {recorded['val_dice']} at epoch: {recorded['epoch']}"


def test_training_cases_are_shared_out_between_ranks(ddp_run):
    _, output = ddp_run
    # 4 training cases, batch size 1: 2 iterations an epoch on each rank (4 in a single process).
    iterations = _by_rank(output, r"Epoch: \d/2, Iter: \d/\d")
    expected = [f"Epoch: {epoch}/2, Iter: {i}/2" for epoch in (1, 2) for i in (1, 2)]
    assert iterations == {rank: expected for rank in range(WORLD_SIZE)}


def test_each_rank_caches_its_own_disjoint_share_of_the_training_cases(ddp_run):
    root, output = ddp_run
    shares = _by_rank(output, r"Rank \d of 2 caches 2 of 4 training cases: .*\.$")
    assert all(len(shares[rank]) == 1 for rank in range(WORLD_SIZE)), shares
    ids = [set(shares[rank][0].split(": ", 1)[1].rstrip(".").split(", ")) for rank in range(WORLD_SIZE)]
    datalist = json.loads((root / "eval" / "datalist.json").read_text())
    assert ids[0].isdisjoint(ids[1])
    assert ids[0] | ids[1] == {case["id"] for case in datalist["training"]}


def test_only_rank_zero_writes_the_model_history_and_tensorboard(ddp_run):
    root, output = ddp_run
    saved = _by_rank(output, r"Saved the best model")
    assert saved[0] and not saved[1]
    assert sorted(p.name for p in (root / "models").iterdir()) == ["model.json", "model.pt", "training_state.pt"]
    model = build_unetplusplus(encoder_name="efficientnet-b0", encoder_weights=None, decoder_channels=(32, 16, 8, 8, 4))
    model.load_state_dict(torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True))
    assert torch.load(root / "models" / "training_state.pt", weights_only=True)["epoch"] == 2
    history = json.loads((root / "eval" / "training_history.json").read_text())
    assert [row["epoch"] for row in history["epochs"]] == [1, 2]
    events = sorted((root / "eval").glob("events.out.tfevents.*"))
    assert len(events) == 2  # the trainer's and the validator's writers, of one process
    assert len({name.name.split(".")[-2] for name in events}) == 1
    assert not list((root / "eval").glob(".*.tmp")) and not list((root / "models").glob(".*.tmp"))


def test_ranks_writing_the_datalist_at_once_leave_one_whole_split(ddp_run):
    root, output = ddp_run
    written = _by_rank(output, r"(Wrote|Using the saved) datalist")
    assert all(written[rank] for rank in range(WORLD_SIZE))
    expected, _ = create_datalist(root / "ds", fractions=(0.5, 0.25, 0.25))
    assert json.loads((root / "eval" / "datalist.json").read_text()) == expected


def test_a_finished_ddp_run_resumes_on_every_rank(ddp_run, tmp_path):
    root, _ = ddp_run
    for name in ("ds", "eval", "models"):  # a copy: the other tests read the first run's files
        shutil.copytree(root / name, tmp_path / name)
    output = _torchrun(tmp_path, tmp_path / "ds", "--max_epochs", "3")
    resumed = _by_rank(output, r"Resuming from \S+: epoch 2 of 3 done")
    assert all(len(resumed[rank]) == 1 for rank in range(WORLD_SIZE)), output[-3000:]
    iterations = _by_rank(output, r"Epoch: \d/3, Iter: \d/\d")
    assert iterations == {rank: ["Epoch: 3/3, Iter: 1/2", "Epoch: 3/3, Iter: 2/2"] for rank in range(WORLD_SIZE)}
    assert torch.load(tmp_path / "models" / "training_state.pt", weights_only=True)["epoch"] == 3
    history = json.loads((tmp_path / "eval" / "training_history.json").read_text())
    assert [row["epoch"] for row in history["epochs"]] == [1, 2, 3]


def test_overlay_without_torchrun_says_how_to_launch(bids_dataset, tmp_path):
    args = ["run", "training", "--config_file", CONFIGS, "--dataset_dir", str(bids_dataset)]
    proc = run_bundle([*args, "--output_dir", str(tmp_path / "eval"), "--ckpt_dir", str(tmp_path / "models")])
    assert proc.returncode != 0
    assert "must be launched by torchrun" in proc.stderr
    assert not (tmp_path / "models").exists()


def test_local_rank_reads_torchrun_environment(monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.setenv(name, "1" if name != "MASTER_ADDR" else "localhost")
    assert local_rank() == 1


def test_local_rank_names_the_missing_variables(monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.setenv(name, "0")
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(RuntimeError, match="unset here: WORLD_SIZE"):
        local_rank()


def test_local_rank_must_be_a_non_negative_integer(monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.setenv(name, "0")
    monkeypatch.setenv("LOCAL_RANK", "-1")
    with pytest.raises(RuntimeError, match="LOCAL_RANK must be a non-negative integer, not '-1'"):
        local_rank()


CASES = [{"id": f"sub-{i:03d}", "image": f"{i}.nii.gz", "label": f"{i}_mask.nii.gz"} for i in range(7)]


@pytest.mark.parametrize("world_size", [2, 3, 7, 8])
def test_training_shards_cover_every_case_with_equal_lengths(world_size):
    shards = [training_shard(CASES, seed=5, rank=rank, world_size=world_size) for rank in range(world_size)]
    assert len({len(shard) for shard in shards}) == 1  # every rank runs as many iterations
    assert len(shards[0]) == -(-len(CASES) // world_size)  # 1 with more ranks than cases
    assert {case["id"] for shard in shards for case in shard} == {case["id"] for case in CASES}
    if world_size < len(CASES):  # only the padding repeats a case
        assert sum(len(shard) for shard in shards) - len(CASES) < world_size
        assert shards != [training_shard(CASES, seed=6, rank=r, world_size=world_size) for r in range(world_size)]


def test_training_shard_without_partition_or_process_group_is_every_case():
    assert training_shard(CASES, partition=False, rank=1, world_size=2) == CASES
    assert training_shard(CASES) == CASES  # no process group: rank 0 of 1
    with pytest.raises(ValueError, match="rank must be in 0 … world_size - 1 = 1, not 2"):
        training_shard(CASES, rank=2, world_size=2)


def test_training_sampler_reshuffles_the_whole_share_every_epoch():
    sampler = training_sampler(CASES, partitioned=True, seed=0)  # no process group: rank 0 of 1
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert all(sorted(order) == list(range(len(CASES))) for order in orders)
    assert len({tuple(order) for order in orders}) == 3


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_validation_shards_score_every_case_once(world_size):
    shards = [validation_shard(CASES, rank=rank, world_size=world_size) for rank in range(world_size)]
    ids = [case["id"] for shard in shards for case in shard]
    assert sorted(ids) == sorted(case["id"] for case in CASES)  # no case twice, none left out


def test_fewer_validation_cases_than_processes_gives_each_rank_one_and_warns(caplog):
    with caplog.at_level("WARNING", logger="pvs_bundle.distributed"):
        shards = [validation_shard(CASES[:3], rank=rank, world_size=8) for rank in range(8)]
    assert all(len(shard) == 1 for shard in shards)
    assert {shard[0]["id"] for shard in shards} == {case["id"] for case in CASES[:3]}
    assert "3 validation cases for 8 processes" in caplog.text
