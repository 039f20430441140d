"""BEATs (microsoft/unilm ``beats/``) in torch: its Kaldi fbank, the transformer, the checkpoint file.

Written from the paper (arXiv 2212.09058) and the published architecture, loading the released
checkpoints as they are: ``torch.save({'cfg': dict, 'model': state_dict})`` with unilm's key
names (``patch_embedding``, ``layer_norm``, ``post_extract_proj``, ``encoder.pos_conv.0``,
``encoder.layers.{i}.self_attn...``), read with ``torch.load(weights_only=True)``.

Input (what unilm's ``BEATs.preprocess`` feeds the network): 16 kHz mono scaled by 2**15, a
Kaldi fbank (``torchaudio.compliance.kaldi.fbank`` defaults: 25 ms / 10 ms frames, snip edges,
no dither, DC offset removed, pre-emphasis 0.97, Povey window, 512-point power spectrum, 128
Kaldi mel bins from 20 Hz to 8 kHz, natural log floored at float32's eps), normalised as
``(fbank - 15.41663) / (2 * 6.55582)``. torchaudio cannot be installed beside torch 2.14, so
:func:`kaldi_fbank` computes it here (tests check it against kaldi-native-fbank).

Network: 16x16 patches of the (time, mel) fbank (conv, no bias) -> LayerNorm(512) -> Linear to
768 -> x + GELU(grouped conv positional embedding, weight-normed, kernel 128, the last output
dropped) -> LayerNorm -> 12 post-LN ("deep norm": residual scaled by (2 L)^(1/4)) transformer
layers with a T5-style bucketed relative position bias (computed once, shared by every layer)
scaled per head and query by a GRU-like gate. Tokens are time-major: 8 frequency patches per
160 ms of audio.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16_000
WAVE_SCALE = 2.0**15  # unilm multiplies the [-1, 1] waveform by this before the fbank
FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = 160  # 10 ms
N_FFT = 512  # round_to_power_of_two
N_MELS = 128
LOW_FREQ = 20.0
PREEMPHASIS = 0.97
POVEY_POWER = 0.85
FBANK_MEAN = 15.41663
FBANK_STD = 6.55582
_LOG_FLOOR = float(torch.finfo(torch.float32).eps)

LAYOUT = (
    "unilm BEATs checkpoint {'cfg': dict, 'model': state_dict} (patch_embedding, layer_norm, "
    "post_extract_proj, encoder.pos_conv.0, encoder.layers.N.self_attn...)"
)


class CheckpointError(ValueError):
    """A file that is not a readable BEATs checkpoint (one line)."""


# ---------------------------------------------------------------------------------- fbank


def _kaldi_mel(hz: torch.Tensor | float) -> torch.Tensor:
    return 1127.0 * torch.log1p(torch.as_tensor(hz, dtype=torch.float64) / 700.0)


@functools.lru_cache(maxsize=4)
def mel_banks(n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """``(N_FFT // 2 + 1, n_mels)`` float64: Kaldi's triangles, equal-width in mel from 20 Hz to Nyquist.

    Kaldi weighs FFT bins ``0 .. N_FFT/2 - 1``; the Nyquist bin gets weight 0.
    """
    lo, hi = _kaldi_mel(LOW_FREQ), _kaldi_mel(sample_rate / 2)
    delta = (hi - lo) / (n_mels + 1)
    left = lo + delta * torch.arange(n_mels, dtype=torch.float64)[None, :]
    centre, right = left + delta, left + 2 * delta
    mel = _kaldi_mel(torch.arange(N_FFT // 2, dtype=torch.float64) * (sample_rate / N_FFT))[:, None]
    w = torch.clamp(torch.minimum((mel - left) / (centre - left), (right - mel) / (right - centre)), min=0.0)
    return torch.cat([w, torch.zeros(1, n_mels, dtype=torch.float64)])


@functools.lru_cache(maxsize=1)
def povey_window() -> torch.Tensor:
    n = torch.arange(FRAME_LENGTH, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(2 * math.pi * n / (FRAME_LENGTH - 1))) ** POVEY_POWER


def fbank_frames(samples: int) -> int:
    """Frames Kaldi makes of ``samples`` samples (snip_edges: only whole frames)."""
    return 0 if samples < FRAME_LENGTH else 1 + (samples - FRAME_LENGTH) // FRAME_SHIFT


def kaldi_fbank(wave: torch.Tensor, n_mels: int = N_MELS) -> torch.Tensor:
    """``(..., n)`` waveform (already scaled) -> ``(..., frames, n_mels)`` log mel energies, float32.

    Computed in float64 (torchaudio computes in the input's dtype; the two agree to ~1e-5).
    """
    x = wave.to(torch.float64)
    frames = x.unfold(-1, FRAME_LENGTH, FRAME_SHIFT)  # (..., frames, 400)
    frames = frames - frames.mean(-1, keepdim=True)  # remove_dc_offset
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # the first sample is its own predecessor
    frames = (frames - PREEMPHASIS * previous) * povey_window().to(x.device)
    power = torch.fft.rfft(frames, n=N_FFT).abs() ** 2
    mel = power @ mel_banks(n_mels).to(x.device)
    return torch.clamp(mel, min=_LOG_FLOOR).log().to(torch.float32)


def preprocess(wave16k: torch.Tensor) -> torch.Tensor:
    """``(batch, n)`` 16 kHz audio in [-1, 1] -> ``(batch, frames, 128)`` normalised fbank (BEATs's input)."""
    return (kaldi_fbank(wave16k * WAVE_SCALE) - FBANK_MEAN) / (2 * FBANK_STD)


# ---------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class BEATsConfig:
    """The ``cfg`` keys of a BEATs checkpoint that shape inference (unilm's defaults; the rest is ignored)."""

    input_patch_size: int = 16
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    deep_norm: bool = False
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False
    predictor_class: int = 527

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> BEATsConfig:
        known = {f.name for f in fields(cls)}
        out = cls(**{k: v for k, v in cfg.items() if k in known})
        if out.activation_fn not in _ACTIVATIONS:
            raise CheckpointError(
                f"activation_fn {out.activation_fn!r} is not supported (supported: {', '.join(sorted(_ACTIVATIONS))})"
            )
        if out.encoder_embed_dim % out.encoder_attention_heads:
            raise CheckpointError("encoder_embed_dim is not a multiple of encoder_attention_heads")
        if out.deep_norm and out.layer_norm_first:
            raise CheckpointError("deep_norm and layer_norm_first cannot both be set")
        return out

    @property
    def freq_patches(self) -> int:
        return N_MELS // self.input_patch_size

    @property
    def frame_seconds(self) -> float:
        """Audio time one output frame (one row of patches) advances by: 16 fbank frames = 0.16 s."""
        return self.input_patch_size * FRAME_SHIFT / SAMPLE_RATE

    @property
    def frame_centre(self) -> float:
        """Seconds from a window's first sample to the centre of its first frame's receptive field.

        Patch row 0 reads fbank frames 0..15, i.e. samples [0, 15 * 160 + 400): centre 1400 samples.
        """
        return ((self.input_patch_size - 1) * FRAME_SHIFT + FRAME_LENGTH) / 2 / SAMPLE_RATE


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x.float()).type_as(x)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


_ACTIVATIONS = {
    "gelu": _gelu,
    "relu": F.relu,
    "gelu_accurate": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "tanh": torch.tanh,
    "linear": lambda x: x,
}


# ---------------------------------------------------------------------------------- network


def relative_buckets(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """``(length, length)`` bucket of key j for query i (bidirectional, log-spaced past num_buckets / 4)."""
    pos = torch.arange(length)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    exact = half // 2
    out = (rel > 0).long() * half
    dist = rel.abs()
    # unilm computes this in float32 and truncates; kept so bucket edges fall where its do
    far = (
        exact + (torch.log(dist.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (half - exact)).long()
    )
    far = torch.clamp(far, max=half - 1)
    return out + torch.where(dist < exact, dist, far)


class SelfAttention(nn.Module):
    """unilm's MultiheadAttention as BEATs uses it (self-attention, optional gated relative bias)."""

    def __init__(self, cfg: BEATsConfig, has_bias_table: bool) -> None:
        super().__init__()
        d, h = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.heads, self.head_dim = h, d // h
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.cfg = cfg
        if has_bias_table:
            self.relative_attention_bias = nn.Embedding(cfg.num_buckets, h)
        if cfg.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, h, 1, 1))

    def position_bias(self, length: int) -> torch.Tensor:
        """``(heads, length, length)`` from this layer's table (layer 0's; every layer shares it)."""
        buckets = relative_buckets(length, self.cfg.num_buckets, self.cfg.max_distance)
        return self.relative_attention_bias(buckets.to(self.relative_attention_bias.weight.device)).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        q = self.q_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (b, h, n, dh)
        k = self.k_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        mask = None
        if bias is not None:
            mask = bias[None].to(q.dtype)
            if self.cfg.gru_rel_pos:  # a gate per head and query, from the unscaled query
                g = torch.sigmoid(self.grep_linear(q).view(b, self.heads, n, 2, 4).sum(-1))
                gate = g[..., :1] * (g[..., 1:] * self.grep_a - 1.0) + 2.0  # (b, h, n, 1)
                mask = gate * mask
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(y.transpose(1, 2).reshape(b, n, d))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: BEATsConfig, has_bias_table: bool) -> None:
        super().__init__()
        d = cfg.encoder_embed_dim
        self.self_attn = SelfAttention(cfg, has_bias_table)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act = _ACTIVATIONS[cfg.activation_fn]
        self.pre_ln = cfg.layer_norm_first
        self.alpha = (2.0 * cfg.encoder_layers) ** 0.25 if cfg.deep_norm else 1.0

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.pre_ln:
            x = x + self.self_attn(self.self_attn_layer_norm(x), bias)
            return x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))
        x = self.self_attn_layer_norm(x * self.alpha + self.self_attn(x, bias))
        return self.final_layer_norm(x * self.alpha + self.fc2(self.act(self.fc1(x))))


