"""A torch Dataset over arrays already read from a cache (no file access while iterating)."""

from __future__ import annotations

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
