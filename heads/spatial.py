"""The spatio-temporal AVQA head for caches whose visual feature has grid cells (``motion``).

:class:`AvqaSpatialNet` keeps the three question-guided temporal streams of
:class:`heads.models.AvqaNet` (audio, visual, audio-visual fusion) and adds reasoning over
**where** things are:

- **cell tokens**: each grid cell of each segment becomes a token from that cell's values
  (one per cell block of the layout: motion energy, L*a*b* means and spreads) and their change
  since the previous segment (entries and exits), plus a learned cell position and the
  segment's audio (projected) and position;
- **audio-spatial cue**: the stereo level differences (``priors``' ILD per band and overall,
  in dB) are multiplied, per cell, by the cell's horizontal side (+1 at the left edge, -1 at
  the right, with the sign convention of the feature) and fed into the cell token: sound that
  comes from a cell's side raises that cell's value, which is what "the instrument on the left
  is louder" needs;
- **cell objects**: each cell summarised over the video (mean and max of its tokens, plus an
  MLP over its whole time profile, which sees when it starts and stops);
- **question pointers**: ``pointers`` attention queries computed from the question encoding
  (whose slot-value blocks name positions and instruments) each pick cells by softmax;
  per pointer the head reads the pointed object, the pointed cells' tokens pooled over time
  by question-guided temporal attention, and a soft count (sum of sigmoid gates over cells);
  for pairs it reads the difference of the first two objects ("A louder than B") and the
  overlap of the pointers' attention (are "the first to come in" and "the left one" the same
  cell?); the pointed cells' raw inputs averaged over time (and their difference) are read too,
  a short path for the stereo cue;
- **answer**: an MLP over the question, the pooled streams, the pointer readouts, their
  products with the question vector (multiplicative fusion), counts and overlaps.

Everything question-independent runs once per video of a batch (videos ``(V, ...)``, questions
index them with ``vid``), as in :class:`heads.models.AvqaNet`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .models import Stats, Standardise, masked_softmax, question_pool


class AvqaSpatialNet(nn.Module):
    """Question-guided attention over segments and over grid cells (see the module docstring).

    ``grid``: cells per side; ``cells``: starts of the g²-long cell blocks in the visual vector;
    ``ild``: audio dims with stereo level differences in dB, ``ild_sign`` +1 when positive means
    louder on the left."""

    def __init__(self, q_dim: int, n_answers: int, max_len: int, a_dim: int, v_dim: int, grid: int,
                 cells: Sequence[int], ild: Sequence[int] = (), ild_sign: int = 1,
                 stats: dict[str, Stats] | None = None, hidden: int = 128, pointers: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if not (a_dim and v_dim and grid and cells):
            raise ValueError("the spatial AVQA head needs audio and a visual feature with grid cells")
        stats = stats or {}
        H, K, C = hidden, pointers, grid * grid
        self.hidden, self.pointers, self.n_cells, self.n_blocks = H, K, C, len(cells)
        self.register_buffer("cell_idx", torch.tensor([s + c for s in cells for c in range(C)], dtype=torch.long))
        self.register_buffer("ild_idx", torch.tensor(list(ild), dtype=torch.long))
        col = (torch.arange(C) % grid).float()
        # +1 for the leftmost column ... -1 for the rightmost, turned by the feature's sign convention
        self.register_buffer("side", -((col + 0.5) / grid * 2 - 1) * float(ild_sign or 1))
        n_ild = len(ild)
        self.q_std = Standardise(q_dim, stats.get("q"))
        self.a_std = Standardise(a_dim, stats.get("a"))
        self.v_std = Standardise(v_dim, stats.get("v"))
        self.q_proj = nn.Sequential(nn.Linear(q_dim, H), nn.GELU(), nn.Dropout(dropout))
        self.pos = nn.Parameter(torch.zeros(max_len, H))
        # temporal streams, as in AvqaNet
        self.a_proj = nn.Sequential(nn.Linear(a_dim, H), nn.LayerNorm(H))
        self.v_proj = nn.Sequential(nn.Linear(v_dim, H), nn.LayerNorm(H))
        self.fuse = nn.Sequential(nn.Linear(3 * H, H), nn.GELU())
        self.t_queries = nn.ModuleDict({s: nn.Linear(H, H) for s in ("a", "v", "f")})
        # cells
        n_cell = self.n_blocks + n_ild
        self.cell_in = nn.Sequential(nn.Linear(n_cell + self.n_blocks, H), nn.GELU(), nn.Linear(H, H),
                                     nn.LayerNorm(H))
        self.cell_pos = nn.Parameter(torch.randn(C, H) * 0.1)
        self.a_cell = nn.Linear(a_dim, H)
        self.profile = nn.Sequential(nn.Linear(max_len * n_cell, H), nn.GELU(), nn.Linear(H, H))
        self.obj = nn.Sequential(nn.Linear(2 * H, H), nn.GELU(), nn.LayerNorm(H))
        # pointers, straight from the standardised question encoding (its slot values are one-hot)
        self.ptr = nn.Linear(q_dim, K * H)
        self.ptr_time = nn.Linear(H, K * H)
        self.gate_bias = nn.Parameter(torch.zeros(K))
        n_read = 2 * K * H + (H if K >= 2 else 0)  # objects, their time-pooled cells, first - second
        n_pairs = K * (K - 1) // 2
        n_raw = (K + (1 if K >= 2 else 0)) * n_cell  # pointed cells' raw inputs, averaged over time
        n_in = H + 2 * (3 * H + n_read) + K + n_pairs + n_raw
        self.out = nn.Sequential(nn.Linear(n_in, H), nn.GELU(), nn.Dropout(dropout), nn.Linear(H, n_answers))

    def _cells(self, a: torch.Tensor, v_s: torch.Tensor) -> torch.Tensor:
        """Per-segment cell inputs ``(V, T, C, blocks + ild)``: standardised cell values and the
        stereo level differences (raw dB / 10) times each cell's side."""
        V, T, _ = v_s.shape
        cells = v_s[..., self.cell_idx].reshape(V, T, self.n_blocks, self.n_cells).transpose(2, 3)
        if not len(self.ild_idx):
            return cells
        ild = a[..., self.ild_idx].float() / 10.0
        return torch.cat([cells, ild[:, :, None, :] * self.side[None, None, :, None]], dim=-1)

    def forward(self, q: torch.Tensor, vid: torch.Tensor, a: torch.Tensor, v: torch.Tensor,
                mask_a: torch.Tensor, mask_v: torch.Tensor, tok: torch.Tensor | None = None) -> torch.Tensor:
        V, T, _ = v.shape
        H, K = self.hidden, self.pointers
        a_s, v_s = self.a_std(a), self.v_std(v)
        pos = self.pos[:T]
        # per video: cell tokens (V, T, C, H) and cell objects (V, C, H)
        base = self._cells(a, v_s)
        vals = base[..., :self.n_blocks]
        change = vals - torch.cat([vals[:, :1], vals[:, :-1]], dim=1)
        e = (self.cell_in(torch.cat([base, change], dim=-1)) + self.cell_pos
             + (self.a_cell(a_s) + pos)[:, :, None])
        m = mask_v.float()[:, :, None, None]
        mean = (e * m).sum(1) / m.sum(1).clamp(min=1.0)
        top = e.masked_fill(m == 0, -1e4).amax(1)
        prof = base.permute(0, 2, 1, 3).reshape(V, self.n_cells, -1)
        obj = self.obj(torch.cat([mean, top], dim=-1)) + self.cell_pos + self.profile(prof)
        raw = (base * m).sum(1) / m.sum(1).clamp(min=1.0)  # (V, C, blocks + ild): inputs, time-averaged
        # per video: temporal streams (V, T, H)
        xa = self.a_proj(a_s) + pos
        xv = self.v_proj(v_s) + pos
        xf = self.fuse(torch.cat([xa, xv, xa * xv], dim=-1))
        # per question
        qs = self.q_std(q)
        qh = self.q_proj(qs)
        B = q.shape[0]
        pooled = []
        for name, x, mk in (("a", xa, mask_a), ("v", xv, mask_v), ("f", xf, mask_a & mask_v)):
            pooled.append(question_pool(x, mk, vid, self.t_queries[name](qh)))
        ob = obj[vid]  # (B, C, H)
        scores = torch.einsum("bkh,bch->bkc", self.ptr(qs).view(B, K, H), ob) / math.sqrt(H)
        alpha = torch.softmax(scores, dim=-1)
        o = torch.einsum("bkc,bch->bkh", alpha, ob)
        xk = torch.einsum("bkc,btch->bkth", alpha, e[vid])  # the pointed cells, segment by segment
        st = torch.einsum("bkth,bkh->bkt", xk, self.ptr_time(qh).view(B, K, H)) / math.sqrt(H)
        ot = torch.einsum("bkt,bkth->bkh", masked_softmax(st, mask_v[vid][:, None], dim=-1), xk)
        reads = pooled + [o.reshape(B, -1), ot.reshape(B, -1)] + ([o[:, 0] - o[:, 1]] if K >= 2 else [])
        products = [r * qh.repeat(1, r.shape[1] // H) for r in reads]
        counts = torch.sigmoid(scores + self.gate_bias[:, None]).sum(-1)  # (B, K)
        rk = torch.einsum("bkc,bcn->bkn", alpha, raw[vid])
        raws = [rk.reshape(B, -1)] + ([rk[:, 0] - rk[:, 1]] if K >= 2 else [])
        iu = torch.triu_indices(K, K, 1)
        overlap = torch.einsum("bkc,bjc->bkj", alpha, alpha)[:, iu[0], iu[1]]
        return self.out(torch.cat([qh] + reads + products + [counts, overlap] + raws, dim=-1))
