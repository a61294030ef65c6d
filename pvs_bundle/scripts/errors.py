"""How a failed workflow ends, and the console noise the bundle filters.

MONAI wraps whatever a config component raises (``RuntimeError: Failed to instantiate component …``, ``Failed to
evaluate ConfigExpression …``), so the bundle's own message would sit inside a long chained traceback. Each
workflow's first step, :func:`configure`, (and each command-line module, when it starts) installs
:func:`excepthook`: an uncaught exception ends the run with its innermost :class:`BundleError` (else the
innermost exception of the chain: the one that says what went wrong) as one line on stderr,
``pvs_bundle: error: <message>``, and a non-zero exit code; the full traceback goes to a log file, named on the
line before, and to stderr only with ``--debug true`` on the command line. :func:`configure`, the first step of
each workflow (not of ``initialize``: MONAI puts the bundle root on ``sys.path`` only when the workflow runs, so
``scripts`` cannot be imported there when a run starts from another folder), puts that log in the run's
``output_dir`` when the folder exists (a run that fails before writing anything leaves no folder behind; its log
goes to the system's temporary folder).

:func:`quiet` and :func:`configure` filter the warnings and log lines that say nothing to a user of this bundle:
FutureWarnings of the libraries, the TracerWarnings of a traced export (the network is traced with a fixed-size
input and its checks are shape-independent; the export test compares the traced model's output with the eager
one), ignite's "resuming from iteration 0, epoch 0" on a fresh
run and MONAI's "Got new best metric" while evaluating a finished model. MONAI's notice that a config file is code
is printed before any bundle code runs; ``PYTHONWARNINGS="ignore::UserWarning:monai.bundle.scripts"`` hides it.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import traceback
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

logger = logging.getLogger("pvs_bundle")

PREFIX = "pvs_bundle: error: "
LOG_NAME = "pvs_bundle_error.log"


class BundleError(Exception):
    """A failure this bundle explains itself: its message names the file and the fix, and is all a user sees."""


_settings: dict[str, Path | None] = {"log_dir": None}  # the run's output folder, once a workflow names it


def debug_requested(argv: list[str] | None = None) -> bool:
    """True when the command line holds ``--debug true`` (any case), as ``python -m monai.bundle run`` passes it."""
    args = sys.argv if argv is None else argv
    return any(a == "--debug" and i + 1 < len(args) and args[i + 1].lower() == "true" for i, a in enumerate(args))


def root_cause(error: BaseException) -> BaseException:
    """Return the innermost :class:`BundleError` of an exception's chain, else its innermost exception.

    The chain is followed through ``__cause__`` (``raise … from``) and ``__context__`` (raised while handling).
    """
    chain, seen = [], set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    own = [e for e in chain if isinstance(e, BundleError)]
    return own[-1] if own else chain[-1]


def one_line(error: BaseException) -> str:
    """The message a user sees for ``error``: the root cause's text.

    Its type is named too unless it is a BundleError, OSError or ValueError: the bundle raises these with messages
    that name the file and the fix.
    """
    cause = root_cause(error)
    text = str(cause).strip() or type(cause).__name__
    return text if isinstance(cause, BundleError | OSError | ValueError) else f"{type(cause).__name__}: {text}"


def excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    """Print an uncaught exception as one line (see the module docstring); the traceback goes to the log."""
    if issubclass(kind, KeyboardInterrupt) or debug_requested():
        sys.__excepthook__(kind, error, tb)
        return
    full = "".join(traceback.format_exception(kind, error, tb))
    folder = _settings["log_dir"]
    # without an output folder, the shared temporary folder: one log per process, so two failed runs keep theirs
    shared = Path(tempfile.gettempdir()) / f"pvs_bundle_error.{os.getpid()}.log"
    log = folder / LOG_NAME if folder is not None and folder.is_dir() else shared
    try:
        log.write_text(full)
        where = f"full traceback in {log}, or rerun with --debug true"
    except OSError:
        where = "rerun with --debug true for the full traceback"
    sys.stderr.write(f"({where})\n{PREFIX}{one_line(error)}\n")
    sys.stderr.flush()


def install() -> None:
    """Install :func:`excepthook` and :func:`quiet` (by :func:`configure` and the command-line modules)."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = excepthook
    quiet()


def workflow_name(argv: list[str] | None = None) -> str:
    """The workflow being run, as the command line names it (``run inferring`` -> ``inferring``), or "run"."""
    args = sys.argv if argv is None else argv
    if "run" in args[1:2] and len(args) > 2 and not args[2].startswith("-"):
        return args[2]
    return "run"


def configure(output_dir: str | Path, log_best_metric: bool = True, plan: Mapping[str, Any] | None = None) -> None:
    """Set up a workflow's console and error log, and say what it will do (each workflow's first step).

    Args:
        output_dir: a failed run writes its traceback to ``output_dir/pvs_bundle_error.log`` (if the folder exists).
        log_best_metric: whether MONAI's "Got new best metric" lines are shown (not while evaluating a model).
        plan: what the workflow reads and writes (e.g. ``{"data": …, "model": …, "outputs": …}``), logged first.
    """
    install()
    _settings["log_dir"] = Path(output_dir).expanduser()
    if plan:
        logger.info("%s: %s.", workflow_name(), "; ".join(f"{k} {v}" for k, v in plan.items()))
    drop = ["Engine run resuming from iteration 0, epoch 0 "]
    if not log_best_metric:
        drop.append("Got new best metric of ")
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, _DropMessages)]:
            handler.removeFilter(old)
        handler.addFilter(_DropMessages(*drop))


class _DropMessages(logging.Filter):
    """Drop log records whose message starts with one of the given texts."""

    def __init__(self, *starts: str) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.starts)


def quiet() -> None:
    """Filter the warnings and log lines listed in the module docstring."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from torch.jit import TracerWarning
    except ImportError:  # pragma: no cover - every supported torch has it
        return
    warnings.filterwarnings("ignore", category=TracerWarning)
