"""How far featpipe's 16 kHz VGGish input is from MUSIC-AVQA's, and from the resampy assumption.

Same stereo source PCM (synthetic music: harmonic tones, noise-burst drums up to the source's
Nyquist, a quiet passage), at 44.1 or 48 kHz, optionally low-passed as AAC encoders do; then per
second k the 0.975 s VGGish example, five ways:

  musicavqa   what MUSIC-AVQA's scripts feed VGGish, made by moviepy 1.0.3 itself (the ``bench``
              extra): ``AudioFileClip`` (ffmpeg decodes to 44.1 kHz 16-bit) then
              ``write_audiofile(fps=16000)`` (nearest 44.1 kHz frame through its slipping
              buffer, no anti-alias filter, clip 0.99); mono as the channel mean
  resampy     what ``vggish_input.waveform_to_examples`` does to a WAV that is not 16 kHz: mono
              mean, ``resampy.resample(second_k, sr, 16000)`` per one-second slice
  ffmpeg16    a clean single resampling: swresample straight to 16 kHz (float), mono mean
  fp-moviepy  featpipe's default: the decoder's 44.1 kHz 16-bit stereo copy by swresample from the
              source (as moviepy's ffmpeg makes it), ``moviepy_16k``
  fp-fir      featpipe ``resample=fir``: 48 kHz decode, ``resample_to_16k``

Per pair: SNR of the examples (dB, worst second), log-mel max / mean abs difference, and the
cosine of VGGish embeddings with He-initialised random weights (worst second). Needs the
``bench`` extra (resampy, moviepy 1.0.3).

    python bench/bench_vggish_resample.py [--seconds 60] [--rate 44100] [--lowpass 16000]
"""

from __future__ import annotations

import argparse
import tempfile

import av
import numpy as np
import torch
from scipy.signal import butter, sosfiltfilt

from featpipe.models import vggish as m

def source(seconds: float, rate: int, lowpass: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 110.0 * 2 ** (rng.integers(0, 36, int(seconds / 0.25) + 1) / 12)[(t / 0.25).astype(int)]
    tones = sum(np.sin(2 * np.pi * h * np.cumsum(f0) / rate) / h for h in range(1, 15))
    hits = np.zeros(n)
    hits[rng.integers(0, n, int(seconds * 3))] = 1.0
    drums = np.convolve(hits, np.exp(-np.arange(4000) / 600.0), mode="same") * rng.normal(size=n)
    sig = 0.2 * tones + 0.3 * drums
    sig[(t % 20) > 15] *= 0.01  # a quiet passage (-40 dB) every 20 s
    pcm = np.stack([sig, 0.7 * sig + 0.01 * rng.normal(size=n) * (1 + 99 * ((t % 20) <= 15))])
    if lowpass:
        sos = butter(12, lowpass, fs=rate, output="sos")
        pcm = sosfiltfilt(sos, pcm, axis=1)
    return np.clip(pcm, -1, 1).astype(np.float32)


def swr(pcm: np.ndarray, src: int, rate: int, fmt: str = "fltp") -> np.ndarray:
    """FFmpeg's swresample (PyAV), continuous over the whole signal, flushed; float in [-1, 1]."""
    res = av.AudioResampler(format=fmt, layout="stereo", rate=rate)
    out = []
    for i in range(0, pcm.shape[1], 1024):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i:i + 1024]), format="fltp", layout="stereo")
        frame.sample_rate = src
        frame.pts = i
        out += [f.to_ndarray() for f in res.resample(frame)]
    out += [f.to_ndarray() for f in res.resample(None)]
    arr = np.concatenate(out, axis=1)
    if fmt == "s16":  # packed: (1, 2n) interleaved
        return arr.reshape(-1, 2).T.astype(np.float64) / 32768.0
    return arr.astype(np.float32)


def per_second(y: np.ndarray, secs: int) -> np.ndarray:
    return np.stack([y[k * 16000:k * 16000 + m.EXAMPLE_SAMPLES] for k in range(secs)]).astype(np.float32)


