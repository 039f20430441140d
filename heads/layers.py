"""Layer-wise features in the AVQA head: a learned softmax-weighted sum of a feature's layers.

A layer-wise feature (``featpipe extract ... --set layers=all``) stores ``(L+1, D)`` per segment:
the embedding output and every layer, the layer numbers in the feature's ``layers`` attribute.
MARBLE's probing protocol gives such a feature to a probe as ``sum_l softmax(w)_l * x_l`` with
``w`` learned with the probe; :class:`LayerMixHead` does that for the AVQA head.

Layout of the inputs: a stream's vector per segment holds first the ordinary features (as
:mod:`.qa` concatenates them), then each layer-wise feature flattened (``(L+1) * D`` values, layer
after layer). Standardisation statistics are computed over the flattened vector, i.e. per layer
and dimension. The wrapper standardises each layer, mixes the layers and hands the head a stream
of the ordinary features (raw, standardised by the head as before: the spatial head reads stereo
cues from the raw values) followed by the mixed ``D`` values.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .estimators import AvqaHead
from .models import Standardise

Blocks = Sequence[Sequence[int]]  # [(L+1, D), ...] per stream, appended after the ordinary features


def mixed_width(flat: int, blocks: Blocks) -> int:
    """The stream width the head sees: ordinary features plus ``D`` per layer-wise feature."""
    return flat - sum(n * d for n, d in blocks) + sum(d for _, d in blocks)


class LayerMixNet(nn.Module):
    """``inner`` (an AVQA net built for the mixed widths) behind per-stream layer mixing."""

    def __init__(self, inner: nn.Module, flat: dict[str, int], blocks: dict[str, Blocks]) -> None:
        super().__init__()
        self.inner = inner
        self.blocks = {k: [tuple(b) for b in v] for k, v in blocks.items() if v}
        self.plain = {k: flat[k] - sum(n * d for n, d in v) for k, v in self.blocks.items()}
        self.mix = nn.ParameterDict(
            {f"{k}{i}": nn.Parameter(torch.zeros(n)) for k, v in self.blocks.items() for i, (n, _) in enumerate(v)}
        )
        for key in ("q", "a", "v", "t"):  # set_stats() finds each stream's standardiser here
            if key in self.blocks:
                setattr(self, f"{key}_std", Standardise(flat[key]))
            elif hasattr(inner, f"{key}_std"):
                setattr(self, f"{key}_std", getattr(inner, f"{key}_std"))

    def sync_stats(self) -> None:
        """Give the inner head the statistics of the ordinary features (the mixed part is left as is)."""
        with torch.no_grad():
            for k, plain in self.plain.items():
                outer, inner = getattr(self, f"{k}_std"), getattr(self.inner, f"{k}_std")
                inner.mean.zero_()
                inner.std.fill_(1.0)
                inner.mean[:plain] = outer.mean[:plain]
                inner.std[:plain] = outer.std[:plain]

    def weights(self) -> dict[str, list[list[float]]]:
        """The learned layer weights (softmax), per stream and layer-wise feature."""
        return {
            k: [torch.softmax(self.mix[f"{k}{i}"].detach(), 0).tolist() for i in range(len(v))]
            for k, v in self.blocks.items()
        }

    def _mixed(self, key: str, x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None or key not in self.blocks:
            return x
        std = getattr(self, f"{key}_std")
        parts, off = [x[..., : self.plain[key]]], self.plain[key]
        for i, (n, d) in enumerate(self.blocks[key]):
            sl = slice(off, off + n * d)
            z = (x[..., sl].float() - std.mean[sl]) / std.std[sl]
            w = torch.softmax(self.mix[f"{key}{i}"], 0)
            parts.append(torch.einsum("...ld,l->...d", z.reshape(*x.shape[:-1], n, d), w))
            off += n * d
        return torch.cat(parts, dim=-1)

    def forward(self, q: torch.Tensor, vid: torch.Tensor, a=None, v=None, tok=None, mask_a=None, mask_v=None):
        kw = {"a": self._mixed("a", a), "v": self._mixed("v", v), "mask_a": mask_a, "mask_v": mask_v}
        if tok is not None:
            kw["tok"] = tok
        return self.inner(q, vid, **kw)


class LayerMixHead(AvqaHead):
    """:class:`.estimators.AvqaHead` whose audio / visual streams may end in layer-wise features:
    ``layer_blocks`` ``{"a": [[L+1, D], ...], "v": [...]}`` (fixed by the features, not a
    hyperparameter). Without blocks it is the plain head, bit for bit."""

    def __init__(
        self,
        hidden: int = 128,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 64,
        max_epochs: int = 30,
        patience: int = 30,
        schedule: str = "cosine",
        arch: str = "auto",
        pointers: int = 2,
        layout: dict | None = None,
        seed: int = 0,
        verbose: bool = False,
        layer_blocks: dict | None = None,
    ) -> None:
        super().__init__(
            hidden,
            dropout,
            lr,
            weight_decay,
            batch_size,
            max_epochs,
            patience,
            schedule,
            arch,
            pointers,
            layout,
            seed,
            verbose,
        )
        self.layer_blocks = layer_blocks

    def _blocks(self) -> dict[str, list]:
        return {k: [list(b) for b in v] for k, v in (self.layer_blocks or {}).items() if v}

    def _dims(self, d: Any) -> dict:
        dims = super()._dims(d)
        if self._blocks():
            dims["layer_blocks"] = self._blocks()
        return dims

    def _net(self, dims: dict) -> nn.Module:
        blocks = dims.get("layer_blocks") or {}
        if not blocks:
            return super()._net(dims)
        inner_dims = dict(dims)
        for k, b in blocks.items():
            inner_dims[k] = mixed_width(dims[k], b)
        inner = super()._net(inner_dims)
        return LayerMixNet(inner, {"a": dims["a"], "v": dims["v"]}, blocks)

    def _fit_net(self, dims, stats, train, val):
        def with_sync(net: nn.Module) -> None:
            stats(net)
            if isinstance(net, LayerMixNet):
                net.sync_stats()

        return super()._fit_net(dims, with_sync, train, val)

    def layer_weights(self) -> dict[str, list[list[float]]]:
        """Learned softmax weights per stream and layer-wise feature (empty without any)."""
        return self.net_.weights() if isinstance(self.net_, LayerMixNet) else {}


def flatten_layers(x: np.ndarray) -> np.ndarray:
    """``(V, T, L+1, D)`` -> ``(V, T, (L+1) * D)``, layer after layer."""
    return x.reshape(*x.shape[:2], -1)
