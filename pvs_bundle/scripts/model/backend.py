"""Inference backends: which engine runs the network (``backend: auto`` picks), and its export cached by model hash.

``backend`` in inference.json and evaluate.json is one of :data:`BACKENDS`:

- ``auto`` (the default): on a CUDA device, ``eager`` (with AMP, as ``precision`` says); on a CPU, ``openvino`` when
  OpenVINO imports (the fastest CPU path measured, ``docs/performance.md``), else ``eager``;
- ``eager``: the PyTorch network itself (bf16 autocast on a CPU that computes it natively);
- ``export``: the network's ``torch.export`` program (``.pt2``, PyTorch's successor to TorchScript), with dynamic
  batch and spatial sizes (any multiple of 32 with one axis at least 64; a 32³ window exports at that size);
- ``torchscript``: the network traced with ``torch.jit.trace`` (what ``ckpt_export`` writes; TorchScript is
  deprecated in PyTorch, ``export`` is its successor);
- ``onnxruntime`` and ``openvino``: the network exported to ONNX and run by ONNX Runtime or OpenVINO.

An exported backend needs a file: the one named by ``onnx_file`` / ``ts_file`` when given (the overlays
``configs/inference_onnx.json`` and friends), else one exported on first use and cached, keyed by the SHA-256 of
``model.pt`` (:func:`cached_export`): ``model.<sha16>.onnx`` beside the model, or, when that folder cannot be written,
under ``$PVS_BUNDLE_CACHE`` (default ``~/.cache/pvs_bundle``). Each cached file has a JSON sidecar with the model's
and the file's own SHA-256: a cache that does not match it (stale, truncated, corrupt) is exported again. An export
is written to a temporary file and renamed into place under an exclusive lock, so two processes exporting at once
leave one whole file and export it once. One log line says which backend runs and why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scripts.io import atomic_write_json, sha256_file
from scripts.model.model_file import check_model_file
from scripts.model.network import check_patch_size

logger = logging.getLogger("pvs_bundle.backend")

BACKENDS: tuple[str, ...] = ("auto", "eager", "export", "torchscript", "onnxruntime", "openvino")
# backend -> the kind (extension) of the file it runs
EXPORTED: dict[str, str] = {"export": "pt2", "torchscript": "ts", "onnxruntime": "onnx", "openvino": "onnx"}
CACHE_ENV = "PVS_BUNDLE_CACHE"
ONNX_OPSET = 18
HASH_CHARS = 16  # of the model's SHA-256, in a cached file's name


@dataclasses.dataclass(frozen=True)
class Backend:
    """The backend that runs, and why it was chosen (for the log line)."""

    name: str
    reason: str

    @property
    def exported(self) -> bool:
        """True when the backend runs an exported file rather than the PyTorch network."""
        return self.name in EXPORTED


def openvino_available() -> bool:
    """True when the ``openvino`` package can be imported."""
    return importlib.util.find_spec("openvino") is not None


def resolve_backend(backend: str, device: torch.device | str) -> Backend:
    """Pick the backend for ``device``: ``auto`` as the module docstring says, any other name as given.

    Raises:
        ValueError: for a name not in :data:`BACKENDS`, or an exported backend on a CUDA device.
    """
    name = str(backend).strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, not {backend!r}.")
    on_cuda = torch.device(device).type == "cuda"
    if name != "auto":
        if on_cuda and name in ("onnxruntime", "openvino"):
            raise ValueError(f"backend {name!r} runs on the CPU only; use --backend eager (or auto) on {device}.")
        return Backend(name, "set by --backend")
    if on_cuda:
        return Backend("eager", f"auto: a CUDA device ({device}), eager PyTorch with AMP")
    if openvino_available():
        return Backend("openvino", "auto: a CPU, and OpenVINO imports (the fastest CPU path)")
    return Backend("eager", "auto: a CPU without OpenVINO (`pip install openvino` for the fastest CPU path)")


def cache_folder() -> Path:
    """The folder of exports that cannot sit beside their model: ``$PVS_BUNDLE_CACHE`` or ``~/.cache/pvs_bundle``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "pvs_bundle").expanduser()


