"""torch Datasets over a cache: every video in memory (:class:`CacheDataset`), or mini-batches
read in bulk from the file as they are asked for (:class:`CacheBatches`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


class CacheDataset(Dataset):
    """Item i: ``{"video_id": id, feature: (T, *shape) float tensor, feature + "_mask": (T,) bool}``."""

    def __init__(self, video_ids: list[str], arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        self.video_ids = video_ids
        self.arrays = {k: (torch.from_numpy(x), torch.from_numpy(m)) for k, (x, m) in arrays.items()}

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, i: int) -> dict:
        item: dict = {"video_id": self.video_ids[i]}
        for name, (x, m) in self.arrays.items():
            item[name] = x[i]
            item[name + "_mask"] = m[i]
        return item


class CacheBatches(Dataset):
    """Item i is mini-batch i, read from the file in bulk when asked for:
    ``{"video_id": [ids], feature: (B, T, *shape) tensor, feature + "_mask": (B, T) bool}``.

    For caches larger than memory, or to overlap reading with training::

        ds = CacheBatches("cache.h5", ["clip", "vggish"], batch_size=64, length=60)
        loader = DataLoader(ds, batch_size=None, shuffle=True, num_workers=2)

    ``batch_size=None`` in the DataLoader: the dataset already batches. A batch is
    ``batch_size`` videos that lie next to each other in the file (commit order), so it is one
    contiguous read per feature; ``shuffle=True`` shuffles the order of the batches each epoch,
    not their members (``regroup(seed)`` draws new members; their rows are then read in
    merged ranges, not one range). ``T`` is ``length`` or each batch's longest video. Each
    DataLoader worker opens the file itself (SWMR, read-only); nothing but the path is pickled.
    """

    def __init__(
        self,
        path: str | Path,
        features: Sequence[str],
        video_ids: Sequence[str] | None = None,
        batch_size: int = 64,
        length: int | None = None,
        dtype: Any = np.float32,
    ) -> None:
        from .reader import open_cache

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.path, self.features = Path(path), list(features)
        self.length, self.dtype, self.batch_size = length, dtype, batch_size
        with open_cache(self.path) as cache:
            ids = list(cache.videos if video_ids is None else video_ids)
            first = cache.info(self.features[0]).name if self.features else None
            # storage order of the first feature: neighbours in a batch are neighbours on disk
            self.video_ids = sorted(ids, key=lambda v: cache._slot(v, first)[0]) if first else ids
        self.regroup(None)
        self._cache = None
        self._pid = None

    def regroup(self, seed: int | None) -> None:
        """Batches of neighbours in the file (``None``), or of a seeded random draw of the videos."""
        ids = self.video_ids if seed is None else list(np.random.default_rng(seed).permutation(self.video_ids))
        self.batches = [ids[i : i + self.batch_size] for i in range(0, len(ids), self.batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def _open(self):
        if self._cache is None or self._pid != os.getpid():  # a forked worker opens its own handle
            from .reader import open_cache

            self._cache, self._pid = open_cache(self.path), os.getpid()
        return self._cache

    def __getitem__(self, i: int) -> dict:
        cache = self._open()
        ids = self.batches[i]
        item: dict = {"video_id": list(ids)}
        for f in self.features:
            x, m = cache.batch(ids, f, self.length, dtype=self.dtype)
            item[f] = torch.from_numpy(x)
            item[f + "_mask"] = torch.from_numpy(m)
        return item

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_cache", "_pid")} | {"_cache": None, "_pid": None}

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None
