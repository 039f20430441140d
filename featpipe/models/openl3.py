"""OpenL3 audio embedding network in torch: frontend, network, and the Keras-weights loader.

Re-implemented from the published description and checked against the layer shapes of
marl/openl3 0.4.x (``openl3/models.py``); no TensorFlow is needed. Shapes are channels-first
here, ``(batch, 1, freq, time)``, where Keras uses ``(batch, freq, time, 1)``.

Two frontends turn one 1 s window at 48 kHz into a decibel spectrogram:

* ``"v0.4"`` (default): what openl3 0.4.x computes with kapre 0.3.x: periodic Hann window,
  no centring; mel: n_fft 2048, hop 242, zeros at the end so 199 frames fit, Slaney mel
  filterbank (area-normalised) up to 24 kHz on the *magnitude* spectrum; linear: n_fft 512,
  hop 242, no padding (197 frames).
* ``"v0.3"``: openl3 0.3.x with kapre 0.1.4, the frontend the weights were trained with:
  'same' padding (982 zeros on each side), HTK mel filterbank, ``sqrt(mel @ |X|^2)``.
  The linear frontend is the same in both.

Both end with ``10 * log10(max(x, 1e-10))`` minus the per-example maximum, clipped at -80 dB
(openl3 applies 10*log10 to magnitudes, not 20*log10; kept as is, the weights expect it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 48_000
WINDOW = 48_000  # 1 s analysis window
HOP = 4_800  # 0.1 s between windows
STFT_HOP = 242
BN_EPS = 1e-3  # Keras BatchNormalization default
REPRS = ("linear", "mel128", "mel256")
CONTENTS = ("music", "env")
DIMS = (512, 6144)
FRONTENDS = ("v0.4", "v0.3")
WIDTHS = (64, 64, 128, 128, 256, 256, 512, 512)  # the 8 conv layers, in order

# Final max-pool size per (repr, dim): mel256/linear maps are 32x24 (freq x time), mel128 16x24.
POOL_SIZES = {
    "linear": {512: (32, 24), 6144: (8, 8)},
    "mel128": {512: (16, 24), 6144: (4, 8)},
    "mel256": {512: (32, 24), 6144: (8, 8)},
}
WEIGHTS_URL = "https://github.com/marl/openl3/raw/models/{name}.gz"


class KerasWeightsError(ValueError):
    """The weight file does not hold an OpenL3 audio network of the expected shapes."""


def weight_filename(input_repr: str, content: str) -> str:
    """Official file name, e.g. ``openl3_audio_mel256_music-v0_4_0.h5``."""
    return f"openl3_audio_{input_repr}_{content}-v0_4_0.h5"


def weight_url(input_repr: str, content: str) -> str:
    """Official download (gzipped), from the ``models`` branch of marl/openl3."""
    return WEIGHTS_URL.format(name=weight_filename(input_repr, content))


# ---------------------------------------------------------------------------------- frontend


def _hz_to_mel(f: np.ndarray, htk: bool) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    # Slaney: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
    lin = f / (200.0 / 3.0)
    log = 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: np.ndarray, htk: bool) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    lin = m * (200.0 / 3.0)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


def mel_filterbank(n_mels: int, n_fft: int, sr: int = SAMPLE_RATE, htk: bool = False) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` triangular filters from 0 Hz to ``sr / 2``, area-normalised.

    The same construction as librosa's ``filters.mel`` (what kapre calls). With ``htk=True`` and
    n_fft 2048 the two lowest of 256 bands catch no FFT bin and stay all-zero, as in kapre 0.1.4.
    """
    fft_hz = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0, htk), _hz_to_mel(sr / 2.0, htk), n_mels + 2), htk)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_hz[None, :] - lo) / (mid - lo)
    falling = (hi - fft_hz[None, :]) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(rising, falling))
    fb *= 2.0 / (hi - lo)  # equal area per band ("slaney" norm; kapre 0.1.4's norm=1)
    return fb.astype(np.float32)


