"""The heads' torch modules. Inputs arrive raw; each model standardises them itself with the
training statistics it holds as buffers, so the statistics travel with the weights.

- :class:`MLPNet`: HEAR-style MLP on pooled clip features (hidden 1024, batch norm, dropout).
- :class:`AttentionNet`: temporal attention pooling over the segment sequence.
- :class:`AvqaNet`: question-guided temporal attention over audio / visual / fused segments,
  audio-guided spatial attention over patch tokens when present.
- :class:`QuestionOnlyNet`: the question-only baseline.

Several cached features are combined either by concatenation (``fusion="concat"``) or by
``"gated"`` fusion: each feature is projected on its own and a per-sample softmax gate weighs them.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

Stats = tuple[torch.Tensor, torch.Tensor]  # (mean, std) over the last axis


class Standardise(nn.Module):
    """``(x - mean) / std`` over the last axis; a std below 1e-6 counts as 1 (constant inputs)."""

    def __init__(self, dim: int, stats: Stats | None = None) -> None:
        super().__init__()
        mean = torch.zeros(dim) if stats is None else torch.as_tensor(stats[0], dtype=torch.float32)
        std = torch.ones(dim) if stats is None else torch.as_tensor(stats[1], dtype=torch.float32)
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", torch.where(std < 1e-6, torch.ones_like(std), std).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def standardised_linear(std: Standardise, lin: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``lin(std(x))`` with the standardisation folded into the weights, ``W / std`` and
    ``b - (W / std) . mean``: one pass over ``x`` (the product) instead of three (subtract,
    divide, product); on MUSIC-AVQA's 390,000 segment rows an epoch that is 7% of the AVQA
    head's time. Equal to the unfolded form within float32 rounding of ``|mean| / std`` times
    the output's scale (features here have means within a few stds of zero)."""
    w = lin.weight / std.std
    return nn.functional.linear(x.float(), w, lin.bias - w @ std.mean)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None, dim: int) -> torch.Tensor:
    """Softmax that gives masked-out positions weight 0 (uniform when a row has none valid)."""
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=dim)


def question_slots(vid: torch.Tensor, V: int) -> tuple[torch.Tensor, int]:
    """Each question's place among its video's questions, and the most questions of one video:
    where :func:`question_pool` stacks them. Computed once per batch for all streams."""
    order = torch.argsort(vid, stable=True)
    counts = torch.bincount(vid, minlength=V)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(vid)
    rank[order] = torch.arange(len(vid)) - first[vid[order]]
    return rank, (int(counts.max()) if len(vid) else 0)


def question_pool(x: torch.Tensor, mask: torch.Tensor, vid: torch.Tensor, query: torch.Tensor,
                  slots: tuple[torch.Tensor, int] | None = None) -> torch.Tensor:
    """Each question's attention pooling of its video's segments: ``x`` (V, T, H) per video,
    ``mask`` (V, T), ``vid`` (B,) the video of each question, ``query`` (B, H) -> (B, H).

    The same numbers as gathering ``x[vid]`` (B, T, H) and two tiny products per question, but
    computed video by video: a video's K questions are stacked (V, K, H) and meet its segments in
    two batched products of V, not B (a MUSIC-AVQA video has about 5 questions), with no copy of
    the segments per question: 5 to 6x faster forward+backward at a batch of 64 questions."""
    V, T, H = x.shape
    rank, K = slots if slots is not None else question_slots(vid, V)
    q = torch.zeros(V, K, H, dtype=query.dtype).index_put((vid, rank), query)
    s = torch.bmm(q, x.transpose(1, 2))[vid, rank] / math.sqrt(H)  # (B, T)
    w = masked_softmax(s, mask[vid], dim=1)
    w = torch.zeros(V, K, T, dtype=w.dtype).index_put((vid, rank), w)
    return torch.bmm(w, x)[vid, rank]


class Fusion(nn.Module):
    """Combine per-feature inputs ``[(..., D_f)]`` into ``(..., out)``."""

    def __init__(self, dims: Sequence[int], out: int, mode: str = "concat") -> None:
        super().__init__()
        if mode not in ("concat", "gated"):
            raise ValueError(f"unknown fusion {mode!r} (concat or gated)")
        self.mode = mode
        if mode == "concat":
            self.proj = nn.Linear(sum(dims), out)
        else:
            self.projs = nn.ModuleList(nn.Linear(d, out) for d in dims)
            self.gate = nn.Linear(out, 1, bias=False)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.mode == "concat":
            return self.proj(torch.cat(list(xs), dim=-1))
        zs = torch.stack([p(x) for p, x in zip(self.projs, xs)], dim=-2)  # (..., F, out)
        w = torch.softmax(self.gate(torch.tanh(zs)), dim=-2)  # per-sample weight of each feature
        return (w * zs).sum(dim=-2)