def _writable(folder: Path) -> bool:
    """True when a file can be created in ``folder`` (tried, not inferred from permission bits)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
    except OSError:
        return False
    os.close(handle)
    os.unlink(probe)
    return True


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (created if absent) for the block."""
    with open(lock_file, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _valid(path: Path, model_sha256: str) -> bool:
    """True when ``path`` and its sidecar exist and the sidecar's hashes match the model and the file."""
    try:
        record = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return False
    return path.is_file() and record.get("model_sha256") == model_sha256 and record.get("sha256") == sha256_file(path)


def cached_export(
    model_file: str | os.PathLike[str], kind: str, export: Callable[[Path], None], folder: str | Path | None = None
) -> Path:
    """Return the export of ``model_file`` of kind ``kind`` (``onnx`` or ``ts``), exporting it only when needed.

    Args:
        model_file: the weights (``model.pt``) the export is made from; its SHA-256 keys the cache.
        kind: the file extension of the export.
        export: writes the export to the path it is given.
        folder: where to cache (None: beside the model, else :func:`cache_folder` when that cannot be written).

    Returns:
        The path of a whole, matching export.

    Raises:
        FileNotFoundError: if ``model_file`` does not exist.
    """
    model = Path(model_file).expanduser().resolve()
    model_sha256 = sha256_file(model)
    if folder is None:
        folder = model.parent if _writable(model.parent) else cache_folder()
        if folder != model.parent:
            logger.info("%s cannot be written: the %s export is cached in %s", model.parent, kind, folder)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{model.stem}.{model_sha256[:HASH_CHARS]}.{kind}"
    if _valid(path, model_sha256):
        logger.info("Using the cached %s export %s of %s", kind, path, model)
        return path
    with _exclusive(folder / f".{path.name}.lock"):
        if _valid(path, model_sha256):  # another process exported it while this one waited
            return path
        logger.info("Exporting %s to %s (once per model file: it is cached by its SHA-256)", model, path)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=f".{kind}")
        os.close(handle)
        try:
            export(Path(temporary))
            os.replace(temporary, path)
        finally:
            Path(temporary).unlink(missing_ok=True)
        atomic_write_json(
            _sidecar(path), {"model": str(model), "model_sha256": model_sha256, "sha256": sha256_file(path)}
        )
    return path


