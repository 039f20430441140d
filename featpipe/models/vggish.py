"""VGGish (AudioSet) in torch: 16 kHz audio, the log-mel examples, the network, PCA.

16 kHz audio, two ways: :func:`moviepy_16k` reproduces the WAVs MUSIC-AVQA's scripts write
(moviepy 1.x: ffmpeg's 44.1 kHz 16-bit stereo, nearest sample, no anti-aliasing), from the
decoder's 44.1 kHz copy made by FFmpeg's resampler; :func:`resample_to_16k` is an anti-aliased
FIR from featpipe's 48 kHz decode (what resampy or a careful pipeline would give).

Written from the published definitions (tensorflow/models ``research/audioset/vggish``:
``mel_features.py``, ``vggish_params.py``, ``vggish_slim.py``) and loading the torch port's
state-dict files (harritaylor/torchvggish release v0.1): ``vggish-10086976.pth`` (the network)
and ``vggish_pca_params-970ea276.pth`` (PCA for the released, quantised embeddings).

Log-mel, as ``mel_features.log_mel_spectrogram`` with VGGish's parameters: 400-sample (25 ms)
periodic Hann frames every 160 samples (10 ms), each zero-padded to a 512-point FFT; the
*magnitude* spectrum times a 64-band HTK-mel matrix (triangles linear in mel between 125 and
7500 Hz, the DC bin's weight forced to 0); ``log(mel + 0.01)``. One example is 96 frames
(0.975 s of audio), shape (96 time, 64 mel).

Network (TF-slim ``vggish/embedding``): 3x3 'same' convolutions 64, 128, 256, 256, 512, 512 with
2x2 max-pools after the 1st, 2nd, 4th and 6th; the (512, 6, 4) map flattened in (time, mel,
channel) order as TF's NHWC flatten does; fully connected 4096, 4096, 128; ReLU after every
layer, the last included.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from scipy.fft import rfft
from scipy.signal import firwin, resample_poly
from torch import nn

from ..contracts import AudioCopy
from . import state_dict as sd

SAMPLE_RATE = 16_000
SOURCE_RATE = 48_000  # featpipe's one decode rate
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512
N_MELS = 64
FMIN, FMAX = 125.0, 7500.0
LOG_OFFSET = 0.01
FRAMES = 96  # frames per example (0.96 s of hops)
EXAMPLE_SAMPLES = (FRAMES - 1) * HOP + WINDOW  # 15,600 samples = 0.975 s feed one example
EMBEDDING = 128
PCA_MIN, PCA_MAX = -2.0, 2.0

MODEL_FILE = "vggish-10086976.pth"
PCA_FILE = "vggish_pca_params-970ea276.pth"
RELEASE = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
LAYOUT = f"torchvggish's {MODEL_FILE} layout: features.{{0,3,6,8,11,13}}, embeddings.{{0,2,4}}"

# Anti-alias filter for 48 -> 16 kHz: Kaiser-windowed sinc cut at 8 kHz, 90 dB stop band, 1 kHz
# transition (kaiserord gives 276 taps, beta 8.96; 289 keeps it odd and symmetric). Everything
# it changes lies above 7.5 kHz, where VGGish's highest mel band ends.
_FIR_TAPS, _FIR_BETA = 289, 8.96
RESAMPLE_MARGIN = _FIR_TAPS // 2  # 48 kHz samples each output sample reads on either side


# ---------------------------------------------------------------------------------- audio


@functools.lru_cache(maxsize=1)
def _fir() -> np.ndarray:
    return firwin(_FIR_TAPS, 8000.0, window=("kaiser", _FIR_BETA), fs=SOURCE_RATE)


def resample_to_16k(x: np.ndarray) -> np.ndarray:
    """48 kHz -> 16 kHz along the last axis; output sample ``j`` sits at input sample ``3 j``.

    Zero-phase polyphase FIR (scipy ``resample_poly``); samples within :data:`RESAMPLE_MARGIN`
    input samples of either end read zeros beyond them.
    """
    return resample_poly(np.asarray(x, np.float32), 1, 3, axis=-1, window=_fir()).astype(np.float32, copy=False)


# MUSIC-AVQA's WAVs come from moviepy 1.0.3 (``feat_script/extract_audio_cues/extract_audio.py``):
# moviepy reads every source through ffmpeg as 44.1 kHz 16-bit stereo (``-ar 44100 -ac 2 -f s16le``:
# FFmpeg's resampler and its down- or upmix, straight from the source rate), then
# ``write_audiofile(fps=16000)`` takes, for 16 kHz sample n, the 44.1 kHz frame
# round(44100 * n / 16000) (nearest frame, no anti-alias filter), clipped to +-0.99 -- as read
# through moviepy's buffer, which slips one frame each time it refills (:func:`moviepy_frame_map`).
# The 44.1 kHz frames come from the decoder (:data:`MOVIEPY_COPY`), made by the same resampler.
MOVIEPY_RATE = 44_100
MOVIEPY_COPY = AudioCopy(MOVIEPY_RATE, "stereo", "s16")
"""What moviepy's reader gets from ffmpeg; the decoder makes this copy with FFmpeg's resampler."""
_MOVIEPY_BUFFER = 200_000  # VideoFileClip's audio_buffersize (44.1 kHz frames)
_MOVIEPY_CHUNK = 2_000  # write_audiofile's buffersize (16 kHz samples per get_frame call)
_S16_CLIP = 32440  # int16(0.99 * 32768): moviepy's clip, truncated as its astype does


@functools.lru_cache(maxsize=8)
def moviepy_frame_map(duration: float) -> np.ndarray:
    """For each 16 kHz sample moviepy 1.0.3 writes, the 44.1 kHz frame it reads (-1: silence).

    A replay of ``AudioClip.iter_chunks`` (chunks of about 2,000 samples over
    ``int(16000 * duration)``) and ``FFMPEG_AudioReader.get_frame`` / ``buffer_around`` on frame
    indices only: the reader keeps a 200,000-frame buffer, and each refill keeps
    ``current_end - new_start + 1`` old frames -- one too many -- so from the first refill on
    every read returns the frame before the one asked for, one more at each refill (every 2.37 s
    after the first at 4.49 s: 24 frames, 0.54 ms, late at 60 s). ``duration`` is what ffmpeg prints ("Duration:", 0.01 s).
    The recording is assumed to hold ``int(44100 * duration)`` frames.
    """
    nframes = int(MOVIEPY_RATE * duration)
    cap = min(nframes + 1, _MOVIEPY_BUFFER)
    total = int(SAMPLE_RATE * duration)
    out = np.full(total, -1, np.int64)
    if total <= 0:
        return out
    pipe = [0]  # next frame ffmpeg's pipe delivers

    def read(n: int) -> tuple[int, int]:
        start, got = pipe[0], max(0, min(n, nframes - pipe[0]))
        pipe[0] += got
        return start, got

    start, length = read(cap)  # buffer_around(1) at open: frames [0, cap)
    bstart = 0  # what the reader believes buffer[0] is

    def refill(frame: int) -> None:
        nonlocal start, length, bstart
        new = max(0, frame - cap // 2)
        end = bstart + cap
        if new < end < new + cap:  # keep the overlap (plus the extra frame) and read the rest
            keep = min(end - new + 1, length)
            _, got = read(cap - (end - new + 1))
            start, length = start + length - keep, keep + got
        else:  # a jump: ffmpeg restarts at the new position
            pipe[0] = new
            start, length = read(cap)
        bstart = new

    bounds = np.linspace(0, total, total // _MOVIEPY_CHUNK + 2, endpoint=True, dtype=int)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        n = np.arange(lo, hi)
        tt = (1.0 / SAMPLE_RATE) * n  # moviepy's float arithmetic, kept
        inside = (tt >= 0) & (tt < duration)
        if not inside.any():
            continue
        frames = np.round(MOVIEPY_RATE * tt).astype(np.int64)[inside]
        if not 0 <= frames.min() - bstart < length:
            refill(int(frames.min()))
        elif not 0 <= frames.max() - bstart < length:
            refill(int(frames.max()))
        idx = frames - bstart
        if length < cap // 2:
            idx = idx - (cap // 2 - length + 1)
        idx = np.where(idx >= length, length - 1, idx)  # its IndexError fallback: repeat the last frame
        idx = np.where(idx < 0, idx + length, idx)  # numpy's negative indices
        out[n[inside]] = start + idx
    return out


def moviepy_16k(audio44: np.ndarray, a0: int, first: int, count: int, duration: float) -> np.ndarray:
    """16 kHz mono samples ``first .. first+count-1`` (absolute) as MUSIC-AVQA's WAVs hold them.

    ``audio44`` is the ``(2, n)`` 44.1 kHz 16-bit stereo copy (:data:`MOVIEPY_COPY`, values / 32768)
    whose column 0 is absolute frame ``a0``. ``duration``: the media's, as ffmpeg reports it. Per
    channel: the 44.1 kHz frame moviepy reads for each 16 kHz sample (:func:`moviepy_frame_map`),
    clipped as moviepy does; then the mean of the two channels. Samples moviepy would not write
    (past the duration) are 0.
    """
    table_map = moviepy_frame_map(round(duration + 1e-9, 2))
    n = np.arange(first, first + count)
    m44 = np.full(count, -1, np.int64)
    ok = (n >= 0) & (n < len(table_map))
    m44[ok] = table_map[n[ok]]
    written = m44 >= 0
    idx = m44[written] - a0
    if idx.size and (idx.min() < 0 or idx.max() >= audio44.shape[-1]):
        raise ValueError("moviepy_16k: the 44.1 kHz audio does not cover the frames moviepy reads")
    out = np.zeros(count, np.float64)
    s16 = np.round(np.asarray(audio44)[:, idx].astype(np.float64) * 32768)  # pick first, then convert
    out[written] = (np.clip(s16, -_S16_CLIP, _S16_CLIP) / 32768.0).mean(axis=0)
    return out.astype(np.float32)


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)  # HTK, as mel_features


@functools.lru_cache(maxsize=1)
def mel_matrix() -> np.ndarray:
    """(257, 64) float64: FFT-bin magnitudes -> mel bands, as AudioSet's ``spectrogram_to_mel_matrix``."""
    bins = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1))[:, None]
    edges = np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2)
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    w = np.maximum(0.0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))
    w[0] = 0.0  # HTK leaves the DC bin out
    return w


