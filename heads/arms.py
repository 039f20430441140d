"""A study's arms: named feature sets, checked against the cache, and their in-memory inputs.

``--arm NAME=FEAT[,FEAT...]``: ``FEAT`` is a cached feature; ``FEAT@K`` picks layer ``K`` (a layer
number of the feature's ``layers`` attribute) of a layer-wise feature, which otherwise enters as a
learned mix of its layers (:mod:`.layers`). Every feature is read from the cache once for all
arms and runs (:func:`load_inputs`), float16 where the cache stores it so; an arm's arrays are
views of those, or for a stream of several features their concatenation (:func:`assemble`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from featpipe.avqa import Question
from featpipe.avqa_sets import load_any

from .batches import AvqaArrays
from .data import FeatureMeta, HeadError, covered, describe, load_segments
from .layers import flatten_layers
from .layout import FeatureLayout, stream_layout
from .qa import encode_questions, question_encoding
from .questions import answer_vocabulary

QUESTION_ONLY = "question-only"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_AUDIO = ("priors", "openl3", "clap", "rhythm", "vggish", "ast", "beats", "mert", "hf", "audio")


@dataclass(frozen=True)
class Pick:
    feature: str
    layer: int | None = None

    @property
    def label(self) -> str:
        return self.feature if self.layer is None else f"{self.feature}@{self.layer}"


@dataclass(frozen=True)
class Arm:
    name: str
    picks: tuple[Pick, ...]

    @property
    def features(self) -> list[str]:
        return [p.label for p in self.picks]


def input_width(arm: Arm, metas: dict[str, FeatureMeta]) -> int:
    """Values per segment the arm's head reads (a layer-wise feature counts whole, ``FEAT@K`` one
    layer): what a run's cost grows with, to schedule the longest runs first."""
    return sum(
        int(np.prod(metas[p.feature].shape[1:] if p.layer is not None else metas[p.feature].shape)) for p in arm.picks
    )


def parse_arm(text: str) -> Arm:
    """``NAME=FEAT[,FEAT...]`` (``FEAT@K`` for layer K); one-line :class:`HeadError` otherwise."""
    name, eq, rest = text.partition("=")
    name = name.strip()
    if not eq or not rest.strip():
        raise HeadError(f"--arm {text!r}: write NAME=FEATURE[,FEATURE...], e.g. --arm clap=clap")
    if not _NAME.match(name) or name == QUESTION_ONLY:
        raise HeadError(
            f"--arm {text!r}: an arm name is letters, digits and . _ + - (not {QUESTION_ONLY!r}, which "
            "always runs), at most 64 characters"
        )
    picks = []
    for item in (s.strip() for s in rest.split(",")):
        if not item:
            continue
        feat, at, layer = item.partition("@")
        if at and not re.fullmatch(r"-?\d+", layer.strip()):
            raise HeadError(f"--arm {text!r}: {item!r}: the layer after @ is a number")
        picks.append(Pick(feat.strip(), int(layer) if at else None))
    if len({p.feature for p in picks}) != len(picks):
        raise HeadError(f"--arm {text!r}: a feature appears twice")
    return Arm(name, tuple(picks))


def parse_arms(texts: Sequence[str], baseline: str | None) -> tuple[list[Arm], str]:
    """The arms and the baseline's name (default: the first arm)."""
    arms = [parse_arm(t) for t in texts]
    if not arms:
        raise HeadError("give at least one --arm NAME=FEATURE[,FEATURE...]")
    names = [a.name for a in arms]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise HeadError(f"arm name(s) given twice: {', '.join(dup)}")
    baseline = baseline or names[0]
    if baseline not in names + [QUESTION_ONLY]:
        raise HeadError(f"--baseline {baseline!r} is not an arm; arms: {', '.join(names + [QUESTION_ONLY])}")
    return arms, baseline


def extract_hint(cache_path: str, feature: str) -> str:
    """The ``featpipe extract`` command that adds ``feature`` to the cache (the extractor spec is a guess
    from the name: features are named after their extractor unless ``--name`` renamed them)."""
    base = feature.split(":")[0].split("-")[0].lower()
    flag = "--audio" if base in _AUDIO else "--visual"
    return f"featpipe extract VIDEOS {cache_path} {flag} {feature}"


