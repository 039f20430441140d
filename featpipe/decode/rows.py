"""Which computed row each stored row holds: validity masks, padding, and the fill of invalid rows.

A video's output is computed row by row while it decodes. What is stored is decided afterwards,
from what each stream really delivered: a *mask* over the stored rows (True where the row's
segment decoded) and a *take* plan, ``take[i]`` = the computed row stored at row ``i``, or -1 for
zeros. Valid rows hold their own computed row; every other row (padding past the end, a stream
that started late, a hole inside it) holds a copy of a valid row or zeros, by the ``pad`` rule,
so the cache never stores values computed on frames or audio that did not decode.

The plan is an index array, so it is applied the same way to rows held in memory
(:func:`take_rows`) or read back from disk in blocks.
"""

from __future__ import annotations

import numpy as np


def fill_plan(mask: np.ndarray, available: int, pad: str) -> np.ndarray:
    """``take`` for ``len(mask)`` stored rows, of which ``available`` were computed.

    A row is its own when it is valid (``mask``) and was computed. Any other row, with
    ``pad="repeat"`` (MUSIC-AVQA's rule), holds the nearest valid row before it, else the first
    valid row after it; with ``pad="zero"``, or when no row is valid, zeros (-1).
    """
    mask = np.asarray(mask, bool).copy()
    mask[available:] = False
    idx = np.arange(mask.shape[0])
    take = np.where(mask, idx, -1)
    if pad == "zero" or not mask.any():
        return take
    before = np.maximum.accumulate(take)  # nearest valid row at or before i (-1: none yet)
    first = int(idx[mask][0])
    return np.where(before >= 0, before, first)


def take_rows(arr: np.ndarray, take: np.ndarray) -> np.ndarray:
    """Apply a plan to rows held in memory: ``out[i] = arr[take[i]]``, zeros where ``take[i] < 0``."""
    out = np.zeros((take.shape[0], *arr.shape[1:]), arr.dtype)
    own = take >= 0
    out[own] = arr[take[own]]
    return out


def valid_end(mask: np.ndarray) -> int:
    """Rows up to and including the last valid one: the record's ``valid`` (``data[:valid]`` holds
    every decoded row)."""
    hits = np.flatnonzero(mask)
    return int(hits[-1]) + 1 if hits.size else 0


def invalid_runs(mask: np.ndarray) -> list[list[int]]:
    """Half-open ``[start, stop)`` row ranges before :func:`valid_end` that are not valid."""
    end = valid_end(mask)
    bad = ~np.asarray(mask[:end], bool)
    if not bad.any():
        return []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], bad.astype(np.int8), [0]])))
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


def runs_mask(rows: int, valid: int, runs: list[list[int]] | None = None) -> np.ndarray:
    """The mask a cache record describes: rows before ``valid`` are valid except the ``runs``
    (``[start, stop)``) of fill rows; the inverse of :func:`valid_end` and :func:`invalid_runs`."""
    mask = np.arange(rows) < valid
    for start, stop in runs or ():
        mask[max(0, int(start)):max(0, min(int(stop), rows))] = False
    return mask