@functools.lru_cache(maxsize=1)
def _window() -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)  # periodic


def log_mel_examples(audio: np.ndarray) -> np.ndarray:
    """``(n, >= 15600)`` float 16 kHz audio -> ``(n, 96, 64)`` float32 log-mel examples."""
    # float64 as AudioSet computes it (float32 errs by up to 2e-4 in quiet bands next to loud ones);
    # the cost is negligible beside the network.
    audio = np.asarray(audio, np.float64)
    if audio.ndim != 2 or audio.shape[1] < EXAMPLE_SAMPLES:
        raise ValueError(f"vggish needs (n, >= {EXAMPLE_SAMPLES}) samples per example, got {audio.shape}")
    frames = np.lib.stride_tricks.sliding_window_view(audio[:, :EXAMPLE_SAMPLES], WINDOW, axis=1)[:, ::HOP]
    mag = np.abs(rfft(frames * _window(), n=N_FFT, axis=-1))
    return np.log(mag @ mel_matrix() + LOG_OFFSET).astype(np.float32)


# ---------------------------------------------------------------------------------- network


class VGGish(nn.Module):
    """The VGGish network with torchvggish's module names (its state dict loads as is)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)  # convs at 0, 3, 6, 8, 11, 13
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING), nn.ReLU(inplace=True),  # TF-slim applies ReLU to fc2 too
        )

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        """``(n, 96, 64)`` log-mel examples -> ``(n, 128)`` embeddings."""
        x = self.features(examples.unsqueeze(1))  # (n, 512, 6 time, 4 mel)
        return self.embeddings(x.permute(0, 2, 3, 1).flatten(1))  # TF flattens NHWC


def check_model_file(path: str | Path) -> None:
    """Check ``path`` holds the torchvggish network (names and shapes; cheap, memory-mapped)."""
    sd.check_file(path, VGGish, LAYOUT)


def load_model(path: str | Path) -> VGGish:
    """The network with the weights of ``path`` (torchvggish layout), in eval mode."""
    return sd.load_into(VGGish(), path, LAYOUT)


def load_pca(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvectors (128, 128), means (128,)) float32 from torchvggish's PCA file."""
    state = sd.read(path)
    try:
        vectors, means = state["pca_eigen_vectors"], state["pca_means"]
    except KeyError:
        raise sd.StateDictError(f"{path} lacks pca_eigen_vectors / pca_means (expected {PCA_FILE})") from None
    if tuple(vectors.shape) != (EMBEDDING, EMBEDDING) or means.numel() != EMBEDDING:
        raise sd.StateDictError(f"{path}: PCA shapes {tuple(vectors.shape)} / {tuple(means.shape)}, "
                                 f"expected ({EMBEDDING}, {EMBEDDING}) / ({EMBEDDING},)")
    return vectors.float(), means.reshape(-1).float()


def postprocess(emb: torch.Tensor, vectors: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """AudioSet's release transform: PCA (with whitening), clip to [-2, 2], 8-bit levels 0..255 (as floats)."""
    pca = (emb - means) @ vectors.T
    return torch.round((pca.clamp(PCA_MIN, PCA_MAX) - PCA_MIN) * (255.0 / (PCA_MAX - PCA_MIN)))


__all__ = [
    "EXAMPLE_SAMPLES", "MODEL_FILE", "PCA_FILE", "RELEASE", "VGGish", "check_model_file", "load_model",
    "MOVIEPY_COPY", "load_pca", "log_mel_examples", "mel_matrix", "moviepy_16k", "postprocess", "resample_to_16k",
]
