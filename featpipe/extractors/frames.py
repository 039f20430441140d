"""Frame-level audio encoders on the segment timeline: windows, frame centres, segment means.

Used by ``mert``, ``hf-audio`` and ``beats``. The rule (docs/features.md, "audio encoders"):

1. **Windows.** The encoder reads windows of ``window`` seconds at its own rate, on an absolute
   grid: window ``j`` *keeps* the frames whose centres fall in ``[j*hop, (j+1)*hop)``, with
   ``hop = window - 2*context``, so every kept frame has at least ``context`` seconds of audio on
   both sides inside its window. Near the recording's ends a window is shifted to stay inside the
   recording (never padded: padding would enter the model and its normalisation); a recording
   shorter than a window is one window. Starts and lengths are multiples of the frame stride, so
   every window's frames lie on one absolute grid.
2. **Frame centres.** Frame ``i`` of a window starting at absolute sample ``s`` is centred at
   ``(s + offset + i*stride) / rate`` seconds, the centre of its receptive field
   (:class:`FrameGeometry`; :func:`conv_geometry` computes it for a strided convolution stack).
3. **Segments.** A segment's row is the mean of the kept frames whose centres fall inside it; a
   segment holding no frame centre (shorter than a frame hop) takes the frame nearest its centre.

Windows depend only on absolute time and the recording's length, so a chunked run equals a
whole-video run exactly; a window shared by two chunks is encoded once (the last few are kept).
How much ``context`` makes a row independent of where windows start: docs/features.md.

API for an encoder: subclass :class:`FramewiseExtractor` and implement :meth:`~FramewiseExtractor.geometry`,
:meth:`~FramewiseExtractor.encode` (``(B, n)`` float32 windows at ``geometry().rate`` ->
``(B, L+1, T, D)`` hidden states: the embedding output, then every layer), ``n_states``, ``dim``
and ``feature_name``; ``--set window=S``, ``context=S``, ``layers=all|last|i,j,...`` (also scoped,
``--set mert.layers=all``) come with the base class.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import Chunk, ExtractOptions, Extractor, ExtractorError, MediaNeeds, Option, OutputSpec
from .rates import audio_at, margin_s


@dataclass(frozen=True)
class FrameGeometry:
    """Where an encoder's output frames sit: frame ``i`` of a window starting at sample ``s`` is
    centred at ``(s + offset + i*stride) / rate`` s; a window needs ``min_samples`` for one frame."""

    rate: int
    stride: int
    offset: float
    min_samples: int = 1

    @property
    def frame_rate(self) -> float:
        return self.rate / self.stride


def conv_geometry(
    rate: int, kernels: list[int] | tuple[int, ...], strides: list[int] | tuple[int, ...]
) -> FrameGeometry:
    """The geometry of a stack of unpadded strided 1-d convolutions (wav2vec2, HuBERT, MERT):
    receptive field ``R = 1 + sum((k_i - 1) * prod(strides before i))`` samples, stride the product,
    frame ``i`` reading samples ``i*stride .. i*stride + R - 1`` and centred on the middle one
    (sample ``n`` is the instant ``n / rate``, as the decoder's segments count samples)."""
    rf, jump = 1, 1
    for k, s in zip(kernels, strides):
        rf += (int(k) - 1) * jump
        jump *= int(s)
    return FrameGeometry(rate, jump, (rf - 1) / 2, rf)


@dataclass(frozen=True)
class Window:
    """One encoder window: absolute samples ``[start, start+length)``, keeping frame centres in
    ``[keep_lo, keep_hi)`` (absolute samples, at the encoder's rate)."""

    start: int
    length: int
    keep_lo: int
    keep_hi: int


def window_samples(window_s: float, context_s: float, geom: FrameGeometry) -> tuple[int, int, int]:
    """``(length, hop, context)`` in samples, each a multiple of the frame stride (hop at least one stride)."""
    s = geom.stride
    ctx = round(context_s * geom.rate / s) * s
    hop = max(s, round((window_s - 2 * context_s) * geom.rate / s) * s)
    return hop + 2 * ctx, hop, ctx


def plan_windows(
    n_total: int, lo: float, hi: float, window_s: float, context_s: float, geom: FrameGeometry
) -> list[Window]:
    """The windows whose kept regions cover frame centres in ``[lo, hi)`` (absolute samples) of a
    recording of ``n_total`` samples, in order, each once."""
    length, hop, ctx = window_samples(window_s, context_s, geom)
    last_start = max(0, (n_total - length) // geom.stride * geom.stride)
    out: list[Window] = []
    for j in range(max(0, math.floor(lo / hop)), math.floor(max(lo, hi - 1e-9) / hop) + 1):
        keep_lo, keep_hi = j * hop, (j + 1) * hop
        if keep_lo >= n_total:
            break
        start = min(max(keep_lo - ctx, 0), last_start)
        out.append(Window(start, min(length, n_total - start), keep_lo, keep_hi))
    return out


def parse_layers(text: str, n_states: int) -> tuple[int, ...]:
    """``all`` (0..L), ``last`` (L) or ``i,j,...`` (each in 0..L; 0 is the embedding output)."""
    text = str(text).strip().lower()
    if text == "all":
        return tuple(range(n_states))
    if text == "last":
        return (n_states - 1,)
    try:
        picked = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise ExtractorError(f"layers={text!r}: use all, last or layer numbers like 4,8,12") from None
    bad = [i for i in picked if not 0 <= i < n_states]
    if bad or not picked or len(set(picked)) != len(picked):
        raise ExtractorError(
            f"layers={text!r}: numbers must be distinct, in 0..{n_states - 1} "
            "(0 is the embedding output, then one per layer)"
        )
    return picked


def pool_segments(centres: np.ndarray, frames: np.ndarray, first: int, count: int, seg_len: float) -> np.ndarray:
    """``(count, S, D)`` segment rows from frames ``(S, T, D)`` centred at ``centres`` (seconds, sorted):
    the mean of the frames centred inside each segment, else the frame nearest its centre (zeros
    when there is no frame at all)."""
    s, _, d = frames.shape
    out = np.zeros((count, s, d), np.float32)
    if centres.size == 0:
        return out
    edges = (first + np.arange(count + 1)) * seg_len
    idx = np.searchsorted(centres, edges, side="left")
    for k in range(count):
        a, b = idx[k], idx[k + 1]
        if b > a:
            out[k] = frames[:, a:b].mean(axis=1, dtype=np.float64)
        else:
            out[k] = frames[:, int(np.argmin(np.abs(centres - (edges[k] + seg_len / 2))))]
    return out


class FramewiseExtractor(Extractor):
    """Base of frame-level audio encoders: windowing, frame placement, pooling, layer choice."""

    default_window: ClassVar[float] = 10.0
    default_context: ClassVar[float] = 2.0
    default_layers: ClassVar[str] = "last"
    max_window: ClassVar[float | None] = None  # the longest input the model takes, if any
    option_specs: ClassVar[dict[str, Option]] = {}
    _WINDOWS_KEPT = 3  # encoded windows kept for the next chunk (a window straddles two chunks)

    @classmethod
    def frame_options(cls, window: float, context: float, layers: str) -> dict[str, Option]:
        """The ``--set`` options every frame-level encoder declares, with its own defaults."""
        return {
            "window": Option(float, window, "seconds of audio per encoder window"),
            "context": Option(
                float,
                context,
                "seconds of audio a kept frame has on each side inside its window "
                "(window - 2 x context seconds are kept per window)",
            ),
            "layers": Option(
                str, layers, "hidden states stored: all (embedding output + every layer), last, or numbers like 0,6,12"
            ),
        }

    def __init__(self, args: str, options: ExtractOptions) -> None:
        super().__init__(args, options)
        self.window_s = float(self.opt("window"))
        self.context_s = float(self.opt("context"))
        if self.window_s <= 0 or self.context_s < 0 or self.window_s - 2 * self.context_s <= 0:
            raise ExtractorError(
                f"{self.name}: window={self.window_s:g} and context={self.context_s:g} leave no "
                "kept part (need window > 2 x context >= 0)"
            )
        if self.max_window is not None and self.window_s > self.max_window + 1e-9:
            raise ExtractorError(f"{self.name}: window={self.window_s:g} exceeds the model's {self.max_window:g} s")
        self._encoded: OrderedDict[tuple, np.ndarray] = OrderedDict()

    # -- what a subclass provides ------------------------------------------------------
    @property
    @abstractmethod
    def feature_name(self) -> str:
        """The output's name in the cache."""

    @abstractmethod
    def geometry(self) -> FrameGeometry:
        """Rate, stride and frame centre of the encoder (cheap: from the config)."""

    @abstractmethod
    def n_states(self) -> int:
        """Hidden states per frame: the embedding output and one per layer (L+1)."""

    @abstractmethod
    def dim(self) -> int:
        """Width of a hidden state."""

    @abstractmethod
    def encode(self, batch: np.ndarray) -> np.ndarray:
        """``(B, n)`` float32 windows at ``geometry().rate`` -> ``(B, L+1, T, D)`` float32 hidden states."""

    def describe(self) -> dict:
        """Extra attributes stored with the feature (model facts)."""
        return {}

    # -- declarations ------------------------------------------------------------------
    @property
    def layers(self) -> tuple[int, ...]:
        return parse_layers(self.opt("layers"), self.n_states())

    def outputs(self) -> list[OutputSpec]:
        g, layers = self.geometry(), self.layers
        length, hop, ctx = window_samples(self.window_s, self.context_s, g)
        shape = (self.dim(),) if len(layers) == 1 else (len(layers), self.dim())
        what = "hidden state" if len(layers) == 1 else "hidden states (axis 0: the layers attribute)"
        attrs = {
            "layers": list(layers),
            "layer_0": "embedding output (input of the first layer)",
            "rate": g.rate,
            "frame_rate": g.frame_rate,
            "frame_centre_s": f"({g.offset:g} + {g.stride} i) / {g.rate}",
            "window_s": length / g.rate,
            "hop_s": hop / g.rate,
            "context_s": ctx / g.rate,
            "pooling": "mean of the frames centred in the segment (else the frame nearest its centre)",
            **self.describe(),
        }
        return [
            OutputSpec(
                self.feature_name,
                shape,
                "audio",
                window=length / g.rate,
                layout=f"{self.name} {what}, mean over the segment's frames",
                attrs=attrs,
            )
        ]

    def needs(self) -> MediaNeeds:
        g = self.geometry()
        # a kept frame's window lies within one window length of the chunk (shifted windows at the
        # recording's ends included); plus a frame each side, the rounding to strides, the resampler
        ctx = self.window_s + 4 * g.stride / g.rate + margin_s(g.rate) + 0.01
        return MediaNeeds(audio=True, audio_context=round(ctx, 4))

    # -- compute -------------------------------------------------------------------------
    def _window_audio(self, samples: np.ndarray, n0: int, w: Window, chunk: Chunk) -> np.ndarray:
        lo, hi = w.start - n0, w.start + w.length - n0
        pad = round(margin_s(self.geometry().rate) * self.geometry().rate)
        if lo < pad:
            raise RuntimeError(
                f"featpipe bug: {self.name} window at sample {w.start} starts before the audio of "
                f"chunk {chunk.first} (context {chunk.audio_context} s)"
            )
        out = samples[lo:hi]
        if len(out) < hi - lo:  # the decoder may round a chunk a few samples short
            out = np.pad(out, (0, hi - lo - len(out)))
        return np.asarray(out, np.float32)

    def _encode_windows(
        self, chunk: Chunk, windows: list[Window], samples: np.ndarray, n0: int
    ) -> dict[Window, np.ndarray]:
        done: dict[Window, np.ndarray] = {}
        todo: dict[int, list[Window]] = {}
        n_total = round(chunk.duration * self.geometry().rate)
        for w in windows:
            key = (chunk.video_id, n_total, w.start, w.length)
            if key in self._encoded:
                done[w] = self._encoded[key]
            else:
                todo.setdefault(w.length, []).append(w)
        bs = max(1, self.options.batch_size)
        for ws in todo.values():  # equal lengths batch together: no padding ever enters the model
            uniq = list({w.start: w for w in ws}.values())
            for i in range(0, len(uniq), bs):
                part = uniq[i : i + bs]
                states = self.encode(np.stack([self._window_audio(samples, n0, w, chunk) for w in part]))
                for w, st in zip(part, states):
                    self._encoded[(chunk.video_id, n_total, w.start, w.length)] = st
                    self._encoded.move_to_end((chunk.video_id, n_total, w.start, w.length))
            for w in ws:
                done[w] = self._encoded[(chunk.video_id, n_total, w.start, w.length)]
        while len(self._encoded) > max(self._WINDOWS_KEPT, len(windows)):
            self._encoded.popitem(last=False)
        return done

    def frames(self, chunk: Chunk) -> tuple[np.ndarray, np.ndarray]:
        """Kept frames around the chunk: centres (seconds, sorted) and ``(L+1, T, D)`` hidden states."""
        g = self.geometry()
        samples, n0 = audio_at(chunk, g.rate)
        n_total = round(chunk.duration * g.rate)
        lo, hi = chunk.t0 * g.rate - g.stride, chunk.t1 * g.rate + g.stride
        windows = plan_windows(n_total, lo, hi, self.window_s, self.context_s, g)
        windows = [w for w in windows if w.length >= g.min_samples]
        encoded = self._encode_windows(chunk, windows, samples, n0)
        centres, parts = [], []
        for w in windows:
            st = encoded[w]
            c = w.start + g.offset + g.stride * np.arange(st.shape[1])
            keep = (c >= max(w.keep_lo, lo)) & (c < min(w.keep_hi, hi)) & (c < w.start + w.length)
            centres.append(c[keep] / g.rate)
            parts.append(st[:, keep])
        if not parts:
            return np.zeros(0), np.zeros((self.n_states(), 0, self.dim()), np.float32)
        return np.concatenate(centres), np.concatenate(parts, axis=1)

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        centres, states = self.frames(chunk)
        layers = self.layers
        rows = pool_segments(centres, states[list(layers)], chunk.first, chunk.count, chunk.seg_len)
        return {self.feature_name: rows[:, 0] if len(layers) == 1 else rows}
