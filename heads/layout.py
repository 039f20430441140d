"""What the AVQA heads know about the *inside* of a feature vector, read from the cache's
feature attributes (``cache.info(name).attrs``: ``layout`` and, for grid features, ``grid``).

Two things are read:

- **grid cells** (spatial tokens): a visual feature with a ``grid`` attribute g whose layout has
  blocks of exactly g² dimensions (row-major cells, top-left first; featpipe's ``motion``) gives
  one token per cell with one value per such block;
- **stereo level differences** (audio-spatial cues): an audio feature whose layout has
  ``ild_db`` / ``ild_overall_db`` blocks (featpipe's ``priors``: dB, sign in ``ild_sign``).

and one thing is known only for featpipe's own weight-free features, whose layouts are
documented (docs/features.md): how a **horizontal mirror** of the video changes them. In
``motion`` the columns of every cell block swap and the whole-frame statistics stay; in
``priors`` the level differences change sign and everything else (levels, spectra, onsets,
channel correlation) stays; in ``rhythm`` each left block and its right twin swap (onset rate,
tempo, tempo strength per side) and the mix's cues stay. Any other feature (a CLIP or CLAP embedding, ...) has no known
mirror, and then no mirrored copies are trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

ILD_BLOCKS = ("ild_db", "ild_overall_db")


@dataclass(frozen=True)
class FeatureLayout:
    """One feature's layout: ``blocks`` ``[(name, start, stop)]``, ``grid`` (0 without one),
    ``ild_sign`` (+1 when a positive level difference means louder on the left, -1 the other way,
    0 when the feature has none) and ``family`` (the spec's name before ``:``)."""

    dim: int
    blocks: tuple[tuple[str, int, int], ...] = ()
    grid: int = 0
    ild_sign: int = 0
    family: str = ""

    @property
    def cell_blocks(self) -> list[int]:
        """Starts of the g²-long cell blocks."""
        g2 = self.grid * self.grid
        return [a for _, a, b in self.blocks if self.grid and b - a == g2]

    @property
    def ild_dims(self) -> list[int]:
        return [i for name, a, b in self.blocks if name in ILD_BLOCKS for i in range(a, b)]

    def mirror(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(permutation, sign)`` of this feature's dimensions under a left-right mirror of the
        video (``x_mirrored = x[..., perm] * sign``), or None when it is not known."""
        perm, sign = np.arange(self.dim), np.ones(self.dim, np.float32)
        if self.family == "motion" and self.grid and self.cell_blocks:
            g = self.grid
            for a in self.cell_blocks:
                r, c = np.divmod(np.arange(g * g), g)
                perm[a:a + g * g] = a + r * g + (g - 1 - c)
            return perm, sign
        if self.family == "priors" and self.ild_dims:
            sign[self.ild_dims] = -1.0
            return perm, sign
        if self.family == "rhythm" and self.blocks:
            at = {name: (a, b) for name, a, b in self.blocks}
            pairs = [(n, n.replace("left", "right")) for n in at if "left" in n]
            if not pairs or any(r not in at or at[r][1] - at[r][0] != at[n][1] - at[n][0] for n, r in pairs):
                return None
            for n, r in pairs:
                (a, b), (c, d) = at[n], at[r]
                perm[a:b], perm[c:d] = np.arange(c, d), np.arange(a, b)
            return perm, sign
        return None


def read_layout(info: Any) -> FeatureLayout:
    """The :class:`FeatureLayout` of a feature from its ``cache.info`` record (missing or
    malformed attributes give a layout without blocks)."""
    attrs = getattr(info, "attrs", None) or {}
    dim = int(np.prod(info.shape))
    blocks: tuple = ()
    try:
        raw = attrs.get("layout")
        parsed = json.loads(raw) if isinstance(raw, str) else raw
        blocks = tuple((str(n), int(a), int(b)) for n, a, b in parsed or ())
    except (TypeError, ValueError):
        blocks = ()
    if any(not 0 <= a < b <= dim for _, a, b in blocks):
        blocks = ()
    grid = int(attrs.get("grid", 0) or 0) if len(info.shape) == 1 else 0
    ild = str(attrs.get("ild_sign", ""))
    ild_sign = 0
    if any(n in ILD_BLOCKS for n, _, _ in blocks):
        ild_sign = -1 if "right" in ild.split("louder", 1)[-1] else 1
    family = str(getattr(info, "spec", "") or "").split(":", 1)[0]
    return FeatureLayout(dim, blocks, grid, ild_sign, family)


@dataclass
class StreamLayout:
    """Where the spatial inputs sit in the concatenated audio and visual vectors of a head.

    ``grid``/``cells``: grid size and the starts of the cell blocks in the visual vector (one
    grid for all of them: the first grid feature's); ``ild``: audio dims holding level
    differences, with ``ild_sign``; ``mirror_a``/``mirror_v``: ``(perm, sign)`` lists for the
    whole vectors, or None when some feature has no known mirror."""

    grid: int = 0
    cells: list[int] = field(default_factory=list)
    ild: list[int] = field(default_factory=list)
    ild_sign: int = 1
    mirror_a: tuple[list[int], list[float]] | None = None
    mirror_v: tuple[list[int], list[float]] | None = None

    @property
    def spatial(self) -> bool:
        """Enough for the spatial head: grid cells and some audio."""
        return bool(self.grid and self.cells)

    @property
    def mirrorable(self) -> bool:
        return self.mirror_a is not None and self.mirror_v is not None

    def to_json(self) -> dict:
        return {"grid": self.grid, "cells": self.cells, "ild": self.ild, "ild_sign": self.ild_sign}


def _concat_mirror(layouts: Sequence[FeatureLayout]) -> tuple[list[int], list[float]] | None:
    perm: list[int] = []
    sign: list[float] = []
    off = 0
    for lay in layouts:
        m = lay.mirror()
        if m is None:
            return None
        perm += (m[0] + off).tolist()
        sign += m[1].tolist()
        off += lay.dim
    return perm, sign


def stream_layout(audio: Sequence[FeatureLayout], visual: Sequence[FeatureLayout]) -> StreamLayout:
    """Combine the layouts of the audio and the visual features, in the order they are concatenated."""
    out = StreamLayout()
    off = 0
    for lay in visual:
        if lay.grid and lay.cell_blocks and (not out.grid or lay.grid == out.grid):
            out.grid = lay.grid
            out.cells += [off + a for a in lay.cell_blocks]
        off += lay.dim
    off = 0
    for lay in audio:
        if lay.ild_dims and (not out.ild or lay.ild_sign == out.ild_sign):
            out.ild += [off + i for i in lay.ild_dims]
            out.ild_sign = lay.ild_sign
        off += lay.dim
    if audio or visual:
        out.mirror_a = _concat_mirror(audio) if audio else ([], [])
        out.mirror_v = _concat_mirror(visual) if visual else ([], [])
    return out


def mirror_rows(x: np.ndarray, mirror: tuple[list[int], list[float]]) -> np.ndarray:
    """Apply a ``(perm, sign)`` mirror to the last axis of ``x``."""
    perm, sign = mirror
    return x[..., np.asarray(perm, dtype=np.int64)] * np.asarray(sign, dtype=x.dtype)
