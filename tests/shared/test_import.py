"""Importing the bundle's package leaves the importer's process as it was (a library, not a workflow)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import BUNDLE_ROOT

PROBE = """
import sys, warnings
import torch, monai, monai.transforms, monai.handlers, ignite.engine, segmentation_models_pytorch_3d, nibabel, scipy
hook, filters = sys.excepthook, list(warnings.filters)
import scripts, scripts.model.network, scripts.data.synth.render, scripts.inference.inference_inputs
assert sys.excepthook is hook, "importing scripts replaced sys.excepthook"
assert warnings.filters == filters, "importing scripts changed the warning filters"
from scripts.errors import configure
configure("/nonexistent")
assert sys.excepthook is not hook, "a workflow's first step installs the one-line errors"
print("ok")
"""


@pytest.mark.slow
def test_importing_scripts_changes_nothing_until_a_workflow_starts():
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=BUNDLE_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@pytest.mark.slow
def test_a_callers_own_error_keeps_its_traceback():
    code = "import scripts.model.network\nraise KeyError('mine')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=BUNDLE_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "KeyError: 'mine'" in proc.stderr and "pvs_bundle: error" not in proc.stderr
