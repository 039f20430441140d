"""The beat-synchronous timeline (``featpipe extract --timeline beats[:N]``): boundaries and pooling.

With the beat timeline a video is still decoded once, on the run's fixed grid (``--fps``: the
*base* grid, segment k = ``[k/fps, (k+1)/fps)``), with the ``rhythm`` extractor in the run.
Its beat times (the ``rhythm-beats`` output of the same decode) give the video's segment
boundaries, and afterwards every output's rows are pooled into those segments:

* edges: 0, then every N-th beat starting at the first one, then the end of the stored span
  (``stored segments / fps``); a segment is ``[edge_k, edge_k+1)``, so the span before the first
  beat is a segment of its own (the pickup), as is the span after the last edge; a pickup or a
  tail shorter than half the median beat-segment length joins its neighbour (a beat found 10 ms
  into the video makes no 10 ms segment);
* pooling: the element-wise mean of every base row whose centre lies in the segment (for patch
  tokens and grid maps each token or cell position is averaged over the rows, positions kept);
  a segment shorter than the base grid that holds no centre takes the row under its middle;
* outputs with their own hop (e.g. OpenL3 at 0.1 s) are pooled the same way by their row
  centres, so every feature of a beat cache has one row per beat segment;
* a segment is valid when it starts before the end of what its stream covered and is not mostly
  fill: at least half of its base rows before that end are valid (a late start or a hole makes
  its base rows fill, :mod:`featpipe.decode.rows`; without those this is the first rule alone);
* a video where fewer than two beats are found falls back to fixed :data:`FALLBACK_S` second
  segments (its record says so), so every video of the cache has boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..contracts import BEATS_OUTPUT

FALLBACK_S = 1.0
"""Segment length (seconds) of a video in which fewer than two beats are found."""
KINDS = ("seconds", "beats")


class TimelineError(ValueError):
    """A ``--timeline`` value that cannot be used; the message is one line."""


@dataclass(frozen=True)
class Timeline:
    """Which segments a run's rows stand for: fixed seconds (the default) or N beats each."""

    kind: str = "seconds"
    per: int = 1  # beats per segment

    @property
    def beats(self) -> bool:
        return self.kind == "beats"

    def as_dict(self) -> dict[str, Any]:
        """What the cache's ``timeline`` attribute and each feature's identity add (nothing for seconds,
        so fixed-second caches and identities stay as they were)."""
        if not self.beats:
            return {}
        return {"kind": "beats", "beats_per_segment": self.per, "fallback_s": FALLBACK_S}

    def __str__(self) -> str:
        return "seconds" if not self.beats else ("beats" if self.per == 1 else f"beats:{self.per}")


def parse_timeline(text: str) -> Timeline:
    """``seconds``, ``beats`` or ``beats:N`` (N >= 1 beats per segment, e.g. 4 for a 4/4 bar)."""
    kind, _, n = text.strip().partition(":")
    if kind not in KINDS or (kind == "seconds" and n):
        raise TimelineError(f"--timeline {text!r}: use seconds, beats or beats:N")
    if not n:
        return Timeline(kind)
    try:
        per = int(n)
    except ValueError:
        per = 0
    if per < 1:
        raise TimelineError(f"--timeline {text!r}: N must be a whole number of beats >= 1")
    return Timeline(kind, per)


def beat_times(rows: np.ndarray, seg_len: float, valid: int | np.ndarray) -> np.ndarray:
    """Sorted beat times (seconds) from ``rhythm-beats`` rows: segment k's offsets plus k * seg_len,
    over the first ``valid`` segments, or the segments a mask marks valid (padding and fill rows
    repeat beats that are not there)."""
    rows = np.asarray(rows, np.float64)
    keep = np.arange(rows.shape[0]) < valid if np.ndim(valid) == 0 else np.asarray(valid, bool)[:rows.shape[0]]
    starts = np.arange(rows.shape[0])[:, None] * seg_len
    beats = (rows + starts)[keep]
    return np.sort(beats[rows[keep] >= 0])