class Frontend(nn.Module):
    """``(batch, 48000)`` float32 audio windows -> ``(batch, 1, freq, time)`` dB spectrograms."""

    def __init__(self, input_repr: str, version: str = "v0.4") -> None:
        super().__init__()
        if input_repr not in REPRS:
            raise ValueError(f"input_repr must be one of {REPRS}, not {input_repr!r}")
        if version not in FRONTENDS:
            raise ValueError(f"frontend must be one of {FRONTENDS}, not {version!r}")
        self.input_repr, self.version = input_repr, version
        self.n_fft = 512 if input_repr == "linear" else 2048
        n_frames = math.ceil(WINDOW / STFT_HOP)  # 199: pad_end (v0.4) and 'same' (v0.3) agree
        pad = (n_frames - 1) * STFT_HOP + self.n_fft - WINDOW
        if input_repr == "linear":
            self.pad = (0, 0)
        elif version == "v0.4":
            self.pad = (0, pad)  # tf.signal.stft(pad_end=True)
        else:
            self.pad = (pad // 2, pad - pad // 2)  # TF 'same' padding of kapre 0.1.4's conv STFT
        n = torch.arange(self.n_fft, dtype=torch.float64)
        window = 0.5 - 0.5 * torch.cos(2.0 * math.pi * n / self.n_fft)  # periodic Hann
        self.register_buffer("window", window.float(), persistent=False)
        if input_repr != "linear":
            fb = mel_filterbank(int(input_repr[3:]), self.n_fft, htk=version == "v0.3")
            self.register_buffer("melfb", torch.from_numpy(fb.T.copy()), persistent=False)
        else:
            self.melfb = None

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = F.pad(audio, self.pad) if any(self.pad) else audio
        frames = x.unfold(-1, self.n_fft, STFT_HOP) * self.window  # (B, T, n_fft)
        spec = torch.fft.rfft(frames, n=self.n_fft)  # (B, T, F)
        if self.melfb is None:
            s = spec.abs()
        elif self.version == "v0.4":
            s = spec.abs() @ self.melfb
        else:
            power = spec.real.square() + spec.imag.square()
            s = (power @ self.melfb).sqrt()
        db = 10.0 * torch.log10(s.clamp_min(1e-10))
        db = db - db.amax(dim=(1, 2), keepdim=True)
        return db.clamp_min(-80.0).transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)


# ----------------------------------------------------------------------------------- network


class OpenL3Audio(nn.Module):
    """The OpenL3 audio CNN on spectrograms: ``(B, 1, F, T)`` -> ``(B, dim)``.

    Input batch norm; three blocks of [conv 3x3, BN, ReLU] x 2 + max pool 2x2; conv 512, BN,
    ReLU, conv 512 (``audio_embedding_layer``, no activation); a final max pool sized for
    ``dim``; flattened in Keras' channels-last order.
    """

    def __init__(self, input_repr: str, dim: int) -> None:
        super().__init__()
        if dim not in DIMS:
            raise ValueError(f"dim must be one of {DIMS}, not {dim}")
        self.input_repr, self.dim = input_repr, dim
        self.pool_size = POOL_SIZES[input_repr][dim]
        self.input_bn = nn.BatchNorm2d(1, eps=BN_EPS)
        chans = (1,) + WIDTHS
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1) for i in range(8))
        self.bns = nn.ModuleList(nn.BatchNorm2d(w, eps=BN_EPS) for w in WIDTHS[:-1])

    def keras_layers(self) -> list[tuple[str, nn.Module]]:
        """Layers that carry weights, in the order the Keras file stores them."""
        out: list[tuple[str, nn.Module]] = [("bn", self.input_bn)]
        for i, conv in enumerate(self.convs):
            out.append(("conv", conv))
            if i < len(self.bns):
                out.append(("bn", self.bns[i]))
        return out

    def embedding_map(self, spec: torch.Tensor) -> torch.Tensor:
        """Output of ``audio_embedding_layer``: ``(B, 512, F/8, T/8)``."""
        x = self.input_bn(spec)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.bns):
                x = F.relu(self.bns[i](x))
            if i in (1, 3, 5):
                x = F.max_pool2d(x, 2, 2)  # Keras 'valid': floor
        return x

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = _max_pool_same(self.embedding_map(spec), self.pool_size)
        return x.permute(0, 2, 3, 1).flatten(1)  # channels-last flatten, as Keras' Flatten


def _max_pool_same(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Keras ``MaxPooling2D(size, padding='same')``: stride = size, padding ignored by the max."""
    pads = []
    for n, k in zip(x.shape[-2:], size):
        total = max((math.ceil(n / k) - 1) * k + k - n, 0)
        pads.append((total // 2, total - total // 2))
    if any(sum(p) for p in pads):
        x = F.pad(x, (*pads[1], *pads[0]), value=-math.inf)
    return F.max_pool2d(x, size, size)


# ------------------------------------------------------------------------------ Keras loader


@dataclass(frozen=True)
class KerasLayer:
    """One layer of a Keras weights file that carries weights."""

    name: str
    kind: str  # "bn", "conv" or "other"
    weights: dict[str, np.ndarray]  # "kernel", "bias" / "gamma", "beta", "moving_mean", "moving_variance"


_BN_ORDER = ("gamma", "beta", "moving_mean", "moving_variance")


def read_keras_layers(path: str | Path, load_arrays: bool = True) -> list[KerasLayer]:
    """The weight-carrying layers of a Keras-2 weights-only HDF5 file, in file order.

    Layers are classified by the shapes of their weights (4-D kernel + bias: conv; four equal
    1-D vectors: batch norm), not by name, because Keras' auto-generated names differ between
    versions. With ``load_arrays=False`` only shapes are read (``np.empty`` placeholders).
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise KerasWeightsError(f"{path} is not a readable HDF5 file ({exc.__class__.__name__})") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f  # full-model files nest weights
        if "layer_names" not in root.attrs:
            raise KerasWeightsError(f"{path} is HDF5 but not a Keras weights file (no layer_names attribute)")
        listed = root.attrs["layer_names"]
        if not isinstance(listed, (np.ndarray, list, tuple)) or np.ndim(listed) != 1:
            raise KerasWeightsError(f"{path}: layer_names is not a list of layer names")
        layers = []
        for raw in listed:
            name = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            try:  # a layer listed but absent or damaged (an interrupted copy, a hand-edited file)
                group = root[name]
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])]
                if not names:
                    continue  # activations, pooling, input: no weights
                arrays = [group[n] for n in names]
                data = [np.asarray(a, dtype=np.float32) if load_arrays else np.empty(a.shape, np.float32)
                        for a in arrays]
            except (KeyError, OSError, ValueError, TypeError, AttributeError) as exc:
                raise KerasWeightsError(f"{path}: layer {name!r:.60} listed in layer_names is missing or unreadable "
                                        f"({type(exc).__name__})") from None
            layers.append(_classify(name, names, data))
        return layers


