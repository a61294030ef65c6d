"""Every command of README.md and of the model card, as written: the documents cannot drift from the code.

The demo commands (those with ``configs/demo.json``) run in the order the documents give them (README first, each
distinct command once) in a copy of the bundle, with small settings appended so that CI can afford them; each must
exit 0 and write what the documents say. Commands on real data (``/data/…``) or under ``torchrun`` are checked for
their config files, their workflow and every override they pass.
"""

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import BUNDLE_ROOT, REPO_ROOT, run_bundle
from monai.bundle import ConfigParser

DOCUMENTS = (REPO_ROOT / "README.md", BUNDLE_ROOT / "docs" / "README.md")
# Appended to every demo command: one epoch on six 64³ subjects (the demo is 60 epochs on sixteen 96 x 128 x 112).
SMALL_DEMO = ["--max_epochs", "1", "--val_interval", "1", "--demo#n_subjects", "6", "--demo#shape", "[64,64,64]"]
# Arguments of monai.bundle's commands that are not config ids.
COMMAND_ARGS = {
    "config_file",
    "meta_file",
    "logging_file",
    "args_file",
    "tracking",
    "tracking_uri",
    "filepath",
    "ckpt_file",
    "use_trace",
    "input_shape",
    "converter_kwargs",
    "net_id",
}


def bundle_commands(document: Path) -> list[list[str]]:
    """Every ``python -m monai.bundle …`` command of a document's bash blocks: the arguments after ``monai.bundle``."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", document.read_text(), flags=re.DOTALL):
        for line in block.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part.strip().strip("()"), comments=True)
                if "monai.bundle" in words:
                    commands.append(words[words.index("monai.bundle") + 1 :])
    return commands


def option(args: list[str], name: str) -> str | None:
    return args[args.index(f"--{name}") + 1] if f"--{name}" in args else None


def config_files(args: list[str]) -> list[str]:
    value = option(args, "config_file")
    return [value] if not value.startswith("[") else [f.strip(" '\"") for f in value.strip("[]").split(",")]


def is_demo(args: list[str]) -> bool:
    return any(f.endswith("configs/demo.json") for f in config_files(args)) and not any("/data/" in a for a in args)


def all_commands() -> list[list[str]]:
    commands = [c for document in DOCUMENTS for c in bundle_commands(document)]
    return [c for i, c in enumerate(commands) if c not in commands[:i]]


def expected_files(args: list[str]) -> list[str]:
    """What the documents say a demo command writes, relative to the bundle root."""
    if args[0] in ("ckpt_export", "onnx_export"):
        return [option(args, "filepath")]
    workflow = args[1]
    out = option(args, "output_dir") or "eval/demo"
    return {
        "training": ["models/demo/model.pt", "models/demo/model.json", "eval/demo/training_history.png"],
        "evaluating": ["eval/demo/comprehensive_test_metrics.json", "eval/demo/test_per_case_metrics.csv"],
        "baseline": ["eval/demo/frangi_baseline_metrics.json"],
        "inferring": [f"{out}/pvs_burden.csv"],
    }[workflow]


def test_the_documents_hold_the_demo_chain_from_training_to_export():
    demo = [c[:2] if c[0] == "run" else c[:1] for c in all_commands() if is_demo(c)]
    assert demo[0] == ["run", "training"]
    for step in (["run", "evaluating"], ["run", "baseline"], ["run", "inferring"], ["ckpt_export"], ["onnx_export"]):
        assert step in demo


@pytest.mark.parametrize("args", [c for c in all_commands() if not is_demo(c)], ids=lambda c: " ".join(c[:2]))
def test_commands_on_real_data_name_configs_workflows_and_overrides_that_exist(args):
    root = BUNDLE_ROOT.parent if option(args, "bundle_root") else BUNDLE_ROOT
    files = [root / f for f in config_files(args)]
    assert all(f.is_file() for f in files), files
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    if args[0] == "run":
        assert args[1] in parser, f"no workflow {args[1]!r} in {files}"
    else:
        assert args[1] in parser, f"no network {args[1]!r} in {files}"
    overrides = [a[2:] for a in args if a.startswith("--") and a[2:] not in COMMAND_ARGS]
    missing = [o for o in overrides if o not in parser]
    assert not missing, f"{' '.join(args)}: no config id {missing}"


def test_demo_commands_run_as_written_in_order(tmp_path):
    bundle = tmp_path / "pvs_bundle"
    for part in ("configs", "scripts"):
        shutil.copytree(BUNDLE_ROOT / part, bundle / part, ignore=shutil.ignore_patterns("__pycache__"))
    for args in [c for c in all_commands() if is_demo(c)]:
        proc = run_bundle([*args, *SMALL_DEMO], cwd=bundle)
        shown = " ".join(args[:2])
        assert proc.returncode == 0, f"{shown}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        missing = [f for f in expected_files(args) if not (bundle / f).is_file()]
        assert not missing, f"{shown} did not write {missing}"
        if args[:2] == ["run", "evaluating"]:  # the demo recipe's mirroring, stored with its model, is used
            summary = json.loads((bundle / "eval" / "demo" / "comprehensive_test_metrics.json").read_text())
            assert summary["tta"] == "mirror"
            # the demo data has parcellations: the test cases are scored by region too
            white_matter = summary["by_region"]["cerebral_white_matter"]
            assert white_matter["n_cases"] == summary["n_cases"] and white_matter["ref_pvs"] > 0
    assert not (bundle / "eval" / "demo" / "ds005595_demo").exists()  # the demo data is in one place
    assert len(list((bundle / "eval" / "demo_data" / "ds005595_demo").glob("sub-*"))) == 6
