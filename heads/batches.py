"""In-memory inputs and their mini-batches (numpy -> torch), plus training statistics.

Everything here works on arrays already in memory (loaded once by :mod:`heads.data`); nothing
reads the cache. A batch is ``(indices, kwargs, targets)``: ``indices`` are positions in the
original sample order (so predictions can be put back in order), ``kwargs`` go to the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

Batch = tuple[np.ndarray, dict, torch.Tensor]


def masked_stats(x: np.ndarray, mask: np.ndarray | None = None, chunk: int | None = None,
                 rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over the last axis of ``x`` (``(N, ..., D)``), counting rows where ``mask``
    (``(N, T)`` for ``(N, T, ..., D)``) is true; ``rows``: only these samples of ``x`` (the
    rest is never copied). ``chunk`` samples at a time (default: about a million values, 2,048
    question rows or 22 videos of 60 x 768): each chunk's mean and variance in one
    float32 pass (float16 token arrays are converted a chunk at a time, never whole), the chunks
    combined in float64 (Chan et al.'s pairwise update). Equal to a float64 computation within
    about 1e-7 of the std (1e-4 for a mean a million stds from zero)."""
    d = x.shape[-1]
    if chunk is None:
        chunk = max(1, (1 << 20) // max(1, int(np.prod(x.shape[1:]))))
    index = None if rows is None else np.asarray(rows)
    n_samples = x.shape[0] if index is None else len(index)
    n = 0
    mean = torch.zeros(d, dtype=torch.float64)
    m2 = torch.zeros(d, dtype=torch.float64)
    for i in range(0, n_samples, chunk):
        sel = slice(i, i + chunk) if index is None else index[i:i + chunk]
        xb = torch.from_numpy(np.ascontiguousarray(x[sel])).float()
        if mask is not None:
            keep = torch.from_numpy(np.ascontiguousarray(mask[sel], dtype=bool))
            xb = xb if bool(keep.all()) else xb[keep]
        flat = xb.reshape(-1, d)
        nb = flat.shape[0]
        if nb == 0:
            continue
        var_b, mean_b = torch.var_mean(flat, dim=0, correction=0)
        delta = mean_b.double() - mean
        total = n + nb
        mean += delta * (nb / total)
        m2 += var_b.double() * nb + delta * delta * (n * nb / total)
        n = total
    if n == 0:
        raise ValueError("no valid rows to compute training statistics from")
    return mean.numpy().astype(np.float32), (m2 / n).sqrt().numpy().astype(np.float32)


def masked_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over valid segments: ``(N, T, ...)`` with ``(N, T)`` mask -> ``(N, ...)`` float32."""
    m = mask.reshape(mask.shape + (1,) * (x.ndim - 2)).astype(np.float32)
    total = (np.asarray(x, dtype=np.float32) * m).sum(1)
    return total / np.maximum(m.sum(1), 1.0)


def _t(x: np.ndarray) -> torch.Tensor:
    # torch's cast: numpy converts float16 (token arrays) element by element, 4 to 10x slower
    return torch.from_numpy(np.ascontiguousarray(x)).float()


@dataclass
class AvqaArrays:
    """One question set in memory. Video arrays have one row per *video*; ``vid`` maps each
    question to its row. ``y`` is the answer index, -1 when unknown to the vocabulary."""

    q: np.ndarray  # (N, Dq) float32
    vid: np.ndarray  # (N,) int
    y: np.ndarray  # (N,) int64
    a: np.ndarray | None = None  # (V, T, Da)
    v: np.ndarray | None = None  # (V, T, Dv)
    tok: np.ndarray | None = None  # (V, T, P, Dt), float16 to save memory
    mask_a: np.ndarray | None = None  # (V, T) bool
    mask_v: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)


class AvqaBatches:
    """Mini-batches of questions. With video inputs, a batch is a set of whole videos with all
    their questions (about 5 per MUSIC-AVQA video), so each video's segments are projected once
    per batch instead of once per question; the video order is reshuffled every epoch."""

    def __init__(self, data: AvqaArrays, batch_size: int, use_video: bool = True) -> None:
        self.d = data
        self.batch_size = batch_size
        self.use_video = use_video and any(x is not None for x in (data.a, data.v, data.tok))
        order = np.argsort(data.vid, kind="stable")
        cuts = np.flatnonzero(np.diff(data.vid[order])) + 1
        self.groups = np.split(order, cuts) if len(order) else []

    def __len__(self) -> int:
        return len(self.d)

    def _make(self, idx: np.ndarray) -> Batch:
        d = self.d
        kw = {"q": _t(d.q[idx])}
        if self.use_video:
            videos, local = np.unique(d.vid[idx], return_inverse=True)
            kw["vid"] = torch.from_numpy(local.astype(np.int64))
            for name in ("a", "v", "tok"):
                arr = getattr(d, name)
                if arr is not None:
                    kw[name] = _t(arr[videos])
            for name in ("mask_a", "mask_v"):
                m = getattr(d, name)
                if m is not None:
                    kw[name] = torch.from_numpy(m[videos])
        return idx, kw, torch.from_numpy(d.y[idx].astype(np.int64))

    def _chunks(self, groups: list[np.ndarray]) -> Iterator[np.ndarray]:
        cur: list[np.ndarray] = []
        size = 0
        for g in groups:
            cur.append(g)
            size += len(g)
            if size >= self.batch_size:
                yield np.concatenate(cur)
                cur, size = [], 0
        if cur:
            yield np.concatenate(cur)

    def train(self, rng: np.random.Generator) -> Iterator[Batch]:
        if self.use_video:
            chunks = self._chunks([self.groups[i] for i in rng.permutation(len(self.groups))])
        else:
            perm = rng.permutation(len(self.d))
            chunks = (perm[i:i + self.batch_size] for i in range(0, len(perm), self.batch_size))
        for idx in chunks:
            yield self._make(idx)

    def eval(self) -> Iterator[Batch]:
        if self.use_video:
            for idx in self._chunks(self.groups):
                yield self._make(idx)
        else:
            for i in range(0, len(self.d), self.batch_size):
                yield self._make(np.arange(i, min(i + self.batch_size, len(self.d))))


class ClipBatches:
    """Mini-batches of clips: per-feature pooled vectors ``(N, D_f)`` (MLP) or sequences
    ``(N, T, D_f)`` with a shared ``(N, T)`` mask (attention head)."""

    def __init__(self, feats: list[np.ndarray], y: np.ndarray, batch_size: int,
                 mask: np.ndarray | None = None) -> None:
        self.feats, self.y, self.mask, self.batch_size = feats, y, mask, batch_size

    def __len__(self) -> int:
        return len(self.y)

    def _make(self, idx: np.ndarray) -> Batch:
        kw: dict = {"feats": [_t(f[idx]) for f in self.feats]}
        if self.mask is not None:
            kw["mask"] = torch.from_numpy(self.mask[idx])
        return idx, kw, torch.from_numpy(self.y[idx].astype(np.int64))

    def train(self, rng: np.random.Generator) -> Iterator[Batch]:
        perm = rng.permutation(len(self.y))
        starts = list(range(0, len(perm), self.batch_size))
        if len(starts) > 1 and len(perm) - starts[-1] == 1:
            starts.pop()  # never a batch of one: batch norm cannot train on it
        for j, s in enumerate(starts):
            e = starts[j + 1] if j + 1 < len(starts) else len(perm)
            yield self._make(perm[s:e])

    def eval(self) -> Iterator[Batch]:
        for i in range(0, len(self.y), self.batch_size):
            yield self._make(np.arange(i, min(i + self.batch_size, len(self.y))))
