"""How much featpipe's 16 kHz audio for VGGish differs from the two reference resampling paths.

Same 44.1 kHz stereo source PCM (synthetic music: harmonic tones, drum-like noise bursts up to
20 kHz, and a quiet passage), then per second k the 0.975 s VGGish example:

  ffmpeg   what MUSIC-AVQA's scripts really feed VGGish: moviepy/ffmpeg writes a 16 kHz 16-bit
           WAV (swresample 44.1 -> 16 kHz, continuous), then mono as the channel mean
  resampy  what ``vggish_input.waveform_to_examples`` does to a WAV that is not 16 kHz:
           mono mean, then ``resampy.resample(second_k, 44100, 16000)`` per one-second slice
  featpipe swresample 44.1 -> 48 kHz (featpipe's one decode), mono mean, then
           ``featpipe.models.vggish.resample_to_16k`` on the absolute grid

Reported per pair: SNR of the examples' waveforms (dB, worst second, and in the 125-7500 Hz
band VGGish sees), log-mel max / mean abs difference, and the cosine of VGGish embeddings with
He-initialised random weights (worst second). Needs ``pip install resampy``.

    python bench/bench_vggish_resample.py [--seconds 60]
"""

from __future__ import annotations

import argparse

import av
import numpy as np
import torch

from featpipe.models import vggish as m

SRC = 44_100


def source(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SRC)
    t = np.arange(n) / SRC
    f0 = 110.0 * 2 ** (rng.integers(0, 36, int(seconds / 0.25) + 1) / 12)[(t / 0.25).astype(int)]
    tones = sum(np.sin(2 * np.pi * h * np.cumsum(f0) / SRC) / h for h in range(1, 15))
    hits = np.zeros(n)
    hits[rng.integers(0, n, int(seconds * 3))] = 1.0
    drums = np.convolve(hits, np.exp(-np.arange(4000) / 600.0), mode="same") * rng.normal(size=n)
    sig = 0.2 * tones + 0.3 * drums
    sig[(t % 20) > 15] *= 0.01  # a quiet passage (-40 dB) every 20 s
    left, right = sig, 0.7 * sig + 0.05 * rng.normal(size=n) * 0.2
    return np.clip(np.stack([left, right]), -1, 1).astype(np.float32)


def swr(pcm: np.ndarray, rate: int, fmt: str = "fltp") -> np.ndarray:
    """FFmpeg's swresample (PyAV), continuous over the whole signal, flushed."""
    res = av.AudioResampler(format=fmt, layout="stereo", rate=rate)
    out = []
    for i in range(0, pcm.shape[1], 1024):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i:i + 1024]), format="fltp", layout="stereo")
        frame.sample_rate = SRC
        frame.pts = i
        out += [f.to_ndarray() for f in res.resample(frame)]
    out += [f.to_ndarray() for f in res.resample(None)]
    arr = np.concatenate(out, axis=1) if fmt == "fltp" else np.concatenate(out, axis=1).reshape(-1, 2).T
    return arr.astype(np.float32) / (32768.0 if fmt == "s16" else 1.0)


def examples_ffmpeg(pcm: np.ndarray, secs: int) -> np.ndarray:
    y = swr(pcm, 16_000, "s16").mean(axis=0)  # 16-bit WAV, as moviepy writes it
    return np.stack([y[k * 16000:k * 16000 + m.EXAMPLE_SAMPLES] for k in range(secs)])


def examples_resampy(pcm: np.ndarray, secs: int) -> np.ndarray:
    import resampy

    mono = pcm.astype(np.float64).mean(axis=0)
    return np.stack([resampy.resample(mono[k * SRC:(k + 1) * SRC], SRC, 16000)[:m.EXAMPLE_SAMPLES] for k in range(secs)])


def examples_featpipe(pcm: np.ndarray, secs: int) -> np.ndarray:
    y = m.resample_to_16k(swr(pcm, 48_000).mean(axis=0))
    return np.stack([y[k * 16000:k * 16000 + m.EXAMPLE_SAMPLES] for k in range(secs)])


def band(x: np.ndarray) -> np.ndarray:
    spec = np.fft.rfft(x, axis=-1)
    f = np.fft.rfftfreq(x.shape[-1], 1 / 16000)
    spec[..., (f < 125) | (f > 7500)] = 0
    return np.fft.irfft(spec, n=x.shape[-1], axis=-1)


def snr(ref: np.ndarray, x: np.ndarray) -> float:
    per = 10 * np.log10(np.sum(ref ** 2, -1) / np.maximum(np.sum((ref - x) ** 2, -1), 1e-30))
    return float(per.min())


def he_vggish(seed: int = 0) -> m.VGGish:
    torch.manual_seed(seed)
    net = m.VGGish()
    for mod in net.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(mod.weight)
            torch.nn.init.normal_(mod.bias, 0, 0.1)
    return net.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    args = ap.parse_args()
    pcm = source(args.seconds + 1)
    ex = {"ffmpeg": examples_ffmpeg(pcm, args.seconds), "resampy": examples_resampy(pcm, args.seconds),
          "featpipe": examples_featpipe(pcm, args.seconds)}
    net = he_vggish()
    mel = {k: m.log_mel_examples(v) for k, v in ex.items()}
    with torch.no_grad():
        emb = {k: net(torch.from_numpy(v)).numpy().astype(np.float64) for k, v in mel.items()}
    print(f"{args.seconds} s, 44.1 kHz stereo source; worst second of {args.seconds}")
    print(f"{'pair':22s} {'SNR dB':>8s} {'SNR 125-7500':>13s} {'logmel max':>11s} {'logmel mean':>12s} {'emb cos min':>12s}")
    for a, b in (("featpipe", "ffmpeg"), ("featpipe", "resampy"), ("resampy", "ffmpeg")):
        cos = (emb[a] * emb[b]).sum(1) / (np.linalg.norm(emb[a], axis=1) * np.linalg.norm(emb[b], axis=1))
        d = np.abs(mel[a] - mel[b])
        print(f"{a + ' vs ' + b:22s} {snr(ex[b], ex[a]):8.1f} {snr(band(ex[b]), band(ex[a])):13.1f} "
              f"{d.max():11.4f} {d.mean():12.5f} {cos.min():12.6f}")


if __name__ == "__main__":
    main()