class MLPNet(nn.Module):
    """HEAR-style: ``layers`` hidden layers of ``hidden`` units, batch norm, ReLU, dropout."""

    def __init__(self, dims: Sequence[int], n_classes: int, stats: Sequence[Stats] | None = None,
                 hidden: int = 1024, layers: int = 1, dropout: float = 0.1, fusion: str = "concat") -> None:
        super().__init__()
        self.std = nn.ModuleList(Standardise(d, None if stats is None else stats[i]) for i, d in enumerate(dims))
        self.fuse = Fusion(dims, hidden, fusion)
        body: list[nn.Module] = [nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout)]
        for _ in range(layers - 1):
            body += [nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout)]
        self.body = nn.Sequential(*body)
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.out(self.body(self.fuse([s(x) for s, x in zip(self.std, feats)])))


class AttentionNet(nn.Module):
    """Per-segment fusion -> positions -> multi-head attention pooling over valid segments -> MLP."""

    def __init__(self, dims: Sequence[int], n_classes: int, max_len: int, stats: Sequence[Stats] | None = None,
                 hidden: int = 256, heads: int = 4, dropout: float = 0.1, fusion: str = "concat") -> None:
        super().__init__()
        self.std = nn.ModuleList(Standardise(d, None if stats is None else stats[i]) for i, d in enumerate(dims))
        self.fuse = Fusion(dims, hidden, fusion)
        self.pos = nn.Parameter(torch.zeros(max_len, hidden))
        self.norm = nn.LayerNorm(hidden)
        self.score = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, heads))
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(heads * hidden, hidden), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, feats: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        x = self.fuse([s(f) for s, f in zip(self.std, feats)])  # (B, T, H)
        x = self.norm(x + self.pos[: x.shape[1]])
        w = masked_softmax(self.score(x), mask[..., None], dim=1)  # (B, T, heads)
        pooled = torch.einsum("bth,btd->bhd", w, x).flatten(1)
        return self.mlp(pooled)


