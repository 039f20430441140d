"""Token Merging (ToMe; Bolya et al., "Token Merging: Your ViT But Faster", ICLR 2023) on a timm ViT.

Written from the paper's description (and checked against it in ``tests/test_tome.py``):

- In every transformer block that merges, between the attention and the MLP, the tokens are
  split alternately into two sets A (positions 0, 2, 4, ...) and B (1, 3, 5, ...). Each token of A
  is matched to its most similar token of B, similarity being the cosine of the attention *keys*
  averaged over heads. The ``r`` A-tokens with the most similar partners are merged into them
  (several may merge into one B-token); the class token (position 0, in A) is never merged.
  ``r`` is capped at half the unprotected tokens, so a block never removes more than that.
- A merge is a size-weighted average: every token carries the number of patches it stands for
  (``size``, 1 at the start) and a merged token is ``sum(size_i * x_i) / sum(size_i)``.
- Proportional attention: the attention logits get ``+ log(size)`` of each key, so a token that
  stands for ``s`` patches weighs as much as ``s`` copies of itself.
- After a merge the token order is: the unmerged A-tokens (in their original order when the model
  has a class token, so it stays first), then every B-token in order.

``r`` is given per block as a list (:func:`merge_schedule`); TSPM's ToMe-14 merges ``r = 25`` in
the first 23 of ViT-L/16's 24 blocks, which leaves 577 -> 14 tokens (:func:`token_counts`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F


def merge_schedule(r: int, layers: int, depth: int) -> list[int]:
    """``r`` tokens merged in each of the first ``layers`` blocks of a ``depth``-block ViT."""
    if r < 0 or layers < 0:
        raise ValueError(f"ToMe needs r >= 0 and layers >= 0, got r={r}, layers={layers}")
    if layers > depth:
        raise ValueError(f"ToMe cannot merge in {layers} layers of a {depth}-block model")
    return [r] * layers + [0] * (depth - layers)


def capped_r(tokens: int, r: int, protected: int) -> int:
    """How many tokens a block really merges: at most half of the unprotected ones."""
    return max(0, min(r, (tokens - protected) // 2))


def token_counts(tokens: int, schedule: Sequence[int], protected: int = 1) -> list[int]:
    """Token count after each block (``tokens`` going in), e.g. 577 -> ... -> 14 for ToMe-14."""
    out = []
    for r in schedule:
        tokens -= capped_r(tokens, r, protected)
        out.append(tokens)
    return out


@dataclass
class Matching:
    """One block's bipartite matching; indices are into set A (even positions) or B (odd)."""

    kept: torch.Tensor  # (batch, |A| - r): A-tokens that stay
    moved: torch.Tensor  # (batch, r): A-tokens merged away
    into: torch.Tensor  # (batch, r): the B-token each moved token merges into


def bipartite_matching(metric: torch.Tensor, r: int, protect_first: bool) -> Matching | None:
    """Match tokens of ``metric`` (batch, tokens, channels); ``None`` when nothing is merged."""
    r = capped_r(metric.shape[1], r, int(protect_first))
    if r == 0:
        return None
    unit = metric / metric.norm(dim=-1, keepdim=True)
    sim = unit[:, 0::2] @ unit[:, 1::2].transpose(1, 2)  # (batch, |A|, |B|) cosine
    if protect_first:
        sim[:, 0, :] = -math.inf  # the class token never has a partner, so it ranks last
    best, partner = sim.max(dim=-1)
    ranked = best.argsort(dim=-1, descending=True)
    kept = ranked[:, r:]
    if protect_first:
        kept = kept.sort(dim=-1).values  # keep A's order, so the class token stays at position 0
    moved = ranked[:, :r]
    return Matching(kept=kept, moved=moved, into=partner.gather(1, moved))


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))


def merge_weighted(x: torch.Tensor, size: torch.Tensor, m: Matching) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted merge of ``x`` (batch, tokens, C) with sizes (batch, tokens, 1)."""
    both = torch.cat([x * size, size], dim=-1)  # merge sums, then divide: the weighted mean
    a, b = both[:, 0::2], both[:, 1::2]
    b = b.scatter_add(1, m.into[..., None].expand(-1, -1, both.shape[-1]), _take(a, m.moved))
    out = torch.cat([_take(a, m.kept), b], dim=1)
    new_size = out[..., -1:]
    return out[..., :-1] / new_size, new_size


def _attention(attn: torch.nn.Module, x: torch.Tensor, size: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """timm ``Attention`` with proportional attention; also returns the keys averaged over heads."""
    b, n, _ = x.shape
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    q, k, v = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    bias = None if size is None else size.log()[:, None, None, :, 0].to(q.dtype)  # (b, 1, 1, n)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=attn.scale)
    out = out.transpose(1, 2).reshape(b, n, -1)
    out = attn.norm(out) if hasattr(attn, "norm") else out  # timm >= 1.0: optional scale norm
    if gate is not None:
        out = out * gate
    return attn.proj_drop(attn.proj(out)), k.mean(dim=1)


def check_supported(vit: torch.nn.Module) -> None:
    """Raise ``ValueError`` (one line) for timm models this implementation does not cover."""
    from timm.models.vision_transformer import Attention, Block, VisionTransformer

    if not isinstance(vit, VisionTransformer):
        raise ValueError(f"ToMe here needs a timm VisionTransformer, got {type(vit).__name__}")
    if getattr(vit, "reg_token", None) is not None or getattr(vit, "dynamic_img_size", False):
        raise ValueError("ToMe here supports ViTs without register tokens and with a fixed image size")
    for blk in vit.blocks:
        if type(blk) is not Block or type(blk.attn) is not Attention:
            raise ValueError(f"ToMe here supports timm's standard Block/Attention, got {type(blk).__name__}")


def tome_tokens(vit: torch.nn.Module, images: torch.Tensor, schedule: Sequence[int],
                prop_attn: bool = True) -> torch.Tensor:
    """Tokens ``(batch, N, D)`` of a timm ViT run with ToMe: after the final norm, no pooling.

    This is what timm's ``forward`` returns with the head an identity and ``global_pool = None``
    (``norm``, then ``fc_norm``, both kept as the model has them). With every ``r = 0`` it equals
    ``forward_features``.
    """
    if len(schedule) != len(vit.blocks):
        raise ValueError(f"schedule has {len(schedule)} entries for {len(vit.blocks)} blocks")
    protect = vit.cls_token is not None
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
    size: torch.Tensor | None = None
    for blk, r in zip(vit.blocks, schedule):
        out, metric = _attention(blk.attn, blk.norm1(x), size if prop_attn else None)
        x = x + blk.drop_path1(blk.ls1(out))
        m = bipartite_matching(metric, r, protect) if r > 0 else None
        if m is not None:
            x, size = merge_weighted(x, torch.ones_like(x[..., :1]) if size is None else size, m)
        x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    return vit.fc_norm(vit.norm(x))
