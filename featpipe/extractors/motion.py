"""``motion[:grid]``: weight-free visual priors per segment on a ``grid x grid`` spatial grid.

Five frames per segment (at 0.1, 0.3, 0.5, 0.7 and 0.9 of its length) are box-averaged to a
fixed working size (about 64 px square, a multiple of the grid) so the numbers do not depend on
the resolution the decoder happened to deliver. Per cell: motion energy (mean absolute
difference between consecutive sampled frames), mean and standard deviation of CIE Lab colour.
Then a few whole-frame numbers. The layout is :func:`layout`; docs/features.md explains it.
"""

from __future__ import annotations

import json

import numpy as np

from . import register
from .base import Chunk, ExtractOptions, Extractor, ExtractorError, MediaNeeds, OutputSpec
from .priors import layout_string

POSITIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
SHORT_SIDE = 64
DEFAULT_GRID = 4
MAX_GRID = 16
CELL_BLOCKS = ("motion", "L_mean", "a_mean", "b_mean", "L_std", "a_std", "b_std")
GLOBALS = ("motion_mean", "motion_max_pair", "L_global_mean", "L_global_std", "chroma_mean",
           "colourfulness")


def layout(grid: int) -> list[tuple[str, int, int]]:
    """``(name, start, stop)`` slices: seven blocks of ``grid**2`` cells (row-major, top-left
    first), then one slice per global number."""
    out, at, n = [], 0, grid * grid
    for name in CELL_BLOCKS:
        out.append((name, at, at + n))
        at += n
    for name in GLOBALS:
        out.append((name, at, at + 1))
        at += 1
    return out


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of exact area (box) resampling along one axis; rows sum to 1."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo = np.maximum(edges[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges[1:, None], np.arange(n_in)[None, :] + 1)
    w = np.clip(hi - lo, 0.0, None)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] (last axis) to CIE L*a*b* (D65 white): L in [0, 100], a and b about +-100."""
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    eps = (6.0 / 29.0) ** 3
    f = np.where(xyz > eps, np.cbrt(np.maximum(xyz, eps)), xyz / (3 * (6.0 / 29.0) ** 2) + 4.0 / 29.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]),
                     200.0 * (f[..., 1] - f[..., 2])], axis=-1)


@register
class Motion(Extractor):
    """Frame-difference energy and colour statistics on a spatial grid."""

    name = "motion"
    summary = "weight-free motion energy and Lab colour statistics on a spatial grid (default 4x4: 118-d)"
    spec_help = f"motion[:<grid size 1..{MAX_GRID}, default {DEFAULT_GRID}>]"
    examples = ("motion", "motion:2", "motion:8")
    version = "1"
    option_specs = {}  # reads no --set keys

    def __init__(self, args: str, options: ExtractOptions) -> None:
        super().__init__(args, options)
        try:
            self.grid = int(args) if args else DEFAULT_GRID
        except ValueError:
            raise ExtractorError(f"motion takes a grid size (an integer), got {args!r}") from None
        if not 1 <= self.grid <= MAX_GRID:
            raise ExtractorError(f"motion grid size must be 1..{MAX_GRID}, got {self.grid}")
        self.cell = max(4, round(SHORT_SIDE / self.grid))  # working pixels per cell side
        self.size = self.cell * self.grid  # working frame is size x size
        self.layout = layout(self.grid)
        self.dim = self.layout[-1][2]

    def outputs(self) -> list[OutputSpec]:
        attrs = {"layout": json.dumps(self.layout), "grid": self.grid, "work_size": self.size,
                 "positions": json.dumps(POSITIONS), "colour_space": "CIE Lab (D65)",
                 "cell_order": "row-major, top-left first"}
        return [OutputSpec("motion", (self.dim,), "visual", layout=layout_string(self.layout),
                           attrs=attrs)]

    def needs(self) -> MediaNeeds:
        return MediaNeeds(frame_positions=POSITIONS, frame_short_side=SHORT_SIDE)

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        return {"motion": self.compute(chunk).astype(np.float32)}  # the worker casts to the storage dtype

    def _frames(self, chunk: Chunk, pos: float) -> np.ndarray:
        """The frames at ``pos`` resampled to ``(count, size, size, 3)`` float32 in [0, 1]."""
        key = next((k for k in chunk.frames if abs(k - pos) < 1e-6), None)
        if key is None:
            raise ValueError(f"{chunk.video_id}: motion needs frames at position {pos}, "
                             f"got {sorted(chunk.frames)}")
        fr = chunk.frames[key]
        if fr.ndim != 4 or fr.shape[0] != chunk.count or fr.shape[3] != 3:
            raise ValueError(f"{chunk.video_id}: frames at {pos} have shape {fr.shape}, "
                             f"expected ({chunk.count}, H, W, 3)")
        ah = area_matrix(fr.shape[1], self.size)
        aw = area_matrix(fr.shape[2], self.size)
        x = fr.transpose(0, 3, 1, 2).astype(np.float32)  # (n, 3, H, W): big BLAS products below
        x = ah @ (x @ aw.T)  # (n, 3, size, size)
        return x.transpose(0, 2, 3, 1) / np.float32(255.0)

    def compute(self, chunk: Chunk) -> np.ndarray:
        """The ``(chunk.count, dim)`` float64 features, before the cast to the stored dtype."""
        g, c = self.grid, self.cell
        # float64 from here: float32 sums over strided axes drift by ~1e-3, which flat frames show
        rgb = np.stack([self._frames(chunk, p) for p in POSITIONS], axis=1).astype(np.float64)
        # rgb: (n, P, size, size, 3)
        n = chunk.count
        lab = srgb_to_lab(rgb)

        def cells(a: np.ndarray) -> np.ndarray:  # (..., S, S, ch) -> (..., g, g, c*c, ch)
            s = a.shape
            a = a.reshape(s[:-3] + (g, c, g, c, s[-1]))
            a = np.moveaxis(a, -4, -3)  # (..., g, g, c, c, ch)
            return a.reshape(s[:-3] + (g, g, c * c, s[-1]))

        diff = np.abs(rgb[:, 1:] - rgb[:, :-1]).mean(axis=-1, keepdims=True)  # (n, P-1, S, S, 1)
        motion = cells(diff).mean(axis=(1, 4, 5))  # (n, g, g)
        lab_c = np.moveaxis(cells(lab), 1, 3)  # (n, g, g, P, c*c, 3)
        lab_c = lab_c.reshape(n, g, g, -1, 3)
        mean = lab_c.mean(axis=3)  # (n, g, g, 3)
        std = lab_c.std(axis=3)

        out = np.empty((n, self.dim))
        k = g * g
        out[:, 0:k] = motion.reshape(n, k)
        for i in range(3):
            out[:, (1 + i) * k : (2 + i) * k] = mean[..., i].reshape(n, k)
            out[:, (4 + i) * k : (5 + i) * k] = std[..., i].reshape(n, k)
        at = 7 * k
        pair = diff.mean(axis=(2, 3, 4))  # (n, P-1): whole-frame change per pair
        out[:, at] = pair.mean(axis=1)
        out[:, at + 1] = pair.max(axis=1)
        light = lab[..., 0].reshape(n, -1)
        out[:, at + 2] = light.mean(axis=1)
        out[:, at + 3] = light.std(axis=1)
        out[:, at + 4] = np.hypot(lab[..., 1], lab[..., 2]).reshape(n, -1).mean(axis=1)
        # Hasler & Suesstrunk (2003) colourfulness, on 0..255 RGB over all sampled pixels
        r, gr, b = (rgb[..., i].reshape(n, -1) * 255.0 for i in range(3))
        rg, yb = r - gr, 0.5 * (r + gr) - b
        out[:, at + 5] = np.hypot(rg.std(axis=1), yb.std(axis=1)) + 0.3 * np.hypot(
            rg.mean(axis=1), yb.mean(axis=1))
        return out
