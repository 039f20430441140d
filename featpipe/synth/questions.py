"""The 33 MUSIC-AVQA templates and how each answer follows from a :class:`Scene`.

Each template lists every question it can ask about a scene as ``(values, answer)``
candidates; a question is only a candidate when its answer is unambiguous under the margins of
:mod:`.facts` (e.g. "louder" needs 5 dB between the two, "first" needs 0.75 s before the next entry).
Which candidate is asked is the job of :mod:`featpipe.synth.balance`.

Words used in answers (conventions, also in docs/synth.md):

- *heard*: a sounding source, on or off screen; *in the video* / *appeared*: visible.
- *sounding in the video*: visible and sounding at some time.
- *always playing*: sounding from 0 to the end (0.05 s tolerance).
- *comes in* order, *first*, *last*, *before*, *after*: order of entry (start) times.
- *louder*: higher RMS level while playing; *more rhythmic*: higher note rate;
  *playing longer*: longer sounding interval; *lowest*: lowest median pitch.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations
from typing import Callable

from .facts import (ENTRY_MARGIN_S, LEVEL_MARGIN_DB, OVERLAP_MIN_S, PITCH_MARGIN, SAME_TIME_S, entry_at, first_last,
                    longer, louder, more_rhythmic, neighbour, overlap, sounding, unique_kind, vis_sounding, visible)
from .scene import KINDS, PITCHED, POSITIONS, Scene, Source

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
ORDINALS = ("first", "second", "third", "fourth")
YES_NO = ("yes", "no")

Candidate = tuple[tuple[str, ...], str]


@dataclass(frozen=True)
class Template:
    group: str
    qtype: str
    text: str  # exactly as in the real files (odd spaces and the full-width question mark kept)
    answers: tuple[str, ...]  # the answers the balancer evens out
    rule: str  # how the answer is computed, one line (docs/synth.md lists them)
    candidates: Callable[[Scene], list[Candidate]]


TEMPLATES: list[Template] = []


def _template(group: str, qtype: str, text: str, answers: tuple[str, ...], rule: str):
    def register(fn: Callable[[Scene], list[Candidate]]):
        TEMPLATES.append(Template(group, qtype, text, answers, rule, fn))
        return fn
    return register


def _yn(b: bool) -> str:
    return "yes" if b else "no"


# --- Audio ---------------------------------------------------------------------------------------

@_template("Audio", "Counting", "How many musical instruments were heard throughout the video?",
           NUMBERS[1:5], "number of sounding sources, on or off screen (the voiceover is not one)")
def _a_count(sc: Scene) -> list[Candidate]:
    n = len(sounding(sc))
    return [((), NUMBERS[n])] if n else []


@_template("Audio", "Counting", "Is there a <Object> sound?", YES_NO,
           "yes iff a sounding source (on or off screen) is of kind Object")
def _a_is_there(sc: Scene) -> list[Candidate]:
    heard = {s.kind for s in sounding(sc)}
    return [((k,), _yn(k in heard)) for k in KINDS]


@_template("Audio", "Counting", "Are there <Object> and <Object> sound? ", YES_NO,
           "yes iff both kinds are heard; 'no' is asked only when one of the two is heard or seen")
def _a_are_there(sc: Scene) -> list[Candidate]:
    return _both_kinds(sc, {s.kind for s in sounding(sc)})


def _both_kinds(sc: Scene, kinds: set[str]) -> list[Candidate]:
    """"Are there A and B": yes iff both are in ``kinds``; "no" only when one is seen or heard."""
    present = kinds | {s.kind for s in sc.sources}
    return [((a, b), _yn(a in kinds and b in kinds)) for a, b in permutations(KINDS, 2)
            if (a in kinds and b in kinds) or a in present or b in present]


def _pairwise_kinds(sc: Scene, cmp: Callable[[Source, Source], bool | None]) -> list[Candidate]:
    snd = sounding(sc)
    kinds = sorted({s.kind for s in snd if unique_kind(snd, s.kind)})
    out = []
    for a, b in permutations(kinds, 2):
        r = cmp(unique_kind(snd, a), unique_kind(snd, b))
        if r is not None:
            out.append(((a, b), _yn(r)))
    return out


@_template("Audio", "Comparative", "Is the <Object> louder than the <Object>?", YES_NO,
           "both kinds heard once each; yes iff the first's level is >= 5 dB above the second's")
def _a_louder(sc: Scene) -> list[Candidate]:
    return _pairwise_kinds(sc, louder)


@_template("Audio", "Comparative", "Is the <Object> more rhythmic than the <Object>?", YES_NO,
           "both kinds heard once each; yes iff the first's note rate is >= 1.5x the second's")
def _a_rhythmic(sc: Scene) -> list[Candidate]:
    return _pairwise_kinds(sc, more_rhythmic)


@_template("Audio", "Comparative", "Is the <Object> playing longer than the <Object>?", YES_NO,
           "both kinds heard once each; yes iff the first sounds >= 1.5 s longer in total")
def _a_longer(sc: Scene) -> list[Candidate]:
    return _pairwise_kinds(sc, longer)


# --- Visual --------------------------------------------------------------------------------------

@_template("Visual", "Counting", "Is there a <Object> in the entire video?", YES_NO,
           "yes iff a visible instrument (sounding or silent) is of kind Object")
def _v_is_there(sc: Scene) -> list[Candidate]:
    seen = {s.kind for s in visible(sc)}
    return [((k,), _yn(k in seen)) for k in KINDS]


@_template("Visual", "Counting", "Are there <Object> and <Object> instruments in the video?", YES_NO,
           "yes iff both kinds are visible; 'no' is asked only when one of the two is seen or heard")
def _v_are_there(sc: Scene) -> list[Candidate]:
    return _both_kinds(sc, {s.kind for s in visible(sc)})


@_template("Visual", "Counting", "How many <Object> are in the entire video?", NUMBERS[0:4],
           "number of visible instruments of kind Object (any of the eight kinds may be asked)")
def _v_how_many(sc: Scene) -> list[Candidate]:
    vis = visible(sc)
    return [((k,), NUMBERS[sum(s.kind == k for s in vis)]) for k in KINDS]


@_template("Visual", "Counting", "How many types of musical instruments appeared in the entire video?",
           NUMBERS[1:4], "number of distinct kinds among visible instruments")
def _v_types(sc: Scene) -> list[Candidate]:
    n = len({s.kind for s in visible(sc)})
    return [((), NUMBERS[n])] if n else []


@_template("Visual", "Location", "What is the instrument on the <LR> of <Object>?", KINDS,
           "Object is a kind seen once; answer: kind of the nearest visible instrument on that side")
def _v_on_side(sc: Scene) -> list[Candidate]:
    vis = visible(sc)
    out = []
    for s in vis:
        if unique_kind(vis, s.kind) is None:
            continue
        for side in ("left", "right"):
            n = neighbour(sc, s, side)
            if n is not None:
                out.append(((side, s.kind), n.kind))
    return out


@_template("Visual", "Location", "What kind of instrument is the <LRer> instrument? ", KINDS,
           "two or more visible; answer: kind of the leftmost (leftest) or rightmost (rightest)")
def _v_lrer(sc: Scene) -> list[Candidate]:
    vis = visible(sc)
    if len(vis) < 2:
        return []
    return [(("leftest",), vis[0].kind), (("rightest",), vis[-1].kind)]


@_template("Visual", "Location", "What kind of musical instrument is it?", KINDS,
           "exactly one visible instrument; answer: its kind")
def _v_what(sc: Scene) -> list[Candidate]:
    vis = visible(sc)
    return [((), vis[0].kind)] if len(vis) == 1 else []


@_template("Visual", "Location", "Where is the performance?", ("indoor", "outdoor"),
           "the background: indoor (wall, window, wooden floor) or outdoor (sky, sun, grass)")
def _v_where(sc: Scene) -> list[Candidate]:
    return [((), sc.background)]


# --- Audio-Visual --------------------------------------------------------------------------------

@_template("Audio-Visual", "Existential", "Is the <Object> in the video always playing?", YES_NO,
           "Object seen once and not also heard off screen; yes iff it sounds from start to end")
def _av_always(sc: Scene) -> list[Candidate]:
    vis = visible(sc)
    off = {s.kind for s in sc.sources if not s.visible and s.sounding}
    return [((s.kind,), _yn(sc.always_playing(s))) for s in vis
            if unique_kind(vis, s.kind) and s.kind not in off]


@_template("Audio-Visual", "Existential", "Is there a voiceover?", YES_NO,
           "yes iff the scene has a voiceover (speech-like signal, not an instrument)")
def _av_voiceover(sc: Scene) -> list[Candidate]:
    return [((), _yn(sc.voiceover is not None))]


@_template("Audio-Visual", "Existential", "Is this sound from the instrument in the video?", YES_NO,
           "scenes without voiceover; yes iff every sounding source is visible (no off-screen sound)")
def _av_from_video(sc: Scene) -> list[Candidate]:
    if sc.voiceover is not None or not sounding(sc):
        return []
    return [((), _yn(all(s.visible for s in sounding(sc))))]


@_template("Audio-Visual", "Counting", "How many instruments are sounding in the video?", NUMBERS[1:4],
           "number of visible instruments that sound at some time")
def _av_count(sc: Scene) -> list[Candidate]:
    n = len(vis_sounding(sc))
    return [((), NUMBERS[n])] if n else []


@_template("Audio-Visual", "Counting", "How many instruments in the video did not sound from beginning to end?",
           NUMBERS[0:4], "number of visible instruments not always playing (silent ones included)")
def _av_not_always(sc: Scene) -> list[Candidate]:
    vis = visible(sc)
    return [((), NUMBERS[sum(not sc.always_playing(s) for s in vis)])] if vis else []


@_template("Audio-Visual", "Counting", "How many sounding <Object> in the video\uff1f", NUMBERS[0:4],
           "Object seen or heard; answer: number of visible, sounding instruments of that kind")
def _av_sounding_kind(sc: Scene) -> list[Candidate]:
    vs = vis_sounding(sc)
    kinds = sorted({s.kind for s in sc.sources})
    return [((k,), NUMBERS[sum(s.kind == k for s in vs)]) for k in kinds]


@_template("Audio-Visual", "Counting", "How many types of musical instruments sound in the video?",
           NUMBERS[1:4], "number of distinct kinds among visible, sounding instruments")
def _av_types(sc: Scene) -> list[Candidate]:
    n = len({s.kind for s in vis_sounding(sc)})
    return [((), NUMBERS[n])] if n else []


@_template("Audio-Visual", "Location", "Where is the <LL> instrument?", POSITIONS,
           "loudest: >= 5 dB above every other sounding source; lowest: median pitch >= 5 semitones "
           "below every other (all pitched); it must be visible; answer: its position")
def _av_where_ll(sc: Scene) -> list[Candidate]:
    snd = sounding(sc)
    if len(snd) < 2:
        return []
    out = []
    top = max(snd, key=lambda s: s.level_db)
    if all(top.level_db - s.level_db >= LEVEL_MARGIN_DB for s in snd if s is not top) and top.visible:
        out.append((("loudest",), top.position))
    if all(s.kind in PITCHED for s in snd):
        low = min(snd, key=lambda s: s.median_pitch)
        if low.visible and all(s.median_pitch - low.median_pitch >= PITCH_MARGIN for s in snd if s is not low):
            out.append((("lowest",), low.position))
    return out


@_template("Audio-Visual", "Location", "Is the <FL> sound coming from the <LR> instrument?", YES_NO,
           "the first/last source to come in is visible; LR is a position with an instrument; "
           "yes iff it is that source's position")
def _av_fl_from_lr(sc: Scene) -> list[Candidate]:
    out = []
    positions = [s.position for s in visible(sc)]
    for fl, s in first_last(sc).items():
        if s.visible:
            out += [((fl, p), _yn(p == s.position)) for p in positions]
    return out


@_template("Audio-Visual", "Location", "What is the <LR> instrument of the <FL> sounding instrument?", KINDS,
           "the first/last source to come in is visible; answer: kind of its nearest visible neighbour on side LR")
def _av_side_of_fl(sc: Scene) -> list[Candidate]:
    out = []
    for fl, s in first_last(sc).items():
        if s.visible:
            for side in ("left", "right"):
                n = neighbour(sc, s, side)
                if n is not None:
                    out.append(((side, fl), n.kind))
    return out


@_template("Audio-Visual", "Location",
           "Which is the musical instrument that sounds at the same time as the <Object>?", KINDS,
           "Object heard once; the one other source overlapping it most (>= 2 s, and >= 2 s more "
           "than any other); answer: its kind")
def _av_same_time(sc: Scene) -> list[Candidate]:
    snd = sounding(sc)
    out = []
    for s in snd:
        if unique_kind(snd, s.kind) is None:
            continue
        ov = sorted(((overlap(s, o), o.kind) for o in snd if o is not s), reverse=True)
        if ov and ov[0][0] >= OVERLAP_MIN_S and (len(ov) == 1 or ov[0][0] - ov[1][0] >= OVERLAP_MIN_S):
            out.append(((s.kind,), ov[0][1]))
    return out


def _pairs_visible(sc: Scene, cmp: Callable[[Source, Source], bool | None], with_kind: bool) -> list[Candidate]:
    out = []
    for a, b in permutations(vis_sounding(sc), 2):
        r = cmp(a, b)
        if r is not None:
            vals = (a.kind, a.position, b.kind, b.position) if with_kind else (a.position, b.position)
            out.append((vals, _yn(r)))
    return out


@_template("Audio-Visual", "Comparative", "Is the <Object> on the <LR> louder than the <Object> on the <LR>?",
           YES_NO, "two visible sounding instruments; yes iff the first's level is >= 5 dB above the second's")
def _av_louder_obj(sc: Scene) -> list[Candidate]:
    return _pairs_visible(sc, louder, True)


@_template("Audio-Visual", "Comparative",
           "Is the <Object> on the <LR> more rhythmic than the <Object> on the <LR>?", YES_NO,
           "two visible sounding instruments; yes iff the first's note rate is >= 1.5x the second's")
def _av_rhythmic_obj(sc: Scene) -> list[Candidate]:
    return _pairs_visible(sc, more_rhythmic, True)


@_template("Audio-Visual", "Comparative", "Is the instrument on the <LR> louder than the instrument on the <LR>?",
           YES_NO, "two visible sounding instruments; yes iff the first's level is >= 5 dB above the second's")
def _av_louder_pos(sc: Scene) -> list[Candidate]:
    return _pairs_visible(sc, louder, False)


@_template("Audio-Visual", "Comparative",
           "Is the instrument on the <LR> more rhythmic than the instrument on the <LR>?", YES_NO,
           "two visible sounding instruments; yes iff the first's note rate is >= 1.5x the second's")
def _av_rhythmic_pos(sc: Scene) -> list[Candidate]:
    return _pairs_visible(sc, more_rhythmic, False)


@_template("Audio-Visual", "Temporal", "What is the <TH> instrument that comes in?", KINDS,
           "sounding sources by entry time; the TH-th entry is >= 0.75 s from its neighbours; answer: its kind")
def _av_th(sc: Scene) -> list[Candidate]:
    out = []
    for i, th in enumerate(ORDINALS):
        s = entry_at(sc, i)
        if s is not None:
            out.append(((th,), s.kind))
    return out


@_template("Audio-Visual", "Temporal", "Where is the <FL> sounding instrument?", POSITIONS,
           "the first/last source to come in (>= 0.75 s apart from the next) is visible; answer: its position")
def _av_where_fl(sc: Scene) -> list[Candidate]:
    return [((fl,), s.position) for fl, s in first_last(sc).items() if s.visible]


@_template("Audio-Visual", "Temporal", "Which <Object> makes the sound <FL>?", (*POSITIONS, "simultaneously"),
           "two or more visible sounding Objects (none off screen); position of the first/last to come in, "
           "or 'simultaneously' when all enter within 0.05 s")
def _av_which_fl(sc: Scene) -> list[Candidate]:
    out = []
    for k in sorted({s.kind for s in sc.sources}):
        same = sorted((s for s in sounding(sc) if s.kind == k), key=lambda s: s.start)
        if len(same) < 2 or not all(s.visible for s in same):
            continue
        if same[-1].start - same[0].start <= SAME_TIME_S:
            out += [((k, "first"), "simultaneously"), ((k, "last"), "simultaneously")]
            continue
        if same[1].start - same[0].start >= ENTRY_MARGIN_S:
            out.append(((k, "first"), same[0].position))
        if same[-1].start - same[-2].start >= ENTRY_MARGIN_S:
            out.append(((k, "last"), same[-1].position))
    return out


@_template("Audio-Visual", "Temporal", "Which instrument makes sounds <BA> the <Object>?", KINDS,
           "Object heard once; answer: kind of the source entering just before/after it "
           "(each entry >= 0.75 s from its neighbours)")
def _av_before_after(sc: Scene) -> list[Candidate]:
    snd = sounding(sc)
    order = sorted(snd, key=lambda s: s.start)
    out = []
    for i, s in enumerate(order):
        if unique_kind(snd, s.kind) is None or entry_at(sc, i) is None:
            continue
        if i > 0 and entry_at(sc, i - 1) is not None:
            out.append((("before", s.kind), order[i - 1].kind))
        if i + 1 < len(order) and entry_at(sc, i + 1) is not None:
            out.append((("after", s.kind), order[i + 1].kind))
    return out


def candidates(scene: Scene) -> list[list[Candidate]]:
    """For each template in :data:`TEMPLATES` order, every question it can ask about ``scene``."""
    return [t.candidates(scene) for t in TEMPLATES]