def resolve(cache: Any, arms: Sequence[Arm]) -> dict[str, FeatureMeta]:
    """Every feature the arms name, described (layer-wise ones included); a missing one, a layer
    that is not there, or ``@K`` on an ordinary feature is a one-line :class:`HeadError`."""
    metas: dict[str, FeatureMeta] = {}
    for arm in arms:
        for p in arm.picks:
            if p.feature not in cache.features:
                raise HeadError(
                    f"arm {arm.name!r}: the cache has no feature {p.feature!r} (it has: "
                    f"{', '.join(cache.features) or 'none'}); add it with: "
                    f"{extract_hint(str(cache.path), p.feature)}"
                )
            m = metas.get(p.feature) or describe(cache, [p.feature], layered=True)[0]
            metas[p.feature] = m
            if p.layer is not None and m.layers is None:
                raise HeadError(f"arm {arm.name!r}: {p.label}: {p.feature!r} is not layer-wise (no layers to pick)")
            if p.layer is not None and p.layer not in m.layers:
                raise HeadError(f"arm {arm.name!r}: {p.label}: {p.feature!r} has layers {list(m.layers)}")
        roles = [metas[p.feature].role for p in arm.picks]
        if roles.count("tokens") > 1:
            raise HeadError(f"arm {arm.name!r}: the AVQA head takes one patch-token feature at a time")
    return metas


