"""Synthetic scenes: which instruments, where, when, how loud and how fast; the ground truth.

A :class:`Scene` is everything the sound, the picture and the answers are computed from.
It is drawn once per video from a seeded :class:`numpy.random.Generator` and saved as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

KINDS: tuple[str, ...] = (
    "piano", "xylophone", "acoustic_guitar", "violin", "cello", "flute", "trumpet", "drum")
"""Instrument kinds, named as in MUSIC-AVQA's answers."""

REGISTER: dict[str, tuple[int, int]] = {
    # MIDI note range each kind plays in; keeps each kind's pitch plausible (and 'lowest' meaningful).
    "piano": (48, 76), "xylophone": (72, 96), "acoustic_guitar": (45, 69), "violin": (67, 91),
    "cello": (38, 62), "flute": (72, 93), "trumpet": (58, 79), "drum": (33, 45),
}
PITCHED = frozenset(k for k in KINDS if k != "drum")

POSITIONS: tuple[str, ...] = ("left", "middle", "right")
POSITION_X = {"left": 0.2, "middle": 0.5, "right": 0.8}  # sprite centre, fraction of the width
POSITION_PAN = {"left": -0.75, "middle": 0.0, "right": 0.75}  # -1 = hard left, +1 = hard right

LEVELS_DB = (-36.0, -30.0, -24.0, -18.0)  # RMS while playing; 6 dB apart so 'louder' is clear
RATES = (1.0, 2.0, 4.0, 8.0)  # notes per second; a factor 2 apart so 'more rhythmic' is clear
BACKGROUNDS = ("indoor", "outdoor")
_PENTATONIC = (0, 2, 4, 7, 9)


@dataclass(frozen=True)
class Note:
    onset: float  # seconds
    duration: float  # seconds (struck and plucked notes decay within it)
    midi: int


@dataclass(frozen=True)
class Source:
    """One instrument. ``position`` is None when it is off screen (heard, not seen)."""

    kind: str
    position: str | None
    sounding: bool  # False: a visible instrument that never plays
    start: float  # sounding interval [start, end) in seconds; 0, 0 when silent
    end: float
    level_db: float  # RMS over [start, end) of the source's power summed over both channels
    rate: float  # notes per second
    pan: float
    notes: tuple[Note, ...] = ()

    @property
    def visible(self) -> bool:
        return self.position is not None

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def median_pitch(self) -> float:
        return float(np.median([n.midi for n in self.notes])) if self.notes else float("nan")


@dataclass(frozen=True)
class Voiceover:
    start: float
    end: float
    level_db: float
    f0: float  # mean speaking pitch in Hz


@dataclass(frozen=True)
class Scene:
    video_id: str
    seed: list[int]
    seconds: float
    background: str
    sources: tuple[Source, ...]
    voiceover: Voiceover | None = None
    palette: tuple[int, ...] = field(default=(0,))  # small per-scene colour variation of the background

    def always_playing(self, s: Source, tol: float = 0.05) -> bool:
        return s.sounding and s.start <= tol and s.end >= self.seconds - tol

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for s in d["sources"]:
            s["notes"] = [[n["onset"], n["duration"], n["midi"]] for n in s["notes"]]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Scene":
        sources = tuple(
            Source(**{**s, "notes": tuple(Note(*n) for n in s["notes"])}) for s in d["sources"])
        vo = Voiceover(**d["voiceover"]) if d.get("voiceover") else None
        return cls(video_id=d["video_id"], seed=list(d["seed"]), seconds=d["seconds"],
                   background=d["background"], sources=sources, voiceover=vo,
                   palette=tuple(d["palette"]))


def _q(x: float, step: float = 0.25) -> float:
    """Round times to a grid so the JSON stays short and comparisons are exact."""
    return round(round(x / step) * step, 6)


def _notes(rng: np.random.Generator, kind: str, start: float, end: float, rate: float,
           key: int) -> tuple[Note, ...]:
    lo, hi = REGISTER[kind]
    scale = [m for m in range(lo, hi + 1) if (m - key) % 12 in _PENTATONIC]
    i = int(rng.integers(len(scale) // 3, 2 * len(scale) // 3 + 1))
    out, period, t = [], 1.0 / rate, start
    while t < end - 1e-9:
        dur = min(period, end - t)
        out.append(Note(round(t, 6), round(dur, 6), int(scale[i])))
        i = int(np.clip(i + rng.integers(-2, 3), 0, len(scale) - 1))  # a small melodic random walk
        t = start + len(out) * period
    return tuple(out)


def _interval(rng: np.random.Generator, seconds: float) -> tuple[float, float]:
    """Sounding interval: whole video about 40% of the time, else enters late and/or leaves early."""
    if rng.random() < 0.4:
        return 0.0, seconds
    start = _q(rng.uniform(0.0, 0.55 * seconds)) if rng.random() < 0.8 else 0.0
    if rng.random() < 0.5:
        return start, seconds
    end = min(seconds, _q(rng.uniform(start + min(2.0, seconds - start), seconds)))
    return start, max(end, min(seconds, start + 1.0))


def sample_scene(seed: int, index: int, seconds: float = 10.0) -> Scene:
    """Draw scene ``index`` of a dataset with ``seed``; independent of all other scenes."""
    rng = np.random.default_rng([seed, index])
    n_visible = int(rng.choice([1, 2, 3], p=[0.25, 0.3, 0.45]))
    n_off = min(4 - n_visible, int(rng.choice([0, 1, 2], p=[0.6, 0.28, 0.12])))
    positions = sorted(rng.choice(3, size=n_visible, replace=False).tolist())
    ensemble = rng.random() < 0.2  # all visible instruments of one kind (a violin trio ...)
    kinds: list[str] = []
    for i in range(n_visible + n_off):
        if kinds and (rng.random() < 0.25 or (ensemble and i < n_visible)):
            kinds.append(kinds[int(rng.integers(len(kinds)))])  # same kind again (two violins ...)
        else:
            kinds.append(KINDS[int(rng.integers(len(KINDS)))])
    silent = [i < n_visible and rng.random() < 0.15 for i in range(len(kinds))]
    if all(silent[:n_visible]) and n_off == 0:
        silent[int(rng.integers(n_visible))] = False
    key = int(rng.integers(12))
    sources = []
    for i, kind in enumerate(kinds):
        pos = POSITIONS[positions[i]] if i < n_visible else None
        pan = POSITION_PAN[pos] if pos else round(float(rng.uniform(-0.3, 0.3)), 3)
        rate = float(rng.choice(RATES))
        level = float(rng.choice(LEVELS_DB))
        if silent[i]:
            sources.append(Source(kind, pos, False, 0.0, 0.0, level, rate, pan))
            continue
        start, end = _interval(rng, seconds)
        sources.append(Source(kind, pos, True, start, end, level, rate, pan,
                              _notes(rng, kind, start, end, rate, key)))
    voiceover = None
    if rng.random() < 0.5:  # voiceover in half the videos
        a = _q(rng.uniform(0.0, max(0.0, seconds - 2.0)))
        b = min(seconds, _q(rng.uniform(a + 1.5, min(seconds, a + 5.0) + 1e-9)))
        voiceover = Voiceover(a, max(b, a + 0.25),
                              float(rng.choice([-30.0, -24.0])), round(float(rng.uniform(95, 200)), 1))
    background = BACKGROUNDS[int(rng.integers(2))]
    palette = tuple(int(v) for v in rng.integers(0, 40, size=6))
    return Scene(video_id=f"{index + 1:08d}", seed=[seed, index], seconds=float(seconds),
                 background=background, sources=tuple(sources), voiceover=voiceover, palette=palette)
