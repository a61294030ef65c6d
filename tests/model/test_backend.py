"""Inference backends: the automatic choice, and exports cached by the model's SHA-256 (stale, corrupt, read-only
folder, two processes at once), with the exported backends agreeing with the PyTorch network."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import BUNDLE_ROOT, bundle_env
from torch import nn

from scripts.model import backend as backends
from scripts.model.backend import (
    BACKENDS,
    Backend,
    cached_export,
    export_onnx,
    inference_network,
    openvino_available,
    resolve_backend,
)


def tiny_network(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 1, 1))


def save_model(folder, seed: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.pt"
    torch.save(tiny_network(seed).state_dict(), path)
    return path


def test_auto_picks_openvino_on_a_cpu_when_it_imports_and_names_are_checked():
    chosen = resolve_backend("auto", "cpu")
    assert chosen.name == ("openvino" if openvino_available() else "eager") and chosen.reason.startswith("auto:")
    assert resolve_backend("AUTO", torch.device("cuda:0")) == Backend(
        "eager", "auto: a CUDA device (cuda:0), eager PyTorch with AMP"
    )
    assert resolve_backend("onnxruntime", "cpu") == Backend("onnxruntime", "set by --backend")
    assert set(BACKENDS) == {"auto", "eager", "export", "torchscript", "onnxruntime", "openvino"}
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("tensorrt", "cpu")
    with pytest.raises(ValueError, match="runs on the CPU only"):
        resolve_backend("openvino", "cuda")


def test_an_export_is_made_once_per_model_and_redone_when_stale_or_corrupt(tmp_path):
    model = save_model(tmp_path / "models")
    calls = []

    def export(path):
        calls.append(path)
        export_onnx(backends.load_weights(tiny_network(5), model), path, (8, 8, 8))

    first = cached_export(model, "onnx", export)
    assert first.parent == model.parent and first.name.startswith("model.") and first.suffix == ".onnx"
    record = json.loads(first.with_name(first.name + ".json").read_text())
    assert record["model_sha256"] in {backends.sha256_file(model)} and len(calls) == 1
    assert cached_export(model, "onnx", export) == first and len(calls) == 1  # reused, not exported again
    first.write_bytes(first.read_bytes()[:100])  # truncated: re-exported
    assert cached_export(model, "onnx", export) == first and len(calls) == 2
    assert json.loads(first.with_name(first.name + ".json").read_text())["sha256"] == backends.sha256_file(first)
    save_model(tmp_path / "models", seed=1)  # new weights: a new file, keyed by the new hash
    second = cached_export(model, "onnx", export)
    assert second != first and len(calls) == 3 and not list(model.parent.glob(".*.onnx"))  # no temporary left


def test_a_model_folder_that_cannot_be_written_caches_in_the_cache_folder(tmp_path, monkeypatch):
    model = save_model(tmp_path / "models")
    monkeypatch.setenv(backends.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(backends, "_writable", lambda folder: folder != model.parent)
    path = cached_export(
        model, "onnx", lambda p: export_onnx(backends.load_weights(tiny_network(), model), p, (8,) * 3)
    )
    assert path.parent == tmp_path / "cache" and path.is_file() and not list(model.parent.glob("*.onnx"))


@pytest.mark.slow
def test_two_processes_exporting_at_once_leave_one_whole_file_exported_once(tmp_path):
    model = save_model(tmp_path / "models")
    log = tmp_path / "exports.log"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from scripts.model.backend import cached_export

        def export(path):
            with open({str(log)!r}, "a") as handle:
                handle.write("export\\n")
            time.sleep(1.0)
            path.write_bytes(b"x" * 100000)

        print(cached_export({str(model)!r}, "onnx", export))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], cwd=BUNDLE_ROOT, env=bundle_env(), stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    paths = {proc.communicate(timeout=120)[0].decode().strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs) and len(paths) == 1
    assert log.read_text().count("export") == 1
    path = paths.pop()
    assert backends._valid(backends.Path(path), backends.sha256_file(model))


@pytest.mark.parametrize("name", ["onnxruntime", "torchscript", "openvino", "export"])
def test_exported_backends_agree_with_the_pytorch_network(tmp_path, name):
    if name == "openvino" and not openvino_available():
        pytest.skip("openvino is not installed (requirements.txt installs it)")
    model = save_model(tmp_path / "models", seed=3)
    eager = backends.load_weights(tiny_network(9), model).eval()
    runner = inference_network(Backend(name, "test"), tiny_network(9), model, (32, 32, 32), precision="fp32")
    x = torch.randn(2, 1, 64, 32, 32) if name != "torchscript" else torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(runner(x).numpy(), eager(x).numpy(), atol=1e-4)
    assert runner is not eager and len(list(model.parent.glob("model.*.*"))) == 2  # the export and its sidecar


def test_the_exported_program_of_the_unetplusplus_takes_other_batch_and_window_sizes(tmp_path):
    from scripts.model.network import build_unetplusplus

    network = build_unetplusplus("efficientnet-b0", None, decoder_channels=(16, 8, 8, 8, 8), norm="group").eval()
    model = tmp_path / "model.pt"
    torch.save(network.state_dict(), model)
    runner = inference_network(Backend("export", "test"), network, model, (64, 64, 64))
    x = torch.randn(3, 1, 64, 96, 128)
    with torch.no_grad():
        np.testing.assert_allclose(runner(x).numpy(), network(x).numpy(), atol=1e-4)


def test_an_export_made_on_the_first_call_inside_autocast_is_traced_in_fp32(tmp_path):
    model = save_model(tmp_path / "models", seed=4)
    eager = backends.load_weights(tiny_network(), model).eval()
    runner = inference_network(Backend("onnxruntime", "test"), tiny_network(), model, (32, 32, 32))
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # as the bundle's AutocastInferer calls it
        out = runner(x)
    with torch.no_grad():
        np.testing.assert_allclose(out.numpy(), eager(x).numpy(), atol=1e-4)
    assert not list(model.parent.glob("*.lock")) or all(p.stat().st_size == 0 for p in model.parent.glob("*.lock"))