def load_weights(network: nn.Module, model_file: str | os.PathLike[str]) -> nn.Module:
    """Load ``model.pt`` (a state dict, or a checkpoint holding one under ``model``) into ``network``; return it."""
    state = torch.load(Path(model_file).expanduser(), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    network.load_state_dict(state)
    return network


def export_onnx(network: nn.Module, path: Path, window: Sequence[int]) -> None:
    """Export ``network`` (fp32, CPU) to ONNX with dynamic batch and spatial axes, as the card's ``onnx_export``."""
    dynamic = {0: "batch", 2: "x", 3: "y", 4: "z"}
    example = torch.zeros((1, 1, *[int(s) for s in window]), dtype=torch.float32)
    torch.onnx.export(
        network.float().cpu().eval(),
        (example,),
        str(path),
        dynamo=False,
        opset_version=ONNX_OPSET,
        input_names=["image"],
        output_names=["pred"],
        dynamic_axes={"image": dynamic, "pred": dynamic},
    )


def export_program(network: nn.Module, path: Path, window: Sequence[int]) -> None:
    """Export ``network`` (fp32, CPU) with ``torch.export``, batch and spatial sizes dynamic where it allows.

    The example has a batch of 2 at the window's size, so neither is specialised to 1; segmentation_models_pytorch_3d's
    UNet++ then runs any batch and any multiple of 32 with one axis at least 64 (its 32³ case is specialised).
    """
    example = torch.zeros((2, 1, *[int(s) for s in window]), dtype=torch.float32)
    dynamic = {axis: torch.export.Dim.AUTO for axis in (0, 2, 3, 4)}
    with torch.no_grad():
        program = torch.export.export(network.float().cpu().eval(), (example,), dynamic_shapes=(dynamic,))
    torch.export.save(program, str(path))


def export_torchscript(network: nn.Module, path: Path, window: Sequence[int]) -> None:
    """Trace ``network`` (fp32, CPU) with a window-sized input and save it (segmentation_models_pytorch_3d: trace)."""
    example = torch.zeros((1, 1, *[int(s) for s in window]), dtype=torch.float32)
    with torch.no_grad():
        torch.jit.trace(network.float().cpu().eval(), example).save(str(path))


def inference_network(
    backend: Backend,
    network: nn.Module,
    model_file: str | os.PathLike[str],
    window: Sequence[int],
    device: torch.device | str = "cpu",
    num_threads: int = 0,
    precision: str = "auto",
    export_file: str | os.PathLike[str] | None = None,
    load_pretrain: bool = True,
) -> nn.Module:
    """The module that runs inference with ``backend``.

    For ``eager``, ``network`` itself (the workflow's checkpoint loader loads its weights). For an exported backend,
    ``export_file`` when given, else the cached export of ``model_file`` (:func:`cached_export`, made from
    ``network`` with the weights loaded here); then ONNX Runtime, OpenVINO or the TorchScript module runs it.

    Args:
        backend: from :func:`resolve_backend`.
        network: the PyTorch network built from the settings.
        model_file: the weights.
        window: the sliding window (the traced size of a TorchScript export; ONNX exports take any size).
        device: where the TorchScript module runs.
        num_threads: threads of ONNX Runtime or OpenVINO (0: their default).
        precision: the bundle's precision setting, for OpenVINO.
        export_file: an exported file to use as it is (None: cached export).
        load_pretrain: False when ``network`` is already what runs (an overlay's ONNX, OpenVINO or TorchScript
            module, with no weights to load): it is returned as it is.

    Returns:
        A module mapping a batch (N, 1, X, Y, Z) to logits; for an exported backend, one that exports (or reads the
        cache) and loads the runner on its first call (:class:`DeferredNetwork`).

    Raises:
        ValueError: if ``window`` (``sw_roi_size``) is not made of multiples of 32.
    """
    check_patch_size(window, "sw_roi_size")
    if not load_pretrain:
        logger.info("Inference backend: the overlay's network_def (%s)", type(network).__name__)
        return network
    logger.info("Inference backend: %s (%s)", backend.name, backend.reason)
    if not backend.exported:
        return network
    return DeferredNetwork(
        lambda: _runner(backend, network, model_file, window, device, num_threads, precision, export_file)
    )


class DeferredNetwork(nn.Module):
    """A network built on its first call.

    The export (and the model file it needs) happens when inference runs, after the workflow's own checks of the
    model file, not when the config is parsed.
    """

    def __init__(self, build: Any) -> None:
        super().__init__()
        self._build = build
        self._runner: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Build the runner once, then run it."""
        if self._runner is None:
            with torch.autocast("cpu", enabled=False):  # exports trace in fp32, whatever the caller autocasts
                self._runner = self._build()
        return self._runner(x)


def _runner(
    backend: Backend,
    network: nn.Module,
    model_file: str | os.PathLike[str],
    window: Sequence[int],
    device: torch.device | str,
    num_threads: int,
    precision: str,
    export_file: str | os.PathLike[str] | None,
) -> nn.Module:
    """The exported backend's module: ``export_file`` or the cached export of ``model_file``, loaded to run.

    Raises:
        FileNotFoundError, BundleError: when no ``export_file`` is given and ``model_file`` is missing or damaged
            (:func:`scripts.model.model_file.check_model_file`, as the eager path's checkpoint loader checks it).
    """
    kind = EXPORTED[backend.name]
    if export_file is not None:
        path = Path(export_file).expanduser()
    else:
        check_model_file(model_file)
        exporter: Any = {"onnx": export_onnx, "ts": export_torchscript, "pt2": export_program}[kind]

        def export(target: Path) -> None:
            exporter(load_weights(network, model_file), target, window)

        path = cached_export(model_file, kind, export)
    if backend.name == "torchscript":
        return torch.jit.load(str(path), map_location=device)
    if backend.name == "export":
        return torch.export.load(str(path)).module().to(device)
    if backend.name == "onnxruntime":
        from scripts.model.onnx_network import OnnxRuntimeNetwork

        return OnnxRuntimeNetwork(path, num_threads=num_threads)
    from scripts.model.openvino_network import OpenVinoNetwork

    return OpenVinoNetwork(path, num_threads=num_threads, precision=precision)