def moviepy_wav(pcm: np.ndarray, src: int, folder: str) -> np.ndarray:
    """MUSIC-AVQA's extract_audio.py with moviepy 1.0.3 itself: the 16 kHz WAV, mono as vggish_input makes it."""
    from moviepy.editor import AudioFileClip
    from scipy.io import wavfile

    wavfile.write(f"{folder}/src.wav", src, np.round(pcm.T * 32767).astype(np.int16))
    clip = AudioFileClip(f"{folder}/src.wav", buffersize=200000, fps=44100, nbytes=2)  # as VideoFileClip opens it
    clip.write_audiofile(f"{folder}/out.wav", fps=16000, logger=None)
    clip.close()
    return (wavfile.read(f"{folder}/out.wav")[1] / 32768.0).mean(axis=1)


def examples(pcm: np.ndarray, src: int, secs: int) -> dict[str, np.ndarray]:
    import resampy

    pcm = (np.round(pcm * 32767) / 32767).astype(np.float32)  # the source file is 16-bit
    with tempfile.TemporaryDirectory() as tmp:
        wav = moviepy_wav(pcm, src, tmp)
    mono = pcm.astype(np.float64).mean(axis=0)
    x48 = swr(pcm, src, 48_000)
    x44 = swr(pcm, src, 44_100, "s16")  # the decoder's AudioCopy(44100, "stereo", "s16")
    duration = pcm.shape[1] / src
    return {
        "musicavqa": per_second(wav, secs),
        "resampy": np.stack([resampy.resample(mono[k * src:(k + 1) * src], src, 16000)[:m.EXAMPLE_SAMPLES]
                             for k in range(secs)]).astype(np.float32),
        "ffmpeg16": per_second(swr(pcm, src, 16_000).mean(axis=0), secs),
        "fp-moviepy": np.stack([m.moviepy_16k(x44, 0, k * 16000, m.EXAMPLE_SAMPLES, duration) for k in range(secs)]),
        "fp-fir": per_second(m.resample_to_16k(x48.mean(axis=0)), secs),
    }


def snr(ref: np.ndarray, x: np.ndarray) -> float:
    per = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2, -1) / np.maximum(np.sum((ref - x.astype(np.float64)) ** 2, -1), 1e-30))
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
    ap.add_argument("--rate", type=int, default=44_100, help="source sample rate")
    ap.add_argument("--lowpass", type=float, default=0.0, help="low-pass the source (Hz), as AAC encoders do")
    args = ap.parse_args()
    ex = examples(source(args.seconds + 1, args.rate, args.lowpass), args.rate, args.seconds)
    net = he_vggish()
    mel = {k: m.log_mel_examples(v) for k, v in ex.items()}
    with torch.no_grad():
        emb = {k: net(torch.from_numpy(v)).numpy().astype(np.float64) for k, v in mel.items()}
    lp = f", low-passed at {args.lowpass:.0f} Hz" if args.lowpass else ", full band"
    print(f"{args.seconds} s, {args.rate} Hz stereo source{lp}; worst second of {args.seconds}")
    print(f"{'pair':26s} {'SNR dB':>7s} {'logmel max':>11s} {'logmel mean':>12s} {'emb cos min':>12s}")
    pairs = (("fp-moviepy", "musicavqa"), ("fp-fir", "musicavqa"), ("resampy", "musicavqa"),
             ("ffmpeg16", "musicavqa"), ("fp-fir", "resampy"), ("fp-fir", "ffmpeg16"))
    for a, b in pairs:
        cos = (emb[a] * emb[b]).sum(1) / (np.linalg.norm(emb[a], axis=1) * np.linalg.norm(emb[b], axis=1))
        d = np.abs(mel[a] - mel[b])
        print(f"{a + ' vs ' + b:26s} {snr(ex[b], ex[a]):7.1f} {d.max():11.4f} {d.mean():12.5f} {cos.min():12.6f}")


if __name__ == "__main__":
    main()