class WeightNormConv(nn.Module):
    """Conv1d with weight normalisation over dim 2, stored as unilm's ``weight_g`` / ``weight_v``."""

    def __init__(self, d: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.randn(d, d // groups, kernel) / math.sqrt(d // groups * kernel))
        self.bias = nn.Parameter(torch.zeros(d))
        self.padding, self.groups = kernel // 2, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))
        return F.conv1d(x, w, self.bias, padding=self.padding, groups=self.groups)


class Encoder(nn.Module):
    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        self.pos_conv = nn.ModuleList([WeightNormConv(cfg.encoder_embed_dim, cfg.conv_pos, cfg.conv_pos_groups)])
        self.even_kernel = cfg.conv_pos % 2 == 0
        self.layers = nn.ModuleList(
            EncoderLayer(cfg, cfg.relative_position_embedding and i == 0) for i in range(cfg.encoder_layers)
        )
        self.layer_norm = nn.LayerNorm(cfg.encoder_embed_dim)
        self.cfg = cfg

    def forward(self, x: torch.Tensor, keep: frozenset[int]) -> dict[int, torch.Tensor]:
        """Hidden states by index: 0 is the input of the first layer, i the output of layer i."""
        conv = self.pos_conv[0](x.transpose(1, 2))
        if self.even_kernel:  # 'same' padding of an even kernel gives one frame too many: drop the last
            conv = conv[..., :-1]
        x = x + F.gelu(conv).transpose(1, 2)
        if not self.cfg.layer_norm_first:
            x = self.layer_norm(x)
        out = {0: x} if 0 in keep else {}
        bias = self.layers[0].self_attn.position_bias(x.shape[1]) if self.cfg.relative_position_embedding else None
        last = len(self.layers)
        for i, layer in enumerate(self.layers, 1):
            if i > max(keep):
                break
            x = layer(x, bias)
            if i == last and self.cfg.layer_norm_first:
                x = self.layer_norm(x)
            if i in keep:
                out[i] = x
        return out


class BEATs(nn.Module):
    """The BEATs encoder with unilm's module names (a checkpoint's ``model`` loads as is)."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p = cfg.input_patch_size
        self.patch_embedding = nn.Conv2d(1, cfg.embed_dim, kernel_size=p, stride=p, bias=cfg.conv_bias)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        if cfg.embed_dim != cfg.encoder_embed_dim:
            self.post_extract_proj = nn.Linear(cfg.embed_dim, cfg.encoder_embed_dim)
        self.encoder = Encoder(cfg)

    @property
    def num_hidden(self) -> int:
        """Hidden states :meth:`forward` can return: the encoder's input and each layer's output."""
        return self.cfg.encoder_layers + 1

    def forward(self, fbank: torch.Tensor, layers: tuple[int, ...] | None = None) -> torch.Tensor:
        """``(batch, frames, 128)`` normalised fbank -> ``(batch, len(layers), time patches, D)``.

        Each output frame is the mean of the frequency tokens of one time patch (16 fbank frames);
        ``layers`` indexes :attr:`num_hidden` (default: the last).
        """
        layers = (self.cfg.encoder_layers,) if layers is None else tuple(layers)
        p = self.cfg.input_patch_size
        t = fbank.shape[1] // p
        x = self.patch_embedding(fbank[:, None, : t * p])  # (b, E, t, 8)
        b, e, t, f = x.shape
        x = self.layer_norm(x.flatten(2).transpose(1, 2))  # tokens time-major: index = time * 8 + freq
        if hasattr(self, "post_extract_proj"):
            x = self.post_extract_proj(x)
        states = self.encoder(x, frozenset(layers))
        return torch.stack([states[i].view(b, t, f, -1).mean(2) for i in layers], dim=1)


# ---------------------------------------------------------------------------------- checkpoint


def _read(path: str | Path, mmap: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({first[:160]})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("cfg"), dict) or not isinstance(obj.get("model"), dict):
        raise CheckpointError(f"{path} is not a BEATs checkpoint: expected {{'cfg': dict, 'model': state_dict}}")
    return obj["cfg"], obj["model"]


def _rename(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Newer torch's parametrised weight norm names -> unilm's ``weight_g`` / ``weight_v``."""
    alias = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    out = {}
    for k, v in state.items():
        for old, new in alias.items():
            if k.endswith(old):
                k = k[: -len(old)] + new
        out[k] = v
    return out


def _matched(cfg: BEATsConfig, state: dict[str, torch.Tensor], path: str | Path) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        want = BEATs(cfg).state_dict()
    missing = sorted(set(want) - set(state))
    if missing:
        more = " ..." if len(missing) > 3 else ""
        raise CheckpointError(f"{path} lacks {', '.join(missing[:3])}{more} (expected {LAYOUT})")
    for k, v in want.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{path}: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)} for its cfg"
            )
    return {k: state[k] for k in want}  # the predictor of fine-tuned checkpoints and shared copies are not used


