"""Beat and tempo ground truth of a scene, for checking beat trackers (written into the scene files).

Every note onset of a synthetic scene is known, so its rhythm is known exactly:

* each sounding source beats at its own note rate: its beats are its note onsets and its tempo
  is ``60 * rate`` BPM;
* the scene's **pulse** is carried by one source: the sounding one with a sharp attack
  (:data:`ATTACK_KINDS`: struck or plucked, whose onsets a listener and an onset detector hear)
  that sounds longest, else the longest of all; ties go to the louder, then the earlier source.
  Its note rate folded by octaves (every 2nd, 4th... note) to at most :data:`MAX_TACTUS` BPM is
  the scene tempo (the tactus), and those notes are the scene's beats, counted from its first
  note. When a rate is folded the phase is a convention: all synthetic notes are equally
  accented, so the off-beat notes would serve a listener as well.
* ``tempi_bpm`` is the MIREX-style pair of the two metrical levels the notes support, slower
  first: ``[tempo, 2 * tempo]`` when the source plays that fast, else ``[tempo / 2, tempo]``.

Nothing here is random; the dict is a function of the scene alone.
"""

from __future__ import annotations

from typing import Any

from .scene import Scene, Source

ATTACK_KINDS = frozenset({"drum", "xylophone", "piano", "acoustic_guitar"})
MAX_TACTUS = 160.0  # BPM: the fastest pulse counted as the beat (faster rates fold down)


def tactus(bpm: float) -> tuple[float, int]:
    """``(tempo, step)``: the note rate ``bpm`` halved ``log2(step)`` times to at most MAX_TACTUS."""
    step = 1
    while bpm / step > MAX_TACTUS:
        step *= 2
    return bpm / step, step


def pulse_source(sc: Scene) -> int | None:
    """Index of the source that carries the scene's pulse (the rule above), None if none sounds."""
    sounding = [i for i, s in enumerate(sc.sources) if s.sounding and s.notes]
    if not sounding:
        return None

    def key(i: int) -> tuple:
        s = sc.sources[i]
        return (s.kind in ATTACK_KINDS, round(s.duration, 6), s.level_db, -i)

    return max(sounding, key=key)


def _beats(s: Source, step: int = 1) -> list[float]:
    return [n.onset for n in s.notes[::step]]


def rhythm_truth(sc: Scene) -> dict[str, Any]:
    """The ``"rhythm"`` entry of a scene file: per-source beats and tempo, and the scene pulse."""
    sources = [{"source": i, "kind": s.kind, "position": s.position, "tempo_bpm": 60.0 * s.rate,
                "beats": _beats(s)}
               for i, s in enumerate(sc.sources) if s.sounding and s.notes]
    i = pulse_source(sc)
    pulse = None
    if i is not None:
        s = sc.sources[i]
        tempo, step = tactus(60.0 * s.rate)
        levels = [tempo, 2 * tempo] if 60.0 * s.rate >= 2 * tempo else [tempo / 2, tempo]
        pulse = {"source": i, "tempo_bpm": tempo, "tempi_bpm": levels, "beats": _beats(s, step)}
    return {"sources": sources, "pulse": pulse}
