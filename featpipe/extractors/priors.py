"""``priors``: weight-free music priors per segment (levels, onsets, timbre, chroma, mel, stereo image).

Every analysis frame sits on a grid anchored at t = 0 of the recording (frame j is centred on
sample ``j * hop``) and belongs to the segment that contains its centre; onset peak picking
looks a few frames past the segment edges. The audio context requested below covers all of
that, so a video cut into chunks gives the same rows as the whole video in one chunk.
The layout is :data:`LAYOUT`; docs/features.md explains every dimension.
"""

from __future__ import annotations

import json
import math

import numpy as np

from . import dsp, register
from .base import AUDIO_RATE, Chunk, ExtractOptions, Extractor, ExtractorError, MediaNeeds, OutputSpec

N_FFT = 2048  # 42.7 ms: the main STFT (levels, mel, flux, timbre, ILD)
HOP = 480  # 10 ms
CHROMA_FFT = 8192  # 171 ms: 5.9 Hz bins, fine enough to tell semitones apart down to ~100 Hz
CHROMA_HOP = 2400  # 50 ms (shrunk to the segment length for very short segments)
N_MEL = 40
N_ILD = 8
FMIN, FMAX = 20.0, 20_000.0
CHROMA_FMIN, CHROMA_FMAX = 65.0, 5_000.0  # C2 .. ~D#8
FLUX_FLOOR_DB = -80.0  # band levels below this are treated as silence by the onset detector
# Onset peak picking on the flux curve, in frames of HOP (see dsp.peak_mask).
PRE_MAX = POST_MAX = 3  # local maximum within +-30 ms
PRE_AVG = POST_AVG = 10  # ... and above the +-100 ms mean
ONSET_DELTA = 2.0  # ... by at least this many dB (flux is a mean dB rise per mel band)
CUT_FRAMES = 6  # ... and not followed by digital silence within 60 ms (a cut, not an onset)
MARGIN = 1 + max(PRE_MAX, POST_MAX, PRE_AVG, POST_AVG, CUT_FRAMES)  # extra frames each side
CONTEXT_S = 0.15  # >= (MARGIN + 1) * HOP + N_FFT / 2 samples (0.141 s), and CHROMA_FFT/2 + CHROMA_HOP
BLOCK = 1024  # frames per STFT block (bounds memory on long chunks)

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def _layout() -> list[tuple[str, int, int]]:
    parts = [
        ("rms_db", 1), ("loudness_lkfs", 1), ("onset_mean", 1), ("onset_max", 1),
        ("onset_count", 1), ("centroid_khz", 1), ("flatness", 1), ("chroma", 12),
        ("logmel_db", N_MEL), ("ild_db", N_ILD), ("ild_overall_db", 1), ("lr_corr", 1),
        ("stereo", 1),
    ]
    out, at = [], 0
    for name, n in parts:
        out.append((name, at, at + n))
        at += n
    return out


LAYOUT: list[tuple[str, int, int]] = _layout()
"""``(name, start, stop)`` slices of the last axis of ``priors``."""
DIM = LAYOUT[-1][2]
SLICES: dict[str, slice] = {name: slice(a, b) for name, a, b in LAYOUT}


def layout_string(layout: list[tuple[str, int, int]]) -> str:
    """``"rms_db[0:1] loudness_lkfs[1:2] ..."``: the readable form stored with a feature."""
    return " ".join(f"{name}[{a}:{b}]" for name, a, b in layout)


