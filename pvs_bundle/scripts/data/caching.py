"""The training and validation datasets: the deterministic preprocessing cached in RAM and, optionally, on disk.

``CacheDataset`` keeps ``cache_rate`` of the cases preprocessed in RAM and preprocesses the rest every epoch.
With ``cache_dir`` set, :class:`DiskCacheDataset` also keeps every case's preprocessed volumes on disk, so the
cases that do not fit in RAM are read from there (no decompression, reorientation, resampling or percentile
scaling), and a second run fills its RAM cache from disk instead of from the NIfTI files.

A cached case is valid for one image/label file content (path, size and modification time) and one
preprocessing: files live in ``cache_dir/<key>/``, where the key hashes the preprocessing ``settings``, the names
of the cached transforms, :data:`CACHE_FORMAT` and the MONAI version; ``settings.json`` in that folder says
what the key stands for. Files are written to a temporary name and renamed, so a killed run leaves no partial
file; an unreadable file is logged and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import monai
import torch
from monai.data import CacheDataset
from monai.transforms import Compose, RandomizableTrait, Transform
from monai.utils import convert_to_tensor

from scripts.io import atomic_write, atomic_write_json

logger = logging.getLogger("pvs_bundle.caching")

# Bump when scripts.data.transforms.preprocessing or the cached training transforms change what they produce.
CACHE_FORMAT = 2  # 2 (0.11.0): label skeletons cut to the label; PVS crop centres by voxel or by component


def _is_random(transform: Callable) -> bool:
    """Where CacheDataset stops caching: at the first random transform or non-MONAI callable."""
    return isinstance(transform, RandomizableTrait) or not isinstance(transform, Transform)


def case_key(case: Mapping[str, Any]) -> str:
    """Hash of a datalist entry and of the size and modification time of every file it names."""
    described = {}
    for name, value in sorted(case.items()):
        described[name] = value
        if isinstance(value, str) and os.path.isfile(value):
            stat = os.stat(value)
            described[name] = [os.path.abspath(value), stat.st_size, stat.st_mtime_ns]
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:32]


class DiskCacheDataset(CacheDataset):
    """A ``CacheDataset`` whose preprocessed cases are also kept in ``cache_dir`` (none: a plain ``CacheDataset``).

    Args:
        data: datalist entries.
        transform: the preprocessing followed by the random transforms (a ``Compose``).
        cache_dir: folder of the disk cache (created); ``None`` for RAM only.
        settings: the configuration the cached part depends on (voxel size, intensity scaling, patch size, ...);
            part of the cache key, written to ``settings.json``.
        **kwargs: ``CacheDataset``'s arguments (``cache_rate``, ``num_workers``, ``copy_cache``, ...).
    """

    def __init__(
        self,
        data: Sequence,
        transform: Compose,
        cache_dir: str | os.PathLike | None = None,
        settings: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.cache_folder: Path | None = None
        if cache_dir is not None:
            cached = transform.transforms[: self._first_random(transform)]
            description = {
                "settings": dict(settings or {}),
                "transforms": [type(t).__name__ for t in cached],
                "cache_format": CACHE_FORMAT,
                "monai": monai.__version__,
            }
            text = json.dumps(description, sort_keys=True, default=str)
            self.cache_folder = Path(cache_dir).expanduser() / hashlib.sha256(text.encode()).hexdigest()[:16]
            self.cache_folder.mkdir(parents=True, exist_ok=True)
            if not (self.cache_folder / "settings.json").is_file():
                atomic_write_json(self.cache_folder / "settings.json", json.loads(text))
            logger.info("Disk cache of preprocessed cases: %s", self.cache_folder)
        super().__init__(data, transform, **kwargs)

    @staticmethod
    def _first_random(transform: Compose) -> int:
        index = transform.get_index_of_first(_is_random)
        return len(transform.transforms) if index is None else index

    def _from_disk(self, index: int) -> dict:
        """The preprocessed case: read from the disk cache, or computed and written there."""
        case = self.data[index]
        path = self.cache_folder / f"{case_key(case)}.pt"
        if path.is_file():
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # a damaged file is recomputed, never trusted
                logger.warning("Unreadable cache file %s (%s); preprocessing %s again.", path, error, case.get("id"))
        item = convert_to_tensor(super()._load_cache_item(index), track_meta=False)
        atomic_write(path, lambda temporary: torch.save(item, temporary))
        return item

    def fill_disk_cache(self) -> int:
        """Preprocess every case that is not on disk yet (before a run with a small ``cache_rate``, say).

        Returns:
            The number of cases in the disk cache.

        Raises:
            ValueError: when the dataset has no ``cache_dir``.
        """
        if self.cache_folder is None:
            raise ValueError("fill_disk_cache needs a cache_dir: set --cache_dir.")
        for index in range(len(self.data)):
            self._from_disk(index)
        return len(self.data)

    def _load_cache_item(self, idx: int):
        """Fill the RAM cache: from the disk cache when there is one."""
        return super()._load_cache_item(idx) if self.cache_folder is None else self._from_disk(idx)

    def _transform(self, index: int):
        """A case outside the RAM cache: read from the disk cache, then the random transforms."""
        if self.cache_folder is None or index % len(self) < self.cache_num:
            return super()._transform(index)
        return self.transform(self._from_disk(index), start=self._first_random(self.transform))
