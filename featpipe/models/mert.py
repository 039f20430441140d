"""MERT-v1 (m-a-p/MERT-v1-95M, -330M) in plain torch: MusicHubert, loaded from the hub folder as published.

No ``trust_remote_code``: MERT's hub code fails on transformers >= 4.48, so featpipe carries this
port, written from the architecture facts of MERT's own code (MARBLE vendors it as
``marble/encoders/MERT/MusicHubert.py``) and of HuBERT, and checked against HuBERT as transformers
computes it (tests/test_mert.py). It imports nothing from transformers, so transformers' internal
changes cannot break it.

Network, from ``config.json`` (``model_type: mert_model``):

- feature encoder: 1-d convolutions ``conv_dim``/``conv_kernel``/``conv_stride`` (no padding, bias
  ``conv_bias``), each followed by GELU; ``feat_extract_norm: group`` puts a GroupNorm with one group
  per channel after the first convolution only, ``layer`` a LayerNorm after each;
- feature projection: LayerNorm (``feat_proj_layer_norm``) then a linear map to ``hidden_size``;
- positional convolution: ``num_conv_pos_embeddings`` taps, ``num_conv_pos_embedding_groups``
  groups, padding half the kernel, weight-normalised over the kernel axis (``weight_g``,
  ``weight_v``), the last output step dropped for an even kernel, GELU, added to the input
  (MERT sets ``conv_pos_batch_norm`` off);
- encoder: post-LN layers (``do_stable_layer_norm: false``: LayerNorm after adding the positional
  term, then per layer attention + residual, LayerNorm, feed-forward + residual, LayerNorm) or
  pre-LN layers (``true``: no LayerNorm before the first layer, LayerNorm at the end).
  ``deepnorm`` scales each residual by ``(2 L)^(1/4)``; ``attention_relax`` changes no value
  (softmax of ``(w/r - max(w/r)) * r`` equals softmax of ``w``). The CQT branch
  (``feature_extractor_cqt``) is not in the published MERT-v1 checkpoints and is refused.

Hidden states (``L + 1``): the input of the first layer (after the positional term and, post-LN,
its LayerNorm), then every layer's output; pre-LN, the last one after the final LayerNorm. That is
what HuBERT's and MERT's ``output_hidden_states=True`` return.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import state_dict as sd

SAMPLE_RATE = 24_000
_ACT = {
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "gelu_new": partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
}
_PREFIXES = ("mert_model.", "music_hubert.", "hubert.", "model.")
_IGNORED = ("masked_spec_embed", "label_embs_concat", "final_proj.")  # pre-training heads, not the encoder

# Published sizes (for random weights at real size: benchmarks, the one-pass check). The 330M model
# has HuBERT-large's shape: 24 pre-LN layers of 1024, LayerNorm in every convolution.
PRESETS = {
    "95M": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
    ),
    "330M": dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    ),
}
DEFAULTS = dict(
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    feat_extract_activation="gelu",
    conv_dim=[512] * 7,
    conv_stride=[5, 2, 2, 2, 2, 2, 2],
    conv_kernel=[10, 3, 3, 3, 3, 2, 2],
    conv_bias=False,
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
    feat_proj_layer_norm=True,
    feature_extractor_cqt=False,
    deepnorm=False,
    attention_relax=-1.0,
    sample_rate=SAMPLE_RATE,
)


class MertConfigError(ValueError):
    """A config.json this port cannot build (one line)."""


def read_config(cfg: dict) -> dict:
    """The config values the network needs (MusicHubert's defaults filled in); one-line errors."""
    if cfg.get("model_type") not in ("mert_model", "music_hubert"):
        raise MertConfigError(f"model_type is {cfg.get('model_type')!r}, not mert_model")
    c = {**DEFAULTS, **PRESETS["95M"], **{k: v for k, v in cfg.items() if k in {**DEFAULTS, **PRESETS["95M"]}}}
    if c["feature_extractor_cqt"]:
        raise MertConfigError(
            "feature_extractor_cqt is set: the CQT branch (not in MERT-v1's published checkpoints) is not supported"
        )
    if c["do_stable_layer_norm"] and c["deepnorm"]:
        raise MertConfigError("deepnorm needs post-LN layers (do_stable_layer_norm false), as in MERT's code")
    for key in ("hidden_act", "feat_extract_activation"):
        if c[key] not in _ACT:
            raise MertConfigError(f"{key}={c[key]!r} is not one of {', '.join(_ACT)}")
    if not len(c["conv_dim"]) == len(c["conv_kernel"]) == len(c["conv_stride"]):
        raise MertConfigError("conv_dim, conv_kernel and conv_stride differ in length")
    return c


class _ConvLayer(nn.Module):
    def __init__(self, c: dict, i: int) -> None:
        super().__init__()
        cin = 1 if i == 0 else c["conv_dim"][i - 1]
        cout = c["conv_dim"][i]
        self.conv = nn.Conv1d(cin, cout, c["conv_kernel"][i], c["conv_stride"][i], bias=c["conv_bias"])
        self.norm = c["feat_extract_norm"] if (c["feat_extract_norm"] == "layer" or i == 0) else ""
        if self.norm == "group":
            self.layer_norm = nn.GroupNorm(cout, cout, affine=True)
        elif self.norm == "layer":
            self.layer_norm = nn.LayerNorm(cout, elementwise_affine=True)
        self.act = _ACT[c["feat_extract_activation"]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm == "group":
            x = self.layer_norm(x)
        elif self.norm == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return self.act(x)


class _PosConv(nn.Module):
    """Grouped convolution with a weight norm over the kernel axis (torch's ``weight_norm(dim=2)``)."""

    def __init__(self, c: dict) -> None:
        super().__init__()
        d, k, g = c["hidden_size"], c["num_conv_pos_embeddings"], c["num_conv_pos_embedding_groups"]
        self.k, self.groups = k, g
        self.weight_g = nn.Parameter(torch.ones(1, 1, k))
        self.weight_v = nn.Parameter(torch.randn(d, d // g, k) / math.sqrt(d // g * k))
        self.bias = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, D, T)
        v = self.weight_v
        w = v * (self.weight_g / v.norm(dim=(0, 1), keepdim=True))
        y = F.conv1d(x, w, self.bias, padding=self.k // 2, groups=self.groups)
        if self.k % 2 == 0:
            y = y[:, :, :-1]
        return F.gelu(y)


class _Attention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (
            p(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        y = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head size), as HuBERT's
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class _FeedForward(nn.Module):
    def __init__(self, c: dict) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(c["hidden_size"], c["intermediate_size"])
        self.output_dense = nn.Linear(c["intermediate_size"], c["hidden_size"])
        self.act = _ACT[c["hidden_act"]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(self.act(self.intermediate_dense(x)))


class _Layer(nn.Module):
    def __init__(self, c: dict) -> None:
        super().__init__()
        d, eps = c["hidden_size"], c["layer_norm_eps"]
        self.attention = _Attention(d, c["num_attention_heads"])
        self.layer_norm = nn.LayerNorm(d, eps=eps)
        self.feed_forward = _FeedForward(c)
        self.final_layer_norm = nn.LayerNorm(d, eps=eps)
        self.pre_ln = bool(c["do_stable_layer_norm"])
        self.alpha = (2.0 * c["num_hidden_layers"]) ** 0.25 if c["deepnorm"] else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_ln:
            x = x + self.attention(self.layer_norm(x))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(self.alpha * x + self.attention(x))
        return self.final_layer_norm(self.alpha * x + self.feed_forward(x))


class _Encoder(nn.Module):
    def __init__(self, c: dict) -> None:
        super().__init__()
        self.pos_conv_embed = nn.Module()
        self.pos_conv_embed.conv = _PosConv(c)
        self.layer_norm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.layers = nn.ModuleList(_Layer(c) for _ in range(c["num_hidden_layers"]))
        self.pre_ln = bool(c["do_stable_layer_norm"])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x + self.pos_conv_embed.conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.pre_ln:
            x = self.layer_norm(x)
        states = [x]
        for layer in self.layers:
            x = layer(x)
            states.append(x)
        if self.pre_ln:
            states[-1] = self.layer_norm(x)
        return states


class MusicHubert(nn.Module):
    """MERT's MusicHubert without the CQT branch: ``(B, n)`` normalised 24 kHz audio -> L+1 states ``(B, T, D)``."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        c = read_config(cfg)
        self.config = c
        self.feature_extractor = nn.Module()
        self.feature_extractor.conv_layers = nn.ModuleList(_ConvLayer(c, i) for i in range(len(c["conv_dim"])))
        self.feature_projection = nn.Module()
        if c["feat_proj_layer_norm"]:
            self.feature_projection.layer_norm = nn.LayerNorm(c["conv_dim"][-1], eps=c["layer_norm_eps"])
        self.feature_projection.projection = nn.Linear(c["conv_dim"][-1], c["hidden_size"])
        self.encoder = _Encoder(c)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = x[:, None]
        for conv in self.feature_extractor.conv_layers:
            h = conv(h)
        h = h.transpose(1, 2)
        proj = self.feature_projection
        if hasattr(proj, "layer_norm"):
            h = proj.layer_norm(h)
        return self.encoder(proj.projection(h))


def _canonical(key: str) -> str:
    for p in _PREFIXES:
        if key.startswith(p):
            key = key[len(p) :]
            break
    return key.replace("pos_conv_embed.conv.parametrizations.weight.original0", "pos_conv_embed.conv.weight_g").replace(
        "pos_conv_embed.conv.parametrizations.weight.original1", "pos_conv_embed.conv.weight_v"
    )


def read_weights(folder: Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors`` or ``pytorch_model.bin`` (``weights_only=True``), keys as the
    port names them; ``mmap`` maps them (a cheap look at names and shapes)."""
    st, pt = folder / "model.safetensors", folder / "pytorch_model.bin"
    if st.is_file():
        from safetensors.torch import load_file

        try:
            raw = load_file(str(st))  # safetensors maps the file: cheap until values are read
        except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one line
            raise sd.StateDictError(f"{st} is not a readable safetensors file ({str(exc)[:160]})") from None
    elif pt.is_file():
        raw = sd.read(pt, mmap=mmap)
    else:
        raise sd.StateDictError(f"{folder} has neither model.safetensors nor pytorch_model.bin")
    return {_canonical(k): v for k, v in raw.items() if not any(_canonical(k).startswith(i) for i in _IGNORED)}


_LAYOUT = "MERT-v1 (HuBERT) keys: feature_extractor.conv_layers.*, feature_projection.*, encoder.*"


def _matched(state: dict[str, torch.Tensor], want: dict[str, torch.Tensor], folder: Path) -> dict[str, torch.Tensor]:
    extra = sorted(set(state) - set(want))
    if extra:
        raise sd.StateDictError(
            f"{folder}: unexpected tensors {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''} "
            f"(expected {_LAYOUT})"
        )
    return sd.checked(state, want, folder, _LAYOUT)


def check(folder: Path, cfg: dict) -> None:
    """Every tensor of the network is in ``folder`` with its shape, and nothing else; cheap (meta model, mapped file)."""
    with torch.device("meta"):
        want = MusicHubert(cfg).state_dict()
    _matched(read_weights(folder, mmap=True), want, folder)


def load(folder: Path, cfg: dict) -> MusicHubert:
    """The network of ``folder`` (float32, eval mode), strictly by key and shape."""
    model = MusicHubert(cfg)
    want = model.state_dict()
    got = _matched(read_weights(folder), want, folder)
    model.load_state_dict({k: v.to(want[k].dtype) for k, v in got.items()})
    return model.eval()


def hub_config(preset: str, **overrides) -> dict:
    """A config.json as m-a-p publishes it, for random weights at the size of ``preset`` (95M or 330M)."""
    return {
        "architectures": ["MERTModel"],
        "model_type": "mert_model",
        "auto_map": {"AutoConfig": "configuration_MERT.MERTConfig", "AutoModel": "modeling_MERT.MERTModel"},
        **DEFAULTS,
        **PRESETS[preset],
        **overrides,
    }


def write_random(folder: Path, cfg: dict, seed: int = 0, safetensors: bool = False) -> Path:
    """A MERT hub folder with random weights: config.json, preprocessor_config.json and the weights
    (``pytorch_model.bin`` with ``weight_g``/``weight_v`` as MERT's, or ``model.safetensors``)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = MusicHubert(cfg)
    for m in model.modules():  # HuBERT-like initialisation: random weights must not be all alike
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            nn.init.normal_(
                m.weight, std=0.02 if isinstance(m, nn.Linear) else math.sqrt(2.0 / (m.in_channels * m.kernel_size[0]))
            )
            if m.bias is not None:
                nn.init.normal_(m.bias, std=0.02)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "do_normalize": True,
                "feature_extractor_type": "Wav2Vec2FeatureExtractor",
                "feature_size": 1,
                "padding_side": "right",
                "padding_value": 0,
                "return_attention_mask": True,
                "sampling_rate": cfg.get("sample_rate", SAMPLE_RATE),
            },
            indent=2,
        )
    )
    if safetensors:
        from safetensors.torch import save_file

        save_file(state, str(folder / "model.safetensors"))
    else:
        torch.save(state, folder / "pytorch_model.bin")
    return folder