def boundaries(beats: np.ndarray, end: float, per: int = 1) -> tuple[np.ndarray, bool]:
    """``(K, 2)`` float64 (start, end) seconds of each segment over ``[0, end)``, and whether this is
    the fixed-second fallback (fewer than two beats)."""
    beats = np.asarray(beats, np.float64)
    beats = beats[(beats > 0) & (beats < end)]
    if beats.size < 2:
        edges = np.append(np.arange(0.0, end, FALLBACK_S), end)
        fallback = True
    else:
        inner = beats[::per]
        short = 0.5 * float(np.median(np.diff(inner))) if inner.size > 1 else 0.0
        if inner[0] < short:  # pickup too short: the first beat segment starts at 0
            inner = inner[1:]
        if inner.size and end - inner[-1] < short:  # tail too short: the last segment runs to the end
            inner = inner[:-1]
        edges = np.concatenate([[0.0], inner, [end]])
        fallback = False
    edges = np.unique(edges[edges <= end])  # a beat at 0 or at the end makes no empty segment
    if edges.size < 2:
        edges = np.array([0.0, max(end, 1e-9)])
    return np.stack([edges[:-1], edges[1:]], axis=1), fallback


def pool(arr: np.ndarray, centres: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Element-wise mean of the rows of ``arr`` whose ``centres`` (seconds) fall in each segment of
    ``bounds``; a segment holding no centre takes the row nearest its middle. float32."""
    x = np.asarray(arr, np.float32)
    k = bounds.shape[0]
    if x.shape[0] == 0:
        return np.zeros((k, *x.shape[1:]), np.float32)
    seg = np.searchsorted(bounds[:, 0], centres, side="right") - 1
    inside = (seg >= 0) & (centres < bounds[-1, 1])
    sums = np.zeros((k, *x.shape[1:]), np.float64)
    np.add.at(sums, seg[inside], x[inside])
    counts = np.bincount(seg[inside], minlength=k)
    out = sums / np.maximum(counts, 1).reshape(-1, *([1] * (x.ndim - 1)))
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        mids = bounds[empty].mean(axis=1)
        nearest = np.abs(centres[None, :] - mids[:, None]).argmin(axis=1)
        out[empty] = x[nearest]
    return out.astype(np.float32)


def valid_segments(bounds: np.ndarray, covered_s: float) -> int:
    """Segments that start before ``covered_s``, the end of what the recording covers."""
    return int(np.searchsorted(bounds[:, 0], covered_s - 1e-9, side="left"))


def beat_mask(bounds: np.ndarray, centres: np.ndarray, covered_s: float, mask: np.ndarray) -> np.ndarray:
    """Per beat segment, whether it is valid: it starts before ``covered_s`` (:func:`valid_segments`)
    and at least half of its base rows (by centre, as :func:`pool` takes them; the row under its
    middle when it holds none) that lie before the last valid one are valid."""
    mask = np.asarray(mask, bool)
    k = bounds.shape[0]
    ok = np.arange(k) < valid_segments(bounds, covered_s)
    end = int(np.flatnonzero(mask)[-1]) + 1 if mask.any() else 0
    if not mask[:end].all() and centres.shape[0]:  # fill rows inside: the beat segments mostly made of them go
        seg = np.searchsorted(bounds[:, 0], centres, side="right") - 1
        inside = (seg >= 0) & (centres < bounds[-1, 1]) & (np.arange(centres.shape[0]) < end)
        total = np.bincount(seg[inside], minlength=k)
        good = np.bincount(seg[inside], weights=mask[inside], minlength=k)
        for i in np.flatnonzero((total == 0) & ok):  # no base row of its own before the end
            nearest = int(np.abs(centres - bounds[i].mean()).argmin())
            total[i], good[i] = (1, float(mask[nearest])) if nearest < end else (0, 0.0)
        ok &= 2 * good >= total
    return ok


def to_beats(arrays: dict[str, np.ndarray], masks: dict[str, np.ndarray], centres: dict[str, np.ndarray],
             covered: dict[str, float], seg_len: float, stored: int,
             per: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, bool]:
    """Pool one video's base-grid outputs into its beat segments.

    ``arrays``/``masks`` are the video's outputs and their row masks on the base grid
    (``rhythm-beats`` among them, consumed here and not returned); ``centres[name]`` the row
    centres and ``covered[name]`` the seconds the recording covers for each. Returns the pooled
    arrays, their beat-segment masks (:func:`beat_mask`), the ``(K, 2)`` boundaries and whether
    the fallback was taken.
    """
    if BEATS_OUTPUT not in arrays:
        raise TimelineError("the beat timeline needs the rhythm extractor's beats (rhythm-beats) in the run")
    beats = beat_times(arrays[BEATS_OUTPUT], seg_len, masks[BEATS_OUTPUT])
    bounds, fallback = boundaries(beats, stored * seg_len, per)
    out, ok = {}, {}
    for name, arr in arrays.items():
        if name == BEATS_OUTPUT:
            continue
        out[name] = pool(arr, centres[name], bounds).astype(arr.dtype)
        ok[name] = beat_mask(bounds, centres[name], covered[name], masks[name])
    return out, ok, bounds, fallback
