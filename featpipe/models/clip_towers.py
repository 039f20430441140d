"""open_clip image towers of every family: the pooled embedding, patch tokens where a tower has them.

Families and what ``--tokens`` means for each (rows in the embedding space, one per patch, in
row-major grid order; the pooling itself is what is skipped, every per-position layer after the
trunk is applied to each token):

- ``vit``: open_clip's ``VisionTransformer`` (OpenAI/LAION ViTs) without an attentional pooler:
  open_clip's own tokens (``output_tokens=True``: after ``ln_post``, class token removed)
  multiplied by ``visual.proj`` -- PSTP-Net's "patch-level" CLIP features.
- ``timm-vit``: a ``TimmModel`` whose trunk is a timm transformer (SigLIP, EVA, PE): the trunk's
  ``forward_features`` (after its final norm) without the prefix tokens, through ``fc_norm``,
  the trunk head and open_clip's projection head.
- ``none``: ``ModifiedResNet`` (RN50...), timm CNNs (ConvNeXt, FastViT/MobileCLIP), CoCa's
  attentional pooler: no patch tokens in the embedding space; ``--tokens`` is refused at start-up.

The pooled embedding is ``model.encode_image(x, normalize=False)`` (projected, not normalised),
computed in the same forward as the tokens.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from .clip_config import register_configs

log = logging.getLogger("featpipe.clip")
_REPORTED: set[str] = set()
# open_clip messages that describe our own build steps, not the user's model: the weights are
# loaded right after create_model (so its "initialised randomly" is not true), and schema models
# are built from their folder.
_EXPECTED = re.compile(r"No pretrained weights loaded|initialized randomly|initialized partially|"
                       r"no CLIP weights found|Found preferred checkpoint")


@dataclass(frozen=True)
class TowerInfo:
    family: str  # class name of the tower (and of its timm trunk)
    kind: str  # "vit", "timm-vit" or "none"
    embed_dim: int
    token_shape: tuple[int, int] | None  # (patches, dim) when the tower has tokens
    grid: tuple[int, int] | None
    why_no_tokens: str = ""


def tower_kind(visual: nn.Module) -> tuple[str, str]:
    """("vit" | "timm-vit" | "none", why there are no tokens) for an open_clip image tower."""
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        if visual.attn_pool is not None:
            return "none", "its attentional pooler outputs query tokens, not patch tokens"
        if visual.pool_type not in ("tok", "avg"):
            return "none", f"pool_type {visual.pool_type!r} keeps no separate patch tokens"
        return "vit", ""
    if isinstance(visual, TimmModel):
        trunk = visual.trunk
        if "pool" in visual.head:
            return "none", "its attention-pool head is not applied per position"
        if all(hasattr(trunk, a) for a in ("forward_features", "forward_head", "num_prefix_tokens", "fc_norm",
                                           "head_drop", "head")):
            return "timm-vit", ""
        return "none", f"its timm trunk {type(trunk).__name__} is a CNN (a feature map, not patch tokens)"
    return "none", f"{type(visual).__name__} is a CNN (a feature map, not patch tokens)"


class VisualEncoder:
    """Pooled embeddings and, where the tower has them, patch tokens in one forward."""

    def __init__(self, visual: nn.Module, encode_image: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.visual = visual
        self.kind, self.why_no_tokens = tower_kind(visual)
        self._encode_image = encode_image or visual

    def __call__(self, x: torch.Tensor, tokens: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        v = self.visual
        if self.kind == "vit":
            old = v.output_tokens
            v.output_tokens = True
            try:
                pooled, toks = v(x)
            finally:
                v.output_tokens = old
            if not tokens:
                return pooled, None
            if v.final_ln_after_pool:  # open_clip then returns tokens before ln_post
                toks = v.ln_post(toks)
            return pooled, (toks @ v.proj if v.proj is not None else toks)
        if self.kind == "timm-vit":
            trunk = v.trunk
            feats = trunk.forward_features(x)
            pooled = v.head(trunk.forward_head(feats))  # = TimmModel.forward(x)
            if not tokens:
                return pooled, None
            t = feats[:, trunk.num_prefix_tokens:]
            return pooled, v.head(trunk.head(trunk.head_drop(trunk.fc_norm(t))))
        if tokens:
            raise ValueError(f"this tower has no patch tokens: {self.why_no_tokens}")
        out = self._encode_image(x)
        return (out[0] if isinstance(out, tuple) else out), None


def describe_tower(model_cfg: dict) -> TowerInfo:
    """Family, token shape and grid of a config's image tower, from a weightless build on ``meta``."""
    from open_clip.model import _build_vision_tower  # the builder create_model uses

    with torch.device("meta"), library_messages():
        visual = _build_vision_tower(int(model_cfg["embed_dim"]), model_cfg["vision_cfg"],
                                     bool(model_cfg.get("quick_gelu", False)))
    enc = VisualEncoder(visual)
    family = type(visual).__name__ + (f"/{type(visual.trunk).__name__}" if hasattr(visual, "trunk") else "")
    h, w = _image_size(visual)
    x = torch.empty(1, 3, h, w, device="meta")
    with torch.no_grad():
        pooled, toks = enc(x, tokens=enc.kind != "none")
    dim = int(pooled.shape[-1])
    if toks is None:
        return TowerInfo(family, "none", dim, None, None, enc.why_no_tokens)
    if toks.ndim != 3 or toks.shape[-1] != dim:
        return TowerInfo(family, "none", dim, None, None, f"its tokens {tuple(toks.shape[1:])} are not in the "
                                                          f"{dim}-d embedding space")
    grid = visual.grid_size if enc.kind == "vit" else visual.trunk.patch_embed.grid_size
    return TowerInfo(family, enc.kind, dim, (int(toks.shape[1]), dim), (int(grid[0]), int(grid[1])))