def fingerprint(meta: FeatureMeta) -> str:
    """sha256 (first 16 hex digits) of a feature's name, row shape, layers and provenance."""
    blob = json.dumps(
        {"name": meta.name, "shape": list(meta.shape), "layers": meta.layers, "provenance": meta.provenance},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class Inputs:
    """What every arm and run shares, loaded once: questions per split (test: the union of the test
    files, each file's question ids in ``test_sets``), their encodings, answers, per-video features."""

    questions: dict[str, list[Question]]
    dropped: dict[str, int]
    test_sets: dict[str, list[int]]
    qspec: dict
    answers: list[str]
    q: dict[str, np.ndarray]
    vid: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    segs: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    T: int = 0


def _read(path: str, what: str) -> list[Question]:
    from featpipe.avqa import AvqaFormatError

    try:
        qs = load_any(path)
    except AvqaFormatError as exc:
        raise HeadError(str(exc)) from None
    if not qs:
        raise HeadError(f"the {what} file {path} has no questions")
    return qs


def load_inputs(
    cache: Any, metas: dict[str, FeatureMeta], train: str, val: str, tests: dict[str, str], question: str = "auto"
) -> Inputs:
    """Read the question files and every feature once. Questions whose video lacks any of the study's
    features are dropped from every arm alike (counted in ``dropped``)."""
    raw = {"train": _read(train, "--train"), "val": _read(val, "--val")}
    test_sets, union = {}, {}
    for label, path in tests.items():
        qs = _read(path, "--test")
        test_sets[label] = [q.question_id for q in qs]
        for q in qs:
            union.setdefault(q.question_id, q)
    raw["test"] = list(union.values())
    names = list(metas)
    every = sorted({q.video_id for qs in raw.values() for q in qs})
    ok = covered(cache, every, names) if names else set(every)
    kept = {s: [q for q in qs if q.video_id in ok] for s, qs in raw.items()}
    for split, qs in kept.items():
        if not qs:
            raise HeadError(
                f"none of the {len(raw[split])} {split} questions' videos is in the cache with "
                f"features {', '.join(names)}"
            )
    kept_ids = {q.question_id for q in kept["test"]}
    test_sets = {k: [i for i in ids if i in kept_ids] for k, ids in test_sets.items()}
    videos = sorted({q.video_id for qs in kept.values() for q in qs})
    row = {v: i for i, v in enumerate(videos)}
    qspec = question_encoding(cache, kept["train"], question)
    answers = answer_vocabulary(kept["train"])
    index = {a: i for i, a in enumerate(answers)}
    inp = Inputs(
        kept,
        {s: len(raw[s]) - len(kept[s]) for s in raw},
        test_sets,
        qspec,
        answers,
        q={s: encode_questions(cache, qspec, qs) for s, qs in kept.items()},
        vid={s: np.array([row[q.video_id] for q in qs], np.int64) for s, qs in kept.items()},
        y={s: np.array([index.get(q.answer, -1) for q in qs], np.int64) for s, qs in kept.items()},
    )
    if metas:
        inp.segs, inp.T = load_segments(cache, videos, list(metas.values()), keep_half=True)
    return inp


@dataclass(frozen=True)
class ArmSpec:
    """What an arm's inputs are made of, without the arrays (a few bytes to send to a worker): per
    stream (audio, visual, tokens) its parts in the head's order, each ``(feature, layer index,
    flatten)`` (layer index: one layer of a layer-wise feature; flatten: all its layers, mixed by
    the head), the layer blocks (``{"a"|"v": [[L+1, D], ...]}``) and the stream layout."""

    streams: dict[str, list[tuple[str, int | None, bool]]]
    blocks: dict[str, list]
    layout: dict

    @property
    def features(self) -> list[str]:
        return sorted({f for parts in self.streams.values() for f, _, _ in parts})


def arm_spec(arm: Arm, metas: dict[str, FeatureMeta]) -> ArmSpec:
    """The arm's :class:`ArmSpec`: ordinary features first, layer-wise ones after (:mod:`.layers`)."""
    plain: dict[str, list] = {"audio": [], "visual": [], "tokens": []}
    layered: dict[str, list] = {"audio": [], "visual": []}
    blocks: dict[str, list] = {"a": [], "v": []}
    layouts: dict[str, list] = {"audio": [], "visual": []}
    for p in arm.picks:
        m = metas[p.feature]
        if m.layers is not None and p.layer is not None:
            plain[m.role].append((p.feature, m.layers.index(p.layer), False))
            layouts[m.role].append(FeatureLayout(m.shape[1]))  # a plain vector: no cells, no stereo cues
        elif m.layers is not None:
            layered[m.role].append((p.feature, None, True))
            blocks["a" if m.role == "audio" else "v"].append([len(m.layers), m.shape[1]])
        else:
            plain[m.role].append((p.feature, None, False))
            if m.role in layouts:
                layouts[m.role].append(m.layout or FeatureLayout(int(np.prod(m.shape))))
    streams = {"audio": plain["audio"] + layered["audio"], "visual": plain["visual"] + layered["visual"]}
    streams["tokens"] = plain["tokens"]
    lay = stream_layout(layouts["audio"], layouts["visual"]).to_json()
    return ArmSpec(streams, {k: b for k, b in blocks.items() if b}, lay)


def assemble(
    spec: ArmSpec, feats: dict[str, tuple[np.ndarray, np.ndarray]], questions: dict[str, tuple]
) -> dict[str, AvqaArrays]:
    """The arm's per-split :class:`AvqaArrays` from the per-video feature arrays ``feats`` (in memory
    or memory-mapped) and ``questions`` (``{split: (q, vid, y)}``). A stream of one part is a view of
    its feature (a layer of a layer-wise feature too: no copy); only a stream of several features
    is a new array (their concatenation along the last axis: the head takes one array per stream)."""

    def part(name: str, layer: int | None, flatten: bool) -> tuple[np.ndarray, np.ndarray]:
        x, mask = feats[name]
        if layer is not None:
            return x[:, :, layer], mask
        return (flatten_layers(x) if flatten else x), mask

    def stack(parts):
        if not parts:
            return None, None
        items = [part(*p) for p in parts]
        if len(items) == 1:
            return items[0]
        dtype = np.result_type(*(i[0].dtype for i in items))
        x = np.concatenate([np.asarray(i[0], dtype=dtype) for i in items], axis=-1)
        return x, np.logical_and.reduce([np.asarray(i[1]) for i in items])

    a, mask_a = stack(spec.streams["audio"])
    v, mask_v = stack(spec.streams["visual"])
    tok, mask_t = stack(spec.streams["tokens"])
    if tok is not None:
        mask_v = mask_t if mask_v is None else mask_v & mask_t
    return {
        s: AvqaArrays(q=q, vid=vid, y=y, a=a, v=v, tok=tok, mask_a=mask_a, mask_v=mask_v)
        for s, (q, vid, y) in questions.items()
    }


def question_arrays(inp: Inputs) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{split: (q, vid, y)}``: what every arm shares besides the features."""
    return {s: (inp.q[s], inp.vid[s], inp.y[s]) for s in inp.q}


def arm_inputs(inp: Inputs, arm: Arm, metas: dict[str, FeatureMeta]) -> dict[str, Any]:
    """The arm's per-split :class:`AvqaArrays` (:func:`assemble` on the loaded features), its layer
    blocks and its stream layout."""
    spec = arm_spec(arm, metas)
    return {"arrays": assemble(spec, inp.segs, question_arrays(inp)), "blocks": spec.blocks, "layout": spec.layout}
