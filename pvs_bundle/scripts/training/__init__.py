"""Training stage: checkpoints and resume, training handlers, experiment tracking."""

from types import ModuleType

from scripts import child_module


def __getattr__(name: str) -> ModuleType:
    """A module of this package, imported on first access (``$@scripts.training.<module>.<name>`` in a config)."""
    return child_module(__name__, name)
