"""Atomic file writes (a result is either absent or whole, never half written) and file hashes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write a file through a temporary file in the same directory, then rename it into place.

    Args:
        path: the destination; its parent directories are created.
        write: a function that writes the whole content to the path it is given.

    Returns:
        The destination path.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        write(Path(tmp))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _json_default(value: Any) -> Any:
    """NumPy scalars and arrays as the plain JSON values they hold (``json.dumps``' ``default``)."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as pretty-printed JSON (indent 4), atomically; NumPy numbers are written as plain numbers."""
    return atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=4, default=_json_default) + "\n"))


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's content, as 64 hex digits, read in chunks.

    Args:
        path: the file to hash.
        chunk_size: bytes read at a time.

    Returns:
        The hex digest.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