def _classify(name: str, weight_names: list[str], data: list[np.ndarray]) -> KerasLayer:
    shapes = [a.shape for a in data]
    short = [n.rsplit("/", 1)[-1].split(":")[0] for n in weight_names]
    if len(data) == 2 and len(shapes[0]) == 4 and shapes[1] == (shapes[0][3],):
        return KerasLayer(name, "conv", {"kernel": data[0], "bias": data[1]})
    if len(data) == 4 and all(len(s) == 1 for s in shapes) and len(set(shapes)) == 1:
        if set(short) == set(_BN_ORDER):  # named: trust the names over the position
            return KerasLayer(name, "bn", dict(zip(short, data)))
        return KerasLayer(name, "bn", dict(zip(_BN_ORDER, data)))
    return KerasLayer(name, "other", dict(zip(short, data)))


def load_keras_weights(model: OpenL3Audio, path: str | Path) -> None:
    """Copy the weights of an official ``openl3_audio_*.h5`` file into ``model``.

    Layers are matched by order and kind; every shape is checked. A leading kapre layer
    (``*spectrogram*``, present in pre-0.4 files) is skipped: the frontend is computed here.
    Raises :class:`KerasWeightsError` with a one-line reason.
    """
    assign(model, check_layers(model, read_keras_layers(path), path))


def check_layers(model: OpenL3Audio, layers: list[KerasLayer], path: str | Path) -> list[tuple[nn.Module, KerasLayer]]:
    """Pair the model's layers with the file's; raise :class:`KerasWeightsError` on any mismatch."""
    kept = [ly for ly in layers if not (ly.kind == "other" and "spectrogram" in ly.name.lower())]
    expected = model.keras_layers()
    kinds = "".join("B" if k == "bn" else "C" for k, _ in expected)
    got = "".join({"bn": "B", "conv": "C"}.get(ly.kind, "?") for ly in kept)
    if got != kinds:
        raise KerasWeightsError(
            f"{path}: weight layers by kind are {got or 'none'} (B=batch norm, C=conv, ?=other),"
            f" expected {kinds} for an OpenL3 audio network"
        )
    pairs = []
    for i, ((kind, module), layer) in enumerate(zip(expected, kept)):
        if kind == "conv":
            want = {"kernel": (3, 3, module.in_channels, module.out_channels), "bias": (module.out_channels,)}
        else:
            want = {k: (module.num_features,) for k in _BN_ORDER}
        have = {k: tuple(v.shape) for k, v in layer.weights.items()}
        if have != want:
            raise KerasWeightsError(
                f"{path}: layer {i} {layer.name!r} has shapes {have}, expected {want}"
                f" for openl3 {model.input_repr}"
            )
        pairs.append((module, layer))
    named = [i for i, ly in enumerate(kept) if ly.name == "audio_embedding_layer"]
    if named and named != [len(kept) - 1]:  # the one name openl3 sets itself must sit last
        raise KerasWeightsError(f"{path}: 'audio_embedding_layer' is not the last weight layer")
    return pairs


@torch.no_grad()
def assign(model: OpenL3Audio, pairs: list[tuple[nn.Module, KerasLayer]]) -> None:
    """Copy arrays into torch modules (conv kernels (kh, kw, in, out) -> (out, in, kh, kw))."""
    for module, layer in pairs:
        w = layer.weights
        if isinstance(module, nn.Conv2d):
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(w["kernel"].transpose(3, 2, 0, 1))))
            module.bias.copy_(torch.from_numpy(w["bias"]))
        else:
            module.weight.copy_(torch.from_numpy(w["gamma"]))
            module.bias.copy_(torch.from_numpy(w["beta"]))
            module.running_mean.copy_(torch.from_numpy(w["moving_mean"]))
            module.running_var.copy_(torch.from_numpy(w["moving_variance"]))