@register
class Priors(Extractor):
    """Music priors from the waveform alone: no weights, no randomness."""

    name = "priors"
    summary = (f"weight-free music priors per segment ({DIM}-d: loudness, onsets, timbre, "
               "chroma, mel, stereo ILD)")
    spec_help = "priors"
    examples = ("priors",)
    version = "1"
    option_specs = {}  # reads no --set keys

    def __init__(self, args: str, options: ExtractOptions) -> None:
        super().__init__(args, options)
        if args:
            raise ExtractorError(f"priors takes no arguments, got {args!r}")
        self._mel = dsp.mel_filterbank(N_MEL, N_FFT, AUDIO_RATE, FMIN, FMAX)
        self._ild = dsp.mel_filterbank(N_ILD, N_FFT, AUDIO_RATE, FMIN, FMAX)
        self._kgain = dsp.k_weighting_gain(N_FFT, AUDIO_RATE)
        self._freqs = np.fft.rfftfreq(N_FFT, 1.0 / AUDIO_RATE).astype(np.float32)
        self._chroma = dsp.chroma_filterbank(CHROMA_FFT, AUDIO_RATE, CHROMA_FMIN, CHROMA_FMAX)
        self._win = dsp.periodic_hann(N_FFT)
        self._win_c = dsp.periodic_hann(CHROMA_FFT)

    def outputs(self) -> list[OutputSpec]:
        attrs = {
            "layout": json.dumps(LAYOUT), "n_fft": N_FFT, "hop": HOP, "n_mel": N_MEL,
            "n_ild": N_ILD, "fmin": FMIN, "fmax": FMAX, "chroma_fft": CHROMA_FFT,
            "chroma_order": ",".join(PITCH_CLASSES), "onset_delta_db": ONSET_DELTA,
            "onset_rule": (f"flux local max in +-{PRE_MAX} frames, >= +-{PRE_AVG}-frame mean + "
                           f"{ONSET_DELTA} dB, not sound cut into silence within {CUT_FRAMES} frames"),
            "ild_sign": "positive = louder in the left channel",
        }
        return [OutputSpec("priors", (DIM,), "audio", layout=layout_string(LAYOUT), attrs=attrs)]

    def needs(self) -> MediaNeeds:
        return MediaNeeds(audio=True, audio_context=CONTEXT_S)

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        return {"priors": self.compute(chunk).astype(np.float32)}  # the worker casts to the storage dtype

    def compute(self, chunk: Chunk) -> np.ndarray:
        """The ``(chunk.count, DIM)`` float64 features, before the cast to the stored dtype."""
        if chunk.audio is None:
            raise ValueError(f"{chunk.video_id}: priors needs audio but the chunk has none")
        if chunk.audio_rate != AUDIO_RATE:
            raise ValueError(f"priors needs {AUDIO_RATE} Hz audio, got {chunk.audio_rate}")
        if chunk.audio_context + 1e-9 < CONTEXT_S:
            raise ValueError(f"priors needs {CONTEXT_S}s of audio context, got {chunk.audio_context}s")
        x = np.asarray(chunk.audio, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] not in (1, 2):
            raise ValueError(f"priors expects (1 or 2 channels, samples) audio, got {x.shape}")
        if chunk.seg_len * AUDIO_RATE < HOP:
            raise ValueError(f"segments of {chunk.seg_len}s are shorter than the {HOP / AUDIO_RATE}s hop")

        a0 = round((chunk.t0 - chunk.audio_context) * AUDIO_RATE)  # absolute index of x[:, 0]
        bounds = dsp.segment_bounds(chunk.first, chunk.count, chunk.seg_len, AUDIO_RATE)
        out = np.zeros((chunk.count, DIM))
        self._time_domain(x, a0, bounds, out)
        self._spectral(x, a0, bounds, out)
        self._chroma_part(x, a0, bounds, chunk.seg_len, out)
        return out

    def _time_domain(self, x: np.ndarray, a0: int, bounds: np.ndarray, out: np.ndarray) -> None:
        """RMS, overall ILD and L/R correlation over each segment's exact samples."""
        seg = dsp.take(x, int(bounds[0] - a0), int(bounds[-1] - a0))
        starts = bounds[:-1] - bounds[0]
        n = np.diff(bounds).astype(np.float64)
        ms = np.add.reduceat(seg**2, starts, axis=1, dtype=np.float64) / n  # (channels, count)
        out[:, SLICES["rms_db"]] = dsp.db(ms.mean(axis=0))[:, None]
        if x.shape[0] == 2:
            out[:, SLICES["ild_overall_db"]] = (dsp.db(ms[0]) - dsp.db(ms[1]))[:, None]
            lr = np.add.reduceat(seg[0] * seg[1], starts, dtype=np.float64) / n
            out[:, SLICES["lr_corr"]] = (lr / (np.sqrt(ms[0] * ms[1]) + 1e-20))[:, None]
            out[:, SLICES["stereo"]] = 1.0

    def _spectral(self, x: np.ndarray, a0: int, bounds: np.ndarray, out: np.ndarray) -> None:
        """Everything from the 2048-point STFT: K-loudness, flux and onsets, timbre, mel, band ILD."""
        j_lo = -(-int(bounds[0]) // HOP)  # first frame centred in the chunk
        j_hi = -(-int(bounds[-1]) // HOP)  # one past the last
        n_in = j_hi - j_lo
        n_all = n_in + 2 * MARGIN
        start = (j_lo - MARGIN) * HOP - N_FFT // 2 - a0
        stereo = x.shape[0] == 2

        mel = np.empty((n_all, N_MEL))
        kpow = np.empty(n_all)
        cnum = np.empty(n_all)
        cden = np.empty(n_all)
        flat = np.empty(n_all)
        bands = np.empty((x.shape[0], n_all, N_ILD))
        for b0 in range(0, n_all, BLOCK):
            nb = min(BLOCK, n_all - b0)
            p = dsp.power_spectrum(dsp.frames(x, start + b0 * HOP, nb, N_FFT, HOP), self._win)
            pm = p.mean(axis=0)  # channel-mean power (C, F, K) -> (F, K)
            sl = slice(b0, b0 + nb)
            mel[sl] = pm @ self._mel
            kpow[sl] = (p @ self._kgain).sum(axis=0)  # BS.1770 sums channel powers
            cnum[sl] = pm @ self._freqs
            cden[sl] = pm.sum(axis=-1)
            q = np.maximum(pm[:, 1:], np.float32(1e-13))  # no DC; floor keeps the log finite
            flat[sl] = np.exp(np.log(q).mean(axis=-1, dtype=np.float64)) / q.mean(axis=-1, dtype=np.float64)
            if stereo:
                bands[:, sl] = p @ self._ild

        level = dsp.db(mel, floor=FLUX_FLOOR_DB)
        flux = np.zeros(n_all)
        flux[1:] = np.maximum(level[1:] - level[:-1], 0.0).mean(axis=-1)
        onsets = dsp.peak_mask(flux, PRE_MAX, POST_MAX, PRE_AVG, POST_AVG, ONSET_DELTA)
        # Sound cut off into digital silence (most clips end that way) splatters across the
        # bands and looks like an onset: drop peaks where sound turns to silence right after.
        silent = np.all(level <= FLUX_FLOOR_DB, axis=-1)
        soon = np.zeros(n_all, dtype=bool)
        soon[1 : n_all - CUT_FRAMES] = np.lib.stride_tricks.sliding_window_view(
            silent[2:], CUT_FRAMES).any(axis=-1)
        onsets[1:] &= ~(~silent[:-1] & soon[1:])

        inner = slice(MARGIN, MARGIN + n_in)
        centres = (j_lo + np.arange(n_in)) * HOP
        sid = np.searchsorted(bounds, centres, side="right") - 1
        count = out.shape[0]

        def mean(v: np.ndarray) -> np.ndarray:
            return dsp.segment_reduce(v[inner], sid, count, "mean")

        out[:, SLICES["loudness_lkfs"]] = (-0.691 + dsp.db(mean(kpow)))[:, None]
        out[:, SLICES["onset_mean"]] = mean(flux)[:, None]
        out[:, SLICES["onset_max"]] = dsp.segment_reduce(flux[inner], sid, count, "max")[:, None]
        out[:, SLICES["onset_count"]] = dsp.segment_reduce(onsets[inner], sid, count, "sum")[:, None]
        out[:, SLICES["centroid_khz"]] = (mean(cnum) / (mean(cden) + 1e-20) / 1000.0)[:, None]
        out[:, SLICES["flatness"]] = mean(flat)[:, None]
        out[:, SLICES["logmel_db"]] = dsp.db(mean(mel))
        if stereo:
            left = dsp.segment_reduce(bands[0, inner], sid, count, "mean")
            right = dsp.segment_reduce(bands[1, inner], sid, count, "mean")
            out[:, SLICES["ild_db"]] = dsp.db(left) - dsp.db(right)

    def _chroma_part(self, x: np.ndarray, a0: int, bounds: np.ndarray, seg_len: float,
                     out: np.ndarray) -> None:
        """12 pitch-class energies from a long STFT, as fractions of the segment's chroma energy."""
        # from seg_len, not from these bounds: every chunk of a video must use the same grid
        hop = min(CHROMA_HOP, math.floor(seg_len * AUDIO_RATE))
        j_lo = -(-int(bounds[0]) // hop)
        n = -(-int(bounds[-1]) // hop) - j_lo
        start = j_lo * hop - CHROMA_FFT // 2 - a0
        chroma = np.empty((n, 12))
        step = max(1, BLOCK // 4)
        for b0 in range(0, n, step):
            nb = min(step, n - b0)
            p = dsp.power_spectrum(dsp.frames(x, start + b0 * hop, nb, CHROMA_FFT, hop), self._win_c)
            chroma[b0 : b0 + nb] = p.mean(axis=0) @ self._chroma
        sid = np.searchsorted(bounds, (j_lo + np.arange(n)) * hop, side="right") - 1
        c = dsp.segment_reduce(chroma, sid, out.shape[0], "sum")
        out[:, SLICES["chroma"]] = c / (c.sum(axis=-1, keepdims=True) + 1e-12)


assert CONTEXT_S * AUDIO_RATE >= (MARGIN + 1) * HOP + N_FFT // 2
assert CONTEXT_S * AUDIO_RATE >= CHROMA_FFT // 2 + CHROMA_HOP
