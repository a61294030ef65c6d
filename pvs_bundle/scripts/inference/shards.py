"""Job-array cohorts: inputs dealt to independent jobs (shards), each writing its part, merged once at the end.

A cluster's job scheduler (SLURM job arrays on CPU nodes) runs many independent jobs that never talk to each
other, unlike torchrun's processes. Job ``I`` of ``N`` (``--num_shards N --shard_index I``, or SLURM's
``SLURM_ARRAY_TASK_COUNT`` / ``SLURM_ARRAY_TASK_ID`` when the flags are not given) lists every input exactly as one
process would, takes inputs ``I, I + N, I + 2N, …`` of that list, writes their masks and sidecars where one process
would, and keeps each case's table rows (burden, census, regions, the QC report's figure) in
``<output_dir>/shards/shard-I-of-N/``, with a manifest (``shard.json``) saying which inputs it holds, with which
settings, and whether it finished. ``run merging`` then checks every shard and writes the cohort tables, census and
QC report once, from the same rows and with the same writers as one process: the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.io import atomic_write_json

logger = logging.getLogger("pvs_bundle.shards")

SHARDS_FOLDER = "shards"
MANIFEST_FILE = "shard.json"
CASES_FOLDER = "cases"
INDEX_KEY = "input_index"  # an input's place in the whole cohort's list, kept in its dealt item
SLURM_COUNT, SLURM_ID, SLURM_MIN, SLURM_STEP = (
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_STEP",
)


@dataclass(frozen=True)
class Shard:
    """Job ``index`` (from 0) of ``count`` independent jobs of one cohort run."""

    index: int
    count: int

    @property
    def name(self) -> str:
        """``shard-I-of-N``, zero-padded so the folders sort in order."""
        width = len(str(self.count - 1))
        return f"shard-{self.index:0{width}d}-of-{self.count}"

    def folder(self, output_dir: str | Path) -> Path:
        """Where this shard keeps its part of the tables."""
        return Path(output_dir).expanduser() / SHARDS_FOLDER / self.name

    def manifest(self, output_dir: str | Path) -> Path:
        """This shard's manifest file."""
        return self.folder(output_dir) / MANIFEST_FILE

    def record(self, output_dir: str | Path, case: str) -> Path:
        """The file of one case's rows."""
        return self.folder(output_dir) / CASES_FOLDER / f"{case}.json"

    def takes(self, position: int) -> bool:
        """Whether the input at ``position`` of the cohort's list is this shard's (``index, index + count, …``)."""
        return position % self.count == self.index

    def deal(self, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """This shard's share of the cohort's inputs (:meth:`takes`), each with its place in the list."""
        return [{**item, INDEX_KEY: i} for i, item in enumerate(items) if self.takes(i)]


def resolve_shard(
    num_shards: int | str | None = None,
    shard_index: int | str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Shard | None:
    """The shard this job runs: from the flags, else from a SLURM job array's variables, else None (no shards).

    A job array given as ``--array=1-10`` or ``--array=0-18:2`` is numbered by its tasks' order. One shard in all
    (``--num_shards 1``, also the way to opt out inside a job array) means an ordinary run.

    Raises:
        ValueError: a flag without the other, a count below 1, or an index outside ``0 … count - 1``.
    """
    env = os.environ if environ is None else environ
    given = (num_shards not in (None, ""), shard_index not in (None, ""))
    if given == (True, True):
        count, index, origin = int(num_shards), int(shard_index), "--num_shards/--shard_index"  # type: ignore[arg-type]
    elif any(given):
        raise ValueError(
            "--num_shards and --shard_index must be given together (job I of N: --num_shards N --shard_index I), "
            f"not only --{'num_shards' if given[0] else 'shard_index'}."
        )
    elif env.get(SLURM_COUNT) and env.get(SLURM_ID):
        step = int(env.get(SLURM_STEP) or 1)
        count, origin = int(env[SLURM_COUNT]), f"{SLURM_ID}={env[SLURM_ID]} of {SLURM_COUNT}={env[SLURM_COUNT]}"
        index = (int(env[SLURM_ID]) - int(env.get(SLURM_MIN) or 0)) // step
    else:
        return None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"the shard index must be in 0 … {count - 1} and the count at least 1 ({origin}).")
    if count == 1:
        return None
    logger.info("Job %d of %d of a job array (%s).", index, count, origin)
    return Shard(index, count)


def write_manifest(
    shard: Shard, output_dir: str | Path, items: Sequence[Mapping[str, Any]], settings: Mapping[str, Any], done: bool
) -> Path:
    """Write the shard's manifest: its inputs, the settings that shape its rows, and whether it finished."""
    inputs = [{"index": item[INDEX_KEY], "case": item["case"], "image": item["image"]} for item in items]
    manifest = {"num_shards": shard.count, "shard_index": shard.index, "complete": done, "settings": settings}
    return atomic_write_json(shard.manifest(output_dir), {**manifest, "inputs": inputs})


def write_case_record(shard: Shard, output_dir: str | Path, item: Mapping[str, Any], record: Mapping[str, Any]) -> Path:
    """Keep one case's rows (its burden row, census and region rows, report figure) for the merge."""
    return atomic_write_json(shard.record(output_dir, item["case"]), {"index": item[INDEX_KEY], **record})


def has_record(shard: Shard, output_dir: str | Path, case: str) -> bool:
    """Whether a case's rows were kept (its outputs complete and then its record written)."""
    try:
        return isinstance(json.loads(shard.record(output_dir, case).read_text()).get("row"), dict)
    except (OSError, ValueError):
        return False


def read_shards(output_dir: str | Path) -> list[dict[str, Any]]:
    """Every case record of a finished job-array run, in the cohort's input order, after checking every shard.

    Raises:
        FileNotFoundError: no shard under ``output_dir``.
        ValueError: naming the shard, when one is missing, unfinished, or was run with other settings or another
            number of shards, or a case's record is missing.
    """
    out = Path(output_dir).expanduser()
    manifests = sorted((out / SHARDS_FOLDER).glob(f"shard-*/{MANIFEST_FILE}"))
    if not manifests:
        raise FileNotFoundError(
            f"{out / SHARDS_FOLDER} holds no shard: run the job-array inference (--num_shards N --shard_index I) "
            "with this --output_dir first."
        )
    read = {path.parent.name: json.loads(path.read_text()) for path in manifests}
    first_name, first = next(iter(read.items()))
    count = int(first["num_shards"])
    expected = [Shard(i, count) for i in range(count)]
    for name, manifest in read.items():
        if int(manifest["num_shards"]) != count:
            raise ValueError(
                f"{out / SHARDS_FOLDER / name} is one of {manifest['num_shards']} shards, {first_name} one of "
                f"{count}: remove the shards of the other run, or merge into another --output_dir."
            )
        if manifest["settings"] != first["settings"]:
            changed = sorted(k for k in {*manifest["settings"], *first["settings"]} if manifest["settings"].get(k)
                             != first["settings"].get(k))  # fmt: skip
            raise ValueError(
                f"{out / SHARDS_FOLDER / name} was run with other settings than {first_name} ({', '.join(changed)}): "
                f"rerun it with the same model and settings (--shard_index {manifest['shard_index']} --overwrite true)."
            )
    for shard in expected:
        manifest = read.get(shard.name)
        if manifest is None:
            raise ValueError(
                f"{shard.folder(out)} is missing: shard {shard.index} of {count} has not run "
                f"(run it with --num_shards {count} --shard_index {shard.index})."
            )
        if not manifest["complete"]:
            raise ValueError(
                f"{shard.folder(out)} is incomplete: shard {shard.index} of {count} did not finish (killed or "
                f"failed). Rerun it with --num_shards {count} --shard_index {shard.index} --skip_existing true."
            )
    records = []
    for shard in expected:
        for entry in read[shard.name]["inputs"]:
            path = shard.record(out, entry["case"])
            if not path.is_file():
                raise ValueError(
                    f"{path} is missing although {shard.name} finished: rerun it with --num_shards {count} "
                    f"--shard_index {shard.index} --skip_existing true."
                )
            records.append(json.loads(path.read_text()))
    records.sort(key=lambda record: record["index"])
    if [record["index"] for record in records] != list(range(len(records))):
        raise ValueError(f"the shards under {out / SHARDS_FOLDER} do not hold one cohort's inputs once each.")
    logger.info("Merging %d shard(s) of %s: %d case(s).", count, out, len(records))
    return records
