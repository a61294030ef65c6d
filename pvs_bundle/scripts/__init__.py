"""Python helpers of the pvs_bundle MONAI Bundle: what the JSON configs cannot say.

The configs reach them by dotted path (``"_target_": "scripts.data.datalist.load_or_create_datalist"``), which is
resolved when the workflow runs, after MONAI has put the bundle root on ``sys.path``. Importing the package changes
nothing in the importer's process: the workflows install the bundle's one-line errors and warning filters in their
first step (:func:`scripts.errors.configure`), the command-line modules when they start.

Configs also call them in expressions through their id ``scripts`` (``"$__import__('scripts')"``, resolved when first
used): every package here imports its modules on first attribute access (``$@scripts.cpu.auto_workers()``), so
``import scripts`` alone stays cheap.
"""

import importlib
from types import ModuleType


def child_module(package: str, name: str) -> ModuleType:
    """The module ``package.name``, imported on first access (a package's ``__getattr__``, PEP 562).

    Raises:
        AttributeError: ``name`` is a dunder or no module of that name exists in the package.
    """
    if name.startswith("__"):
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    try:
        return importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{package}.{name}":
            raise
        raise AttributeError(f"module {package!r} has no attribute or module {name!r}") from None


def __getattr__(name: str) -> ModuleType:
    """A shared module or stage package, imported on first access (``scripts.cpu``, ``scripts.model``)."""
    return child_module(__name__, name)
