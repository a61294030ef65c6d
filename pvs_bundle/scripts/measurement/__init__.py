"""Measurements of segmented PVS: per-PVS census, regional burden from a parcellation, the QC report."""

from types import ModuleType

from scripts import child_module


def __getattr__(name: str) -> ModuleType:
    """A module of this package, imported on first access (``$@scripts.measurement.<module>.<name>`` in a config)."""
    return child_module(__name__, name)
