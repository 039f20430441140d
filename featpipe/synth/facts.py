"""Facts about a scene that the question templates share, and the margins that make answers clear.

Everything here reads the :class:`~featpipe.synth.scene.Scene` only; nothing is random.
"""

from __future__ import annotations

from .scene import POSITIONS, Scene, Source

LEVEL_MARGIN_DB = 5.0
RATE_RATIO = 1.5
LONGER_MARGIN_S = 1.5
ENTRY_MARGIN_S = 0.75
SAME_TIME_S = 0.05
OVERLAP_MIN_S = 2.0
PITCH_MARGIN = 5.0  # semitones


def sounding(sc: Scene) -> list[Source]:
    return [s for s in sc.sources if s.sounding]


def visible(sc: Scene) -> list[Source]:
    return sorted((s for s in sc.sources if s.visible), key=lambda s: POSITIONS.index(s.position))


def vis_sounding(sc: Scene) -> list[Source]:
    return [s for s in visible(sc) if s.sounding]


def unique_kind(sources: list[Source], kind: str) -> Source | None:
    found = [s for s in sources if s.kind == kind]
    return found[0] if len(found) == 1 else None


def neighbour(sc: Scene, src: Source, side: str) -> Source | None:
    vis = visible(sc)
    i = vis.index(src)
    if side == "left":
        return vis[i - 1] if i > 0 else None
    return vis[i + 1] if i + 1 < len(vis) else None


def entry_at(sc: Scene, i: int) -> Source | None:
    """The i-th sounding source to come in, if its entry is clear of its neighbours' entries."""
    order = sorted(sounding(sc), key=lambda s: s.start)
    if not -len(order) <= i < len(order) or len(order) < 2:
        return None
    i %= len(order)
    if i > 0 and order[i].start - order[i - 1].start < ENTRY_MARGIN_S:
        return None
    if i + 1 < len(order) and order[i + 1].start - order[i].start < ENTRY_MARGIN_S:
        return None
    return order[i]


def first_last(sc: Scene) -> dict[str, Source]:
    out = {}
    for fl, i in (("first", 0), ("last", -1)):
        s = entry_at(sc, i)
        if s is not None:
            out[fl] = s
    return out


def louder(a: Source, b: Source) -> bool | None:
    d = a.level_db - b.level_db
    return None if abs(d) < LEVEL_MARGIN_DB else d > 0


def more_rhythmic(a: Source, b: Source) -> bool | None:
    if max(a.rate, b.rate) < RATE_RATIO * min(a.rate, b.rate):
        return None
    return a.rate > b.rate


def longer(a: Source, b: Source) -> bool | None:
    d = a.duration - b.duration
    return None if abs(d) < LONGER_MARGIN_S else d > 0


def overlap(a: Source, b: Source) -> float:
    return max(0.0, min(a.end, b.end) - max(a.start, b.start))
