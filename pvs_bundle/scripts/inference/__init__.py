"""Inference stage: input discovery and checks, mask writing, the per-scan PVS burden table."""

from types import ModuleType

from scripts import child_module


def __getattr__(name: str) -> ModuleType:
    """A module of this package, imported on first access (``$@scripts.inference.<module>.<name>`` in a config)."""
    return child_module(__name__, name)