def check_checkpoint(path: str | Path) -> BEATsConfig:
    """The config of the checkpoint at ``path`` after checking every tensor's name and shape (mmap, cheap)."""
    cfg_dict, state = _read(path, mmap=True)
    cfg = BEATsConfig.from_dict(cfg_dict)
    _matched(cfg, _rename(state), path)
    return cfg


def load_checkpoint(path: str | Path) -> BEATs:
    """The network of a published BEATs checkpoint, float32, eval mode."""
    cfg_dict, state = _read(path, mmap=False)
    cfg = BEATsConfig.from_dict(cfg_dict)
    model = BEATs(cfg)
    model.load_state_dict({k: v.float() for k, v in _matched(cfg, _rename(state), path).items()})
    return model.eval()


BASE_CFG: dict[str, Any] = {
    "input_patch_size": 16,
    "embed_dim": 512,
    "conv_bias": False,
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "deep_norm": True,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "relative_position_embedding": True,
    "num_buckets": 320,
    "max_distance": 800,
    "gru_rel_pos": True,
    "finetuned_model": False,
}
"""BEATs base as released (iter1-iter3+: 90M parameters); what benchmarks build with random weights."""


def write_random(path: str | Path, cfg: dict[str, Any] | None = None, seed: int = 0) -> Path:
    """A checkpoint in the published layout with random weights (``BASE_CFG`` by default).

    As in unilm's files, the relative-position table shared by every layer is saved under each
    layer's name.
    """
    torch.manual_seed(seed)
    cfg = dict(BASE_CFG if cfg is None else cfg)
    model = BEATs(BEATsConfig.from_dict(cfg))
    state = model.state_dict()
    table = "encoder.layers.0.self_attn.relative_attention_bias.weight"
    if table in state:
        for i in range(1, model.cfg.encoder_layers):
            state[table.replace(".0.", f".{i}.")] = state[table]
    path = Path(path)
    torch.save({"cfg": cfg, "model": state}, path)
    return path


__all__ = [
    "BASE_CFG",
    "BEATs",
    "BEATsConfig",
    "CheckpointError",
    "FBANK_MEAN",
    "FBANK_STD",
    "SAMPLE_RATE",
    "WAVE_SCALE",
    "check_checkpoint",
    "fbank_frames",
    "kaldi_fbank",
    "load_checkpoint",
    "mel_banks",
    "preprocess",
    "write_random",
]
