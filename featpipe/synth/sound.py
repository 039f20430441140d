"""Sound: numpy synthesis of eight instrument timbres and a speech-like voiceover, 48 kHz stereo.

Each kind has its own excitation and envelope, so they are told apart by ear and by model:

- struck, decaying: ``piano`` (inharmonic partials, long decay), ``xylophone`` (bar modes
  1 : 3.93 : 9.2, short decay, mallet click)
- plucked: ``acoustic_guitar`` (comb-shaped spectrum of a string plucked near the bridge, upper
  partials die first)
- bowed, sustained with delayed vibrato: ``violin`` (high, bright body resonances), ``cello`` (low)
- blown: ``flute`` (nearly sinusoidal with breath noise, slow attack)
- brass: ``trumpet`` (brightness grows with loudness, pitch scoop at the attack)
- drum: ``drum`` (filtered noise burst plus a pitch-dropping thump)

A source's notes come from the scene; its signal is scaled so its RMS over its sounding
interval equals the scene's ``level_db``, then panned with a constant-power law (so the power
summed over both channels keeps that RMS).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from .scene import Note, Scene, Source, Voiceover

SAMPLE_RATE = 48_000
_TAIL = {"piano": 1.2, "xylophone": 0.5, "acoustic_guitar": 1.0, "drum": 0.35}  # ring-out, seconds


def _hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def _env(m: int, sr: int, attack: float, release: float) -> np.ndarray:
    """Linear attack, flat sustain, linear release over m samples."""
    e = np.ones(m)
    a, r = max(1, min(m, int(attack * sr))), max(1, min(m // 2, int(release * sr)))
    e[:a] = np.linspace(0.0, 1.0, a, endpoint=False)
    e[m - r:] *= np.linspace(1.0, 0.0, r)
    return e


def _partials(t: np.ndarray, freqs, amps, decays, sr: int) -> np.ndarray:
    out = np.zeros_like(t)
    for f, a, d in zip(freqs, amps, decays):
        if f < 0.45 * sr:
            out += a * np.exp(-d * t) * np.sin(2 * np.pi * f * t)
    return out


def _bowed_or_blown(f0: float, t: np.ndarray, sr: int, amps, vib_depth: float, vib_rate: float,
                    vib_delay: float) -> np.ndarray:
    # Vibrato fades in after vib_delay seconds, as players do.
    ramp = np.clip((t - vib_delay) / 0.2, 0.0, 1.0)
    f = f0 * 2.0 ** (vib_depth / 12 * ramp * np.sin(2 * np.pi * vib_rate * t))
    phase = 2 * np.pi * np.cumsum(f) / sr
    out = np.zeros_like(t)
    for k, a in enumerate(amps, start=1):
        if k * f0 < 0.45 * sr:
            out += a * np.sin(k * phase)
    return out


def _body_gain(freqs: np.ndarray, resonances) -> np.ndarray:
    return 1.0 + sum(g * np.exp(-(((freqs - fc) / bw) ** 2)) for fc, bw, g in resonances)


def synth_note(kind: str, note: Note, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One note of ``kind`` (mono). Struck/plucked notes ring past ``note.duration``."""
    f0 = _hz(note.midi)
    length = max(note.duration, _TAIL.get(kind, 0.0))
    m = max(1, int(round(length * sr)))
    t = np.arange(m) / sr
    if kind == "piano":
        k = np.arange(1, 11)
        freqs = k * f0 * np.sqrt(1 + 0.0004 * k**2)  # stiff-string inharmonicity
        x = _partials(t, freqs, 1.0 / k**1.3, 1.2 + 0.5 * k, sr)
        x += 0.5 * _partials(t, freqs * 1.0015, 1.0 / k**1.5, 1.5 + 0.6 * k, sr)  # detuned unison string
        return x * _env(m, sr, 0.002, 0.02)
    if kind == "xylophone":
        x = _partials(t, f0 * np.array([1.0, 3.93, 9.2]), [1.0, 0.45, 0.15], [6.0, 14.0, 30.0], sr)
        click = rng.standard_normal(m) * np.exp(-t / 0.002) * 0.6
        return (x + click) * _env(m, sr, 0.001, 0.01)
    if kind == "acoustic_guitar":
        k = np.arange(1, 15)
        amps = np.abs(np.sin(np.pi * k * 0.18)) / k  # plucked at 18% of the string length
        return _partials(t, k * f0, amps, 1.5 + 0.9 * k, sr) * _env(m, sr, 0.001, 0.02)
    if kind in ("violin", "cello"):
        k = np.arange(1, 17)
        res = ((550, 250, 2.0), (2800, 900, 1.5)) if kind == "violin" else ((220, 120, 2.0), (900, 400, 1.2))
        amps = _body_gain(k * f0, res) / k
        x = _bowed_or_blown(f0, t, sr, amps, 0.3 if kind == "violin" else 0.22,
                            5.8 if kind == "violin" else 5.0, 0.12)
        bow = lfilter([0.3], [1, -0.7], rng.standard_normal(m)) * 0.03  # rosin noise
        att = 0.07 if kind == "violin" else 0.12
        return (x + bow) * _env(m, sr, att, 0.06)
    if kind == "flute":
        x = _bowed_or_blown(f0, t, sr, [1.0, 0.22, 0.09, 0.03], 0.1, 4.5, 0.15)
        noise = rng.standard_normal(m)
        breath = lfilter([0.15], [1, -0.85], noise) - lfilter([0.15], [1, -0.98], noise)
        swell = 1.0 + 0.15 * np.exp(-t / 0.08)
        return (x * swell + 0.35 * breath) * _env(m, sr, 0.08, 0.05)
    if kind == "trumpet":
        e = _env(m, sr, 0.04, 0.05)
        scoop = f0 * 2.0 ** (-0.3 / 12 * np.exp(-t / 0.03))  # starts a little flat
        phase = 2 * np.pi * np.cumsum(scoop) / sr
        x = np.zeros(m)
        for k in range(1, 21):
            if k * f0 < 0.45 * sr:
                x += e ** (1 + 0.3 * (k - 1)) * np.sin(k * phase) / k**0.6  # brighter when louder
        return x
    if kind == "drum":
        noise = lfilter([0.5], [1, -0.5], rng.standard_normal(m)) * np.exp(-t * 28)
        fdrop = f0 * (1 + np.exp(-t / 0.03))  # pitch drops from 2 f0 to f0
        thump = np.sin(2 * np.pi * np.cumsum(fdrop) / sr) * np.exp(-t * 11)
        return (0.6 * noise + thump) * _env(m, sr, 0.001, 0.01)
    raise ValueError(f"unknown instrument kind {kind!r}")


