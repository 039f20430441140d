"""Small numpy signal helpers shared by the weight-free extractors (framing, filterbanks, dB).

Everything here is deterministic and vectorised; no state, no weights.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.fft import rfft
from scipy.signal import freqz

DB_FLOOR = -100.0
"""Every level in dB is floored here, so silence gives finite values that fit float16."""


def db(power: np.ndarray, floor: float = DB_FLOOR) -> np.ndarray:
    """``10*log10(power)`` floored at ``floor`` dB (power 0 -> ``floor``, never -inf)."""
    p = np.maximum(np.asarray(power, dtype=np.float64), 10.0 ** (floor / 10.0))
    return 10.0 * np.log10(p)


def periodic_hann(n: int) -> np.ndarray:
    """The periodic Hann window (the STFT convention: overlap-adds to a constant)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


def take(x: np.ndarray, start: int, stop: int) -> np.ndarray:
    """``x[..., start:stop]`` along the last axis, reading zeros outside ``x``."""
    lo, hi = max(start, 0), min(stop, x.shape[-1])
    if lo == start and hi == stop:
        return x[..., start:stop]
    out = np.zeros(x.shape[:-1] + (stop - start,), dtype=x.dtype)
    if hi > lo:
        out[..., lo - start : hi - start] = x[..., lo:hi]
    return out


def frames(x: np.ndarray, start: int, n_frames: int, n_fft: int, hop: int) -> np.ndarray:
    """Frames ``x[..., start + i*hop : start + i*hop + n_fft]`` for ``i < n_frames``.

    Samples outside ``x`` read as zeros. Returns a strided view ``(..., n_frames, n_fft)``.
    """
    seg = take(x, start, start + (n_frames - 1) * hop + n_fft)
    return sliding_window_view(seg, n_fft, axis=-1)[..., ::hop, :]


def power_spectrum(fr: np.ndarray, window: np.ndarray) -> np.ndarray:
    """One-sided power spectrum of windowed frames, scaled so a frame's bins sum to its mean square.

    A full-scale sine therefore has a total of 0.5 (-3 dB), matching its RMS level.
    """
    n = fr.shape[-1]
    spec = rfft(fr * window, axis=-1)  # scipy's pocketfft: ~3x numpy's here, float32 kept
    p = np.abs(spec) ** 2
    p *= 2.0 / (n * float(np.sum(window.astype(np.float64) ** 2)))
    p[..., 0] *= 0.5  # DC and Nyquist appear once in the full spectrum
    p[..., -1] *= 0.5
    return p


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_bands: int, n_fft: int, rate: int, fmin: float, fmax: float) -> np.ndarray:
    """``(n_fft//2+1, n_bands)`` triangular HTK-mel filters with peak 1.

    Unnormalised triangles sum to 1 between the first and last centre, so band powers add up
    to the power in that range (band values in dB read as levels, like the RMS).
    """
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_bands + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lo) / (mid - lo)
    down = (hi - freqs[None, :]) / (hi - mid)
    fb = np.clip(np.minimum(up, down), 0.0, None)
    if np.any(fb.sum(axis=1) == 0):
        raise ValueError(f"{n_bands} mel bands are too narrow for n_fft={n_fft} at {rate} Hz")
    return fb.T.astype(np.float32)


def chroma_filterbank(n_fft: int, rate: int, fmin: float, fmax: float) -> np.ndarray:
    """``(n_fft//2+1, 12)`` pitch-class weights, class 0 = C, 9 = A (A4 = 440 Hz).

    Each bin in ``[fmin, fmax]`` spreads its power over the two nearest pitch classes with a
    triangular kernel one semitone wide (weights sum to 1); other bins get 0.
    """
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    fb = np.zeros((freqs.size, 12))
    ok = (freqs >= fmin) & (freqs <= fmax)
    pitch = (12.0 * np.log2(freqs[ok] / 440.0) + 9.0) % 12.0  # C = 0
    d = np.abs(pitch[:, None] - np.arange(12)[None, :])
    d = np.minimum(d, 12.0 - d)  # circular distance in semitones
    fb[ok] = np.clip(1.0 - d, 0.0, None)
    return fb.astype(np.float32)


def k_weighting_gain(n_fft: int, rate: int) -> np.ndarray:
    """``|H(f)|^2`` of the ITU-R BS.1770 K-weighting (shelf + high-pass) at the rfft bins.

    The published biquad coefficients are for 48 kHz; other rates are rejected.
    """
    if rate != 48_000:
        raise ValueError(f"K-weighting coefficients are defined here for 48000 Hz, not {rate}")
    shelf_b = [1.53512485958697, -2.69169618940638, 1.19839281085285]
    shelf_a = [1.0, -1.69065929318241, 0.73248077421585]
    hp_b = [1.0, -2.0, 1.0]
    hp_a = [1.0, -1.99004745483398, 0.99007225036621]
    w = np.fft.rfftfreq(n_fft, 1.0 / rate) * 2.0 * np.pi / rate
    _, h1 = freqz(shelf_b, shelf_a, worN=w)
    _, h2 = freqz(hp_b, hp_a, worN=w)
    return (np.abs(h1 * h2) ** 2).astype(np.float32)


def peak_mask(x: np.ndarray, pre_max: int, post_max: int, pre_avg: int, post_avg: int,
              delta: float) -> np.ndarray:
    """Peaks of ``x`` (1-D) that can be decided from the values around them.

    Index ``i`` in ``[m, len(x) - m)`` with ``m = max(pre_max, post_max, pre_avg, post_avg)``
    is a peak when ``x[i] > max(x[i-pre_max:i])`` (strictly above what precedes, so a plateau
    counts once), ``x[i] >= max(x[i+1:i+post_max+1])``, and
    ``x[i] >= mean(x[i-pre_avg:i+post_avg+1]) + delta``. The first and last ``m`` entries are
    context and are never peaks.
    """
    m = max(pre_max, post_max, pre_avg, post_avg)
    out = np.zeros(x.shape, dtype=bool)
    n = x.size - 2 * m
    if n <= 0:
        return out
    c = x[m : m + n]
    left = sliding_window_view(x[m - pre_max : m + n - 1], pre_max).max(axis=-1) if pre_max else -np.inf
    right = sliding_window_view(x[m + 1 : m + n + post_max], post_max).max(axis=-1) if post_max else -np.inf
    w = pre_avg + post_avg + 1
    avg = sliding_window_view(x[m - pre_avg : m + n + post_avg], w).mean(axis=-1)
    out[m : m + n] = (c > left) & (c >= right) & (c >= avg + delta)
    return out


def segment_bounds(first: int, count: int, seg_len: float, rate: int) -> np.ndarray:
    """Absolute sample index of each segment edge: ``count + 1`` integers."""
    return np.round((first + np.arange(count + 1)) * seg_len * rate).astype(np.int64)


def segment_reduce(values: np.ndarray, seg_id: np.ndarray, count: int, how: str = "mean") -> np.ndarray:
    """Mean, sum or max of ``values`` (frames first) over frames grouped by sorted ``seg_id``.

    Every segment ``0..count-1`` must own at least one frame.
    """
    starts = np.searchsorted(seg_id, np.arange(count))
    n = np.diff(np.append(starts, seg_id.size))
    if np.any(n == 0):
        raise ValueError("a segment is shorter than one analysis hop")
    if how == "max":
        return np.maximum.reduceat(values, starts, axis=0)
    total = np.add.reduceat(values.astype(np.float64), starts, axis=0)
    if how == "sum":
        return total
    return total / n.reshape((-1,) + (1,) * (values.ndim - 1))