class QuestionOnlyNet(nn.Module):
    """Question embedding -> 2-layer MLP -> answer logits (no audio, no vision)."""

    def __init__(self, q_dim: int, n_answers: int, q_stats: Stats | None = None,
                 hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.q_std = Standardise(q_dim, q_stats)
        self.mlp = nn.Sequential(nn.Linear(q_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, n_answers))

    def forward(self, q: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        return self.mlp[1:](standardised_linear(self.q_std, self.mlp[0], q))


class AvqaNet(nn.Module):
    """Small spatio-temporal AVQA head.

    Video inputs hold one row per *video* of the batch (``(V, T, D)``), questions index them with
    ``vid``; everything question-independent (projections, spatial attention, AV fusion) runs once
    per video, only the temporal attention runs per question. Streams, each ``(V, T, hidden)``:

    - audio: projected audio segments + position;
    - visual: projected visual segments + position, plus, with patch tokens, audio-guided spatial
      attention over the tokens of each segment (tokens get a learned patch-position vector;
      visual-guided when no audio is cached);
    - fused (when both): MLP of ``[a, v, a*v]`` per segment.

    Each stream is pooled over time by attention with a query computed from the question; the
    pooled streams and the question go through an MLP to the answer logits.
    """

    def __init__(self, q_dim: int, n_answers: int, max_len: int, a_dim: int = 0, v_dim: int = 0,
                 t_dim: int = 0, t_patches: int = 0, stats: dict[str, Stats] | None = None, hidden: int = 128,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if not (a_dim or v_dim or t_dim):
            raise ValueError("the AVQA head needs audio or visual features (use QuestionOnlyNet otherwise)")
        stats = stats or {}
        self.hidden = hidden
        self.q_std = Standardise(q_dim, stats.get("q"))
        self.q_proj = nn.Sequential(nn.Linear(q_dim, hidden), nn.GELU(), nn.Dropout(dropout))
        self.pos = nn.Parameter(torch.zeros(max_len, hidden))
        streams = []
        if a_dim:
            self.a_std = Standardise(a_dim, stats.get("a"))
            self.a_proj = nn.Sequential(nn.Linear(a_dim, hidden), nn.LayerNorm(hidden))
            streams.append("a")
        if v_dim:
            self.v_std = Standardise(v_dim, stats.get("v"))
            self.v_proj = nn.Sequential(nn.Linear(v_dim, hidden), nn.LayerNorm(hidden))
        if t_dim:
            self.t_std = Standardise(t_dim, stats.get("t"))
            self.t_proj = nn.Linear(t_dim, hidden)
            self.patch_pos = nn.Parameter(torch.zeros(t_patches, hidden))  # where each token sits
            self.t_query = nn.Linear(hidden, hidden)
        if v_dim or t_dim:
            streams.append("v")
        if a_dim and (v_dim or t_dim):
            self.fuse = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.GELU())
            streams.append("f")
        self.streams = tuple(streams)
        self.t_queries = nn.ModuleDict({s: nn.Linear(hidden, hidden) for s in streams})
        self.out = nn.Sequential(nn.Linear((1 + len(streams)) * hidden, hidden), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, n_answers))

    def _spatial(self, tok: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """Attention over each segment's tokens with keys and values ``k = W z + b + patch_pos``
        (``z`` the standardised tokens, ``W``, ``b`` of ``t_proj``), computed without projecting
        every token: the scores are ``z . (W^T q) + q . b + q . patch_pos`` and the output
        ``W (sum_p a_p z_p) + b + sum_p a_p patch_pos_p`` (the weights sum to 1). Equal to the
        projected form within float32 rounding, with P x fewer multiplications by ``W`` (ToMe-14:
        14 tokens of 1024 per segment)."""
        W, b = self.t_proj.weight, self.t_proj.bias  # (H, D), (H,)
        mean, inv = self.t_std.mean, 1.0 / self.t_std.std  # z = (tok - mean) * inv
        q = self.t_query(guide)  # (V, T, H)
        u = (q @ W) * inv  # (V, T, D): z . (W^T q) = tok . u - mean . u
        tok = tok.float()
        s = (torch.einsum("vtpd,vtd->vtp", tok, u) - (u * mean).sum(-1, keepdim=True)
             + (q * b).sum(-1, keepdim=True) + q @ self.patch_pos.T) / math.sqrt(self.hidden)
        att = torch.softmax(s, dim=-1)  # (V, T, P)
        zbar = (torch.einsum("vtp,vtpd->vtd", att, tok) - mean) * inv
        return self.t_proj(zbar) + att @ self.patch_pos

    def video_streams(self, a=None, v=None, tok=None, mask_a=None, mask_v=None):
        """Per-video streams ``{name: ((V, T, H), mask (V, T))}``."""
        out = {}
        pos = None
        if a is not None:
            pos = self.pos[: a.shape[1]]
            out["a"] = (self.a_proj[1](standardised_linear(self.a_std, self.a_proj[0], a)) + pos, mask_a)
        if "v" in self.streams:
            T = (v if v is not None else tok).shape[1]
            pos = self.pos[:T]
            x = (self.v_proj[1](standardised_linear(self.v_std, self.v_proj[0], v)) + pos if v is not None
                 else pos.expand(tok.shape[0], T, -1))
            if tok is not None:
                x = x + self._spatial(tok, out["a"][0] if "a" in out else x)
            out["v"] = (x, mask_v)
        if "f" in self.streams:
            (xa, ma), (xv, mv) = out["a"], out["v"]
            out["f"] = (self.fuse(torch.cat([xa, xv, xa * xv], dim=-1)), ma & mv)
        return out

    def forward(self, q: torch.Tensor, vid: torch.Tensor, a=None, v=None, tok=None,
                mask_a=None, mask_v=None) -> torch.Tensor:
        qh = self.q_proj[1:](standardised_linear(self.q_std, self.q_proj[0], q))  # (B, H)
        pooled = [qh]
        slots = None
        for name, (x, m) in self.video_streams(a, v, tok, mask_a, mask_v).items():
            slots = slots or question_slots(vid, x.shape[0])
            pooled.append(question_pool(x, m, vid, self.t_queries[name](qh), slots))
        return self.out(torch.cat(pooled, dim=-1))
