"""Domain-randomised synthetic training data: label maps of anatomy and PVS, rendered into images on the fly."""

from types import ModuleType

from scripts import child_module


def __getattr__(name: str) -> ModuleType:
    """A module of this package, imported on first access (``$@scripts.data.synth.<module>.<name>`` in a config)."""
    return child_module(__name__, name)
