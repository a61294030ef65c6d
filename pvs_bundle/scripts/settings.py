"""Settings as the command line and the config files give them: flags, test-time augmentation modes, volume index.

``python -m monai.bundle run … --flag false`` hands every value over as a string; these readers accept both the
Python value and its command-line spelling and refuse anything else with a message naming the setting. They are
shared by every stage (a stage reads a setting; none owns it).
"""

from __future__ import annotations

import numpy as np

TTA_MODES: tuple[str, ...] = ("none", "mirror")  # test-time augmentation: none, or the mean over flips
NO_INDEX: tuple[str, ...] = ("null", "none", "")  # volume_index values that mean "no selection"


def as_bool(value: bool | str, name: str) -> bool:
    """Read a flag given as a bool or as the command line spells it ("true"/"false", any case).

    Raises:
        ValueError: for anything else.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{name} must be true or false, not {value!r}.")


def as_volume_index(value: int | str | None) -> int | None:
    """Read ``volume_index`` as the command line gives it: an int, or None/"null" for none.

    Raises:
        ValueError: for a negative number or anything else.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in NO_INDEX):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"volume_index must be a non-negative int or null, not {value!r}.")
    return int(value)