def _image_size(visual: nn.Module) -> tuple[int, int]:
    s = visual.image_size
    return (int(s[0]), int(s[-1])) if isinstance(s, (tuple, list)) else (int(s), int(s))


def input_dtype(visual: nn.Module) -> torch.dtype:
    """The dtype the tower's first convolution expects (open_clip's fp16 keeps norms in fp32)."""
    for m in visual.modules():
        if isinstance(m, nn.Conv2d):
            return m.weight.dtype
    return next(visual.parameters()).dtype


# -- building ----------------------------------------------------------------------------------
def build_model(model: str, pretrained_file: str | None, device: str, precision: str,
                force_preprocess: dict | None = None, seed: int = 0) -> nn.Module:
    """open_clip's ``create_model`` then ``load_checkpoint`` -- create_model's own order of steps.

    ``model`` is a registered name or ``local-dir:<folder>``; ``force_preprocess`` carries a tag's
    preprocessing (passing the resolved file instead of the tag would lose it). Random weights
    are seeded without touching the global RNG, so every worker builds the same ones.
    """
    import open_clip

    register_configs()  # FEATPIPE_OPENCLIP_CONFIGS, which the client read as data
    with torch.random.fork_rng(devices=[]), library_messages():
        torch.manual_seed(seed)
        m = open_clip.create_model(model, pretrained=None, load_weights=False, precision=precision, device=device,
                                   force_preprocess_cfg=force_preprocess or None, pretrained_text=False)
        if pretrained_file:
            open_clip.load_checkpoint(m, pretrained_file)
    return m.eval()


class _Collect(logging.Handler, logging.Filter):
    """Keeps the records of open_clip (logged on the root logger) and timm (its own loggers)."""

    def __init__(self, roots: tuple[str, ...]):
        logging.Handler.__init__(self)
        logging.Filter.__init__(self)
        self.roots, self.records = roots, []

    def filter(self, record):  # as the root logger's filter: keep our libraries' records back
        if record.pathname.startswith(self.roots):
            self.records.append(record)
            return False
        return True

    def emit(self, record):  # as the timm logger's handler
        self.records.append(record)


@contextmanager
def library_messages() -> Iterator[None]:
    """Collect what open_clip and timm log or warn while a model is built; report it once per process.

    No logger's level or handlers change for good: a filter on the root logger (open_clip logs
    there) and a handler on ``timm`` hold the records back for the duration, and a NullHandler keeps
    ``logging.warning`` from configuring the root logger by itself. Afterwards each warning that is
    not about featpipe's own build steps goes to the ``featpipe.clip`` logger, the first time only.
    """
    import open_clip
    import timm

    roots = tuple(os.path.dirname(m.__file__) for m in (open_clip, timm))
    root, tlog = logging.getLogger(), logging.getLogger("timm")
    coll, null = _Collect(roots), logging.NullHandler()
    propagate = tlog.propagate
    root.addHandler(null)
    root.addFilter(coll)
    tlog.addHandler(coll)
    tlog.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        root.removeFilter(coll)
        root.removeHandler(null)
        tlog.removeHandler(coll)
        tlog.propagate = propagate
    messages = [(r.levelno, r.getMessage()) for r in coll.records if r.levelno >= logging.WARNING]
    messages += [(logging.WARNING, f"{w.category.__name__}: {w.message}") for w in caught]
    for level, text in messages:
        if not _EXPECTED.search(text) and text not in _REPORTED:
            _REPORTED.add(text)
            log.log(level, "%s", text)


# -- preprocessing -----------------------------------------------------------------------------
def frame_transform(preprocess_cfg: dict) -> Callable:
    """open_clip's inference transform for this configuration (what create_model_and_transforms returns)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)


def preprocess_frames(frames: np.ndarray, transform: Callable) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB frames at their decoded size -> (N, 3, h, w) float32 model input.

    Each frame goes through open_clip's own transform as a PIL image, so the tensors equal
    open_clip's by construction. (torchvision's antialiased uint8 tensor resize is faster but
    1 grey level apart on up to 0.5% of the pixels: bench/bench_clip_preprocess.py.)
    """
    from PIL import Image

    return torch.stack([transform(Image.fromarray(np.ascontiguousarray(f))) for f in frames])
