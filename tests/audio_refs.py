"""Helpers for the audio-encoder reference tests (ast, mert, hf-audio).

The references are computed apart from featpipe: the clip is written here (48 kHz 16-bit PCM in
Matroska, lossless, so the samples are known), read back with PyAV directly, resampled with soxr
(not featpipe's FIR), cut into windows by the simple rule written out here, and run through the
model the way its own library documents it.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from click.testing import CliRunner

SR = 48_000


def music(seconds: float, seed: int = 0, channels: int = 2) -> np.ndarray:
    """``(channels, n)`` float32 at 48 kHz: tones that change every 0.1-0.4 s, noise bursts, a DC offset
    and a level that swells, so neighbouring frames differ and normalisation matters; below 6 kHz."""
    from scipy.signal import butter, sosfiltfilt

    rng = np.random.default_rng(seed)
    n = round(seconds * SR)
    t = np.arange(n) / SR
    x = np.zeros(n)
    pos = 0
    while pos < n:
        ln = int(rng.uniform(0.1, 0.4) * SR)
        f = rng.uniform(80, 5000)
        seg = slice(pos, min(n, pos + ln))
        x[seg] += rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * f * t[seg] + rng.uniform(0, 6))
        if rng.random() < 0.3:
            x[seg] += rng.uniform(0.01, 0.1) * rng.standard_normal(len(x[seg]))
        pos += ln
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * t / 7.0))
    # nothing above 6 kHz (the gating clicks and the noise are broadband): resamplers with different
    # transition bands (soxr's, featpipe's) then agree on every rate down to 16 kHz
    x = sosfiltfilt(butter(10, 6000, fs=SR, output="sos"), x) + 0.05
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.02 * SR))  # no click at either end
    x = x * (0.5 - 0.5 * np.cos(np.pi * fade))
    out = np.stack([x * (1.0 - 0.3 * c) for c in range(channels)])
    return (np.round(np.clip(out, -1, 1) * 32767) / 32768).astype(np.float32)  # exactly 16-bit values


def write_wave(path: Path, wave: np.ndarray) -> Path:
    """``wave`` (channels, n) at 48 kHz as 16-bit PCM in an audio-only Matroska file."""
    out = av.open(str(path), "w")
    layout = {1: "mono", 2: "stereo"}[wave.shape[0]]
    stream = out.add_stream("pcm_s16le", rate=SR, layout=layout)
    q = np.round(wave * 32768).astype(np.int16)
    for s0 in range(0, q.shape[1], 4800):
        block = np.ascontiguousarray(q[:, s0 : s0 + 4800].T.reshape(1, -1))  # packed s16: channels interleaved
        frame = av.AudioFrame.from_ndarray(block, format="s16", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = SR, s0, Fraction(1, SR)
        for p in stream.encode(frame):
            out.mux(p)
    for p in stream.encode():
        out.mux(p)
    out.close()
    return path


def read_mono(path: Path, rate: int) -> np.ndarray:
    """The file's audio read with PyAV (no featpipe), channel mean, resampled with soxr (VHQ) to ``rate``."""
    import soxr

    with av.open(str(path)) as c:
        parts = [f.to_ndarray() for f in c.decode(audio=0)]
        channels = c.streams.audio[0].channels
    x = np.concatenate([p.reshape(-1, channels).T if p.shape[0] == 1 else p for p in parts], axis=1)
    mono = x.astype(np.float64).mean(axis=0) / (32768.0 if x.dtype == np.int16 else 1.0)
    return mono if rate == SR else soxr.resample(mono, SR, rate, quality="VHQ")


def windows(n_total: int, stride: int, window: int, context: int) -> list[tuple[int, int, int, int]]:
    """The frame-level rule written out plainly: window j keeps centres in [j*hop, (j+1)*hop), hop = window - 2*context,
    and reads [j*hop - context, j*hop - context + window) moved inside the recording; ``window`` and
    ``context`` must be whole strides (the rule rounds them so; a window starting half a stride off
    samples other frames)."""
    assert window % stride == 0 and context % stride == 0
    hop = window - 2 * context
    last = max(0, (n_total - window) // stride * stride)
    out = []
    for j in range(n_total // hop + 1):
        start = min(max(j * hop - context, 0), last)
        out.append((start, min(window, n_total - start), j * hop, (j + 1) * hop))
    return out


def pool(centres: np.ndarray, frames: np.ndarray, n_segments: int, seg: float) -> np.ndarray:
    """Segment rows: mean of the frames (T, ...) whose centres (seconds) fall in each segment."""
    rows = []
    for k in range(n_segments):
        m = (centres >= k * seg) & (centres < (k + 1) * seg)
        rows.append(frames[m].mean(axis=0))
    return np.stack(rows)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine per row (over every axis after the first)."""
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def extract(folder: Path, cache: Path, specs: list[str], fps: float, sets: dict[str, str] | None = None) -> None:
    """``featpipe extract folder -o cache --audio SPEC ... --fps FPS --set k=v ...`` as a user runs it."""
    from featpipe import cli

    args = [
        "extract",
        str(folder),
        "-o",
        str(cache),
        "--workers",
        "1",
        "--quiet",
        "--fps",
        str(fps),
        "--dtype",
        "float32",
        "--video-timeout",
        "0",  # no time limit: a busy test machine must not fail a video
    ]
    for s in specs:
        args += ["--audio", s]
    for k, v in (sets or {}).items():
        args += ["--set", f"{k}={v}"]
    res = CliRunner().invoke(cli.main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
