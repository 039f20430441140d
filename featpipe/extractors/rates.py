"""Mono audio of a chunk at the rate a model reads, resampled once per chunk and rate.

Every audio extractor of a run receives the same :class:`Chunk` (48 kHz, channels kept). The
ones that read 16 kHz (BEATs, wav2vec2, HuBERT, WavLM, AST, Whisper) or 24 kHz (MERT) call
:func:`audio_at`; the first call for a (chunk, rate) pair resamples, the others reuse it, so a run
with ``ast``, ``beats`` and ``hf-audio`` resamples to 16 kHz once per chunk, not three times.

The resampler is a zero-phase polyphase FIR (scipy ``resample_poly``) with a Kaiser low-pass
(90 dB stop band from the new Nyquist frequency, pass band to 0.9 of it) on an absolute sample
grid: output sample ``n`` sits at input time ``n / rate`` whatever chunk it came from, so chunked
extraction equals whole-video extraction. Output samples within :func:`margin_s` of the chunk's
ends read past its audio and are not used (extractors ask for that much more context).
"""

from __future__ import annotations

import functools
import math
import weakref
from collections import OrderedDict

import numpy as np

from ..contracts import AUDIO_RATE, Chunk

RIPPLE_DB = 90.0
PASS = 0.9  # the pass band ends at 0.9 x the new Nyquist frequency; the stop band starts at it

_CACHE: OrderedDict[tuple[int, int], tuple[weakref.ref, tuple[np.ndarray, int]]] = OrderedDict()
_CACHE_SIZE = 8  # a few rates of the current chunk (and the next one, decoded ahead)
calls = {"resampled": 0}  # how many times audio_at really resampled (for tests and benchmarks)


@functools.lru_cache(maxsize=8)
def _filter(up: int, down: int) -> np.ndarray:
    """The low-pass FIR at ``AUDIO_RATE * up`` Hz (odd length, unit gain: resample_poly scales by ``up``)."""
    from scipy.signal import firwin, kaiserord

    fs = AUDIO_RATE * up
    nyq_out = min(AUDIO_RATE * up / down, AUDIO_RATE) / 2
    width = (1 - PASS) * nyq_out
    numtaps, beta = kaiserord(RIPPLE_DB, width / (fs / 2))
    numtaps |= 1
    return firwin(numtaps, (1 + PASS) / 2 * nyq_out, window=("kaiser", beta), fs=fs)


def _ratio(rate: int) -> tuple[int, int]:
    g = math.gcd(rate, AUDIO_RATE)
    return rate // g, AUDIO_RATE // g


def margin_s(rate: int) -> float:
    """Seconds at either end of a chunk's audio whose resampled samples are not exact."""
    if rate == AUDIO_RATE:
        return 0.0
    up, down = _ratio(rate)
    return (len(_filter(up, down)) // 2 / up + down) / AUDIO_RATE


def resample(mono: np.ndarray, a0: int, rate: int) -> tuple[np.ndarray, int]:
    """``mono`` (48 kHz, its first sample at absolute index ``a0``) at ``rate``.

    Returns ``(samples, n0)``: float32 samples whose first one is absolute sample ``n0`` at ``rate``.
    """
    if rate == AUDIO_RATE:
        return np.asarray(mono, np.float32), a0
    from scipy.signal import resample_poly

    up, down = _ratio(rate)
    i0 = -(-a0 // down) * down  # first input sample on the common grid of both rates
    x = np.asarray(mono[i0 - a0 :], np.float64)
    y = resample_poly(x, up, down, window=_filter(up, down))
    return y.astype(np.float32), i0 // down * up


def audio_at(chunk: Chunk, rate: int) -> tuple[np.ndarray, int]:
    """The chunk's mono audio (channel mean) at ``rate`` Hz and the absolute index of its first sample.

    Computed once per chunk and rate: every extractor asking for the same rate of the same chunk
    gets the same (read-only) array.
    """
    if chunk.audio is None:
        raise ValueError("this chunk has no audio")
    if chunk.audio_rate != AUDIO_RATE:
        raise ValueError(f"chunks carry {AUDIO_RATE} Hz audio, this one {chunk.audio_rate} Hz")
    key = (id(chunk.audio), rate)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is chunk.audio:
        _CACHE.move_to_end(key)
        return hit[1]
    a0 = round((chunk.t0 - chunk.audio_context) * AUDIO_RATE)
    samples, n0 = resample(chunk.mono(), a0, rate)
    samples.setflags(write=False)
    calls["resampled"] += 1
    _CACHE[key] = (weakref.ref(chunk.audio), (samples, n0))
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return samples, n0