def _source_rng(scene: Scene, i: int) -> np.random.Generator:
    return np.random.default_rng([*scene.seed, 1_000 + i])


def render_source(source: Source, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Mono signal of one source on the scene timeline (n samples), scaled to its level."""
    x = np.zeros(n)
    if not source.sounding:
        return x
    for note in source.notes:
        i = int(round(note.onset * sr))
        y = synth_note(source.kind, note, sr, rng)[: n - i]
        x[i:i + len(y)] += y
    a, b = int(round(source.start * sr)), min(n, int(round(source.end * sr)))
    x[b:] = 0.0  # the instrument stops at its end time; a 20 ms fade avoids a click
    fade = min(b - a, int(0.02 * sr))
    x[b - fade:b] *= np.linspace(1.0, 0.0, fade)
    rms = np.sqrt(np.mean(x[a:b] ** 2))
    return x * (10 ** (source.level_db / 20) / rms) if rms > 0 else x


_VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (570, 840, 2410),
           (300, 870, 2240), (660, 1720, 2410), (490, 1350, 1690))


def render_voiceover(vo: Voiceover, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Speech-like signal: voiced syllables (formant-shaped harmonics, 4-5 per second) in words."""
    x = np.zeros(n)
    t0 = vo.start
    while t0 < vo.end - 0.15:
        for _ in range(int(rng.integers(1, 4))):  # syllables per word
            dur = float(rng.uniform(0.12, 0.28))
            if t0 + dur > vo.end:
                break
            m = int(dur * sr)
            t = np.arange(m) / sr
            f = vo.f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(1, 3) * t + rng.uniform(0, 6.3)))
            phase = 2 * np.pi * np.cumsum(f) / sr
            formants = _VOWELS[int(rng.integers(len(_VOWELS)))]
            y = np.zeros(m)
            for k in range(1, int(4000 / vo.f0)):
                fk = k * vo.f0
                gain = sum(np.exp(-(((fk - fc) / (60 + 0.05 * fc)) ** 2)) / (1 + j) for j, fc in enumerate(formants))
                y += (0.05 + gain) / k**0.7 * np.sin(k * phase)
            y *= np.sin(np.pi * np.arange(m) / m) ** 2
            i = int(t0 * sr)
            if rng.random() < 0.4:  # a fricative before the vowel
                c = int(0.05 * sr)
                hiss = np.diff(rng.standard_normal(c + 1)) * np.hanning(c) * 0.15
                j = max(0, i - c)
                x[j:j + c] += hiss[: n - j][: c]
            x[i:i + m] += y[: n - i]
            t0 += dur + float(rng.uniform(0.0, 0.05))
        t0 += float(rng.uniform(0.1, 0.35))  # pause between words
    a, b = int(vo.start * sr), int(vo.end * sr)
    x[:a] = 0.0  # a fricative may lead the first syllable; keep the voice inside its interval
    x[b:] = 0.0
    rms = np.sqrt(np.mean(x[a:b] ** 2))
    return x * (10 ** (vo.level_db / 20) / rms) if rms > 0 else x


def pan_stereo(x: np.ndarray, pan: float) -> np.ndarray:
    """Constant-power pan: -1 hard left, 0 centre, +1 hard right. Returns (2, n)."""
    theta = (pan + 1) * np.pi / 4
    return np.stack([x * np.cos(theta), x * np.sin(theta)])


def render_stems(scene: Scene, sr: int = SAMPLE_RATE) -> list[np.ndarray]:
    """One (2, n) float64 array per source, in scene order, then the voiceover if any."""
    n = int(round(scene.seconds * sr))
    stems = [pan_stereo(render_source(s, n, sr, _source_rng(scene, i)), s.pan)
             for i, s in enumerate(scene.sources)]
    if scene.voiceover is not None:
        vo = render_voiceover(scene.voiceover, n, sr, _source_rng(scene, 999))
        stems.append(pan_stereo(vo, 0.0))
    return stems


def render_audio(scene: Scene, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The scene's mix, (2, n) float32 in [-1, 1].

    Levels are chosen so a mix rarely clips; when it would, the whole mix is scaled down
    (every source by the same factor, so loudness order is kept).
    """
    mix = np.sum(render_stems(scene, sr), axis=0)
    peak = float(np.max(np.abs(mix))) if mix.size else 0.0
    if peak > 0.99:
        mix *= 0.99 / peak
    return mix.astype(np.float32)
