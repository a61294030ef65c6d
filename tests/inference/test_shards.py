"""Job-array shards: which job runs which inputs, from the flags or from SLURM's variables."""

import pytest

from scripts.inference.shards import INDEX_KEY, Shard, resolve_shard


def test_the_flags_win_over_slurm_and_one_shard_is_an_ordinary_run():
    slurm = {"SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_ID": "5"}
    assert resolve_shard(3, 2, slurm) == Shard(2, 3)
    assert resolve_shard("3", "0", {}) == Shard(0, 3)
    assert resolve_shard(1, 0, slurm) is None
    assert resolve_shard(None, None, {}) is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "0"}, Shard(0, 4)),
        ({"SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "0"}, Shard(3, 4)),
        ({"SLURM_ARRAY_TASK_COUNT": "10", "SLURM_ARRAY_TASK_ID": "10", "SLURM_ARRAY_TASK_MIN": "1"}, Shard(9, 10)),
        (  # --array=0-18:2 gives tasks 0, 2, ..., 18
            {"SLURM_ARRAY_TASK_COUNT": "10", "SLURM_ARRAY_TASK_ID": "14", "SLURM_ARRAY_TASK_MIN": "0",
             "SLURM_ARRAY_TASK_STEP": "2"},
            Shard(7, 10),
        ),
    ],
)  # fmt: skip
def test_a_slurm_job_array_task_is_numbered_by_its_place_in_the_array(env, expected):
    assert resolve_shard(None, None, env) == expected


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ((4, None), "must be given together"),
        ((None, 1), "must be given together"),
        ((4, 4), r"in 0 … 3"),
        ((0, 0), "at least 1"),
    ],
)
def test_bad_flags_are_refused_with_the_fix(flags, message):
    with pytest.raises(ValueError, match=message):
        resolve_shard(*flags, {})


def test_the_shards_deal_every_input_once_in_a_fixed_order():
    items = [{"case": f"sub-{i:03d}"} for i in range(11)]
    shares = [Shard(i, 4).deal(items) for i in range(4)]
    assert [len(share) for share in shares] == [3, 3, 3, 2]
    dealt = sorted((item[INDEX_KEY], item["case"]) for share in shares for item in share)
    assert dealt == [(i, f"sub-{i:03d}") for i in range(11)]
    assert [item["case"] for item in shares[1]] == ["sub-001", "sub-005", "sub-009"]
    assert Shard(3, 12).name == "shard-03-of-12" and Shard(0, 2).name == "shard-0-of-2"
