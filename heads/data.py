"""All of the heads' cache access, through featpipe's public reading API only.

Features are read once, in bulk (:meth:`Cache.batch` over every needed video), into memory;
training never touches the file. Features with their own hop (``on_timeline`` false, e.g.
OpenL3 at 0.1 s) are averaged into the cache's segments (a row belongs to the segment that holds
its centre), so every stream a head sees is on the common segment timeline. On a beat-timeline
cache (``featpipe extract --timeline beats``) every feature already has one row per beat
segment; videos have different numbers of rows, padded with a mask by ``Cache.batch``.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from featpipe import open_cache
from featpipe.avqa import Question
from featpipe.contracts import BEATS_OUTPUT

from .layout import FeatureLayout, read_layout


class HeadError(Exception):
    """A head cannot be trained, evaluated or applied as asked; the message is one line."""


@dataclass(frozen=True)
class FeatureMeta:
    """A feature as a head uses it. ``role``: "audio" or "visual" (one vector per segment) or
    "tokens" (``(P, D)`` per segment, visual)."""

    name: str
    role: str
    shape: tuple[int, ...]
    provenance: dict
    layout: FeatureLayout | None = None  # what is inside a row (grid cells, stereo cues), from cache.info attrs
    layers: tuple[int, ...] | None = None  # a layer-wise feature's layer numbers: rows (len(layers), D)

    def to_json(self) -> dict:
        return {"name": self.name, "role": self.role, "shape": list(self.shape), "provenance": self.provenance}


@contextlib.contextmanager
def opened(cache: Any) -> Iterator[Any]:
    """Yield an open cache for a path, or ``cache`` itself when it is already open (then it is
    left open) or None."""
    if cache is None:  # question-only heads with the bag-of-words encoding need no cache
        yield None
    elif isinstance(cache, (str, Path)):
        try:
            c = open_cache(cache)
        except Exception as exc:  # CacheError and OS errors: one line for the CLI
            raise HeadError(str(exc)) from None
        with c:
            yield c
    else:
        yield cache


def layer_numbers(info: Any) -> tuple[int, ...] | None:
    """The layer numbers of a layer-wise feature (rows ``(L+1, D)``, attribute ``layers``), else None."""
    layers = (getattr(info, "attrs", None) or {}).get("layers")
    shape = tuple(info.shape)
    if layers is None or len(shape) != 2 or len(layers) != shape[0]:
        return None
    return tuple(int(n) for n in layers)


def describe(cache: Any, names: Sequence[str], layered: bool = False) -> list[FeatureMeta]:
    """Look the features up; unknown names and unsupported shapes raise :class:`HeadError`.
    ``layered``: accept layer-wise features (``(L+1, D)`` rows with a ``layers`` attribute; role
    audio or visual, :attr:`FeatureMeta.layers` set), which only ``featpipe study`` mixes."""
    out = []
    for name in names:
        if name not in cache.features:
            raise HeadError(f"feature {name!r} is not in the cache; it has: {', '.join(cache.features) or 'none'}")
        info = cache.info(name)
        shape = tuple(info.shape)
        if info.modality not in ("audio", "visual"):
            raise HeadError(f"feature {name!r} has modality {info.modality!r}; heads use audio or visual features")
        layers = layer_numbers(info)
        if layers is not None and not layered:
            raise HeadError(f"feature {name!r} is layer-wise ({len(layers)} layers): use `featpipe study` (a learned "
                            f"mix of layers, or {name}@K for layer K)")
        if len(shape) == 1 or layers is not None:
            role = info.modality
        elif len(shape) == 2 and info.modality == "visual":
            role = "tokens"
        else:
            raise HeadError(f"feature {name!r} has rows of shape {shape}; heads take vectors or visual "
                            "(tokens, dim) patch tokens")
        out.append(FeatureMeta(info.name, role, shape, cache.provenance(name),
                               None if layers else read_layout(info), layers))
    return out


def default_features(cache: Any, tokens: bool) -> list[str]:
    """Every audio/visual feature of the cache (patch tokens only when ``tokens``), but not the
    rhythm extractor's beat times (``rhythm-beats``: offsets, not a description of the segment)."""
    names = []
    for name in cache.features:
        if name == BEATS_OUTPUT:
            continue
        info = cache.info(name)
        if layer_numbers(info) is not None:
            continue
        if info.modality in ("audio", "visual") and (len(info.shape) == 1 or (tokens and len(info.shape) == 2)):
            names.append(name)
    if not names:
        raise HeadError("the cache has no audio or visual features to train on")
    return names


def _extractor(cache: Any, name: str) -> str:
    prov = cache.provenance(name)
    return (prov.get("identity") or {}).get("extractor") or str(prov.get("spec", "")).partition(":")[0]


def choose_rhythm(cache: Any, names: Sequence[str], rhythm: bool | None) -> list[str]:
    """``names`` with the ``rhythm`` extractor's features as asked: ``None`` leaves them as they are,
    ``False`` drops them, ``True`` adds the cache's ``rhythm`` feature (a one-line HeadError when the
    cache has none: extract it with ``--audio rhythm``)."""
    names = list(names)
    if rhythm is None or cache is None:
        return names
    if rhythm is False:
        return [n for n in names if _extractor(cache, n) != "rhythm"]
    have = [n for n in cache.features if n != BEATS_OUTPUT and _extractor(cache, n) == "rhythm"]
    if not have:
        raise HeadError("the cache has no rhythm feature: extract it with `featpipe extract ... --audio rhythm`")
    return names + [n for n in have if n not in names]


def covered(cache: Any, video_ids: Sequence[str], names: Sequence[str]) -> set[str]:
    """The videos of ``video_ids`` the cache holds with every feature of ``names``."""
    committed = set(video_ids) & set(cache.videos)
    if not hasattr(cache, "has"):  # has() is beyond the documented reading API: then trust "committed"
        return committed
    return {v for v in committed if all(cache.has(v, n) for n in names)}


def _seg_len(cache: Any, metas: Sequence[FeatureMeta]) -> float:
    for m in metas:
        info = cache.info(m.name)
        if getattr(info, "on_timeline", True):
            return float(info.hop)
    tl = metas[0].provenance.get("timeline", {}) if metas else {}
    return float(tl.get("seg_len") or 1.0)


def _to_segments(x: np.ndarray, mask: np.ndarray, start: float, hop: float, seg_len: float,
                 length: int) -> tuple[np.ndarray, np.ndarray]:
    """Average rows centred at ``start + i*hop`` into segments ``[k*seg_len, (k+1)*seg_len)``."""
    seg = np.floor((start + hop * np.arange(x.shape[1])) / seg_len + 1e-9).astype(int)
    keep = (seg >= 0) & (seg < length)
    m = mask[:, keep].astype(np.float32)
    out = np.zeros((x.shape[0], length) + x.shape[2:], np.float32)
    counts = np.zeros((x.shape[0], length), np.float32)
    np.add.at(out, (slice(None), seg[keep]), x[:, keep] * m.reshape(m.shape + (1,) * (x.ndim - 2)))
    np.add.at(counts, (slice(None), seg[keep]), m)
    out /= np.maximum(counts, 1.0).reshape(counts.shape + (1,) * (x.ndim - 2))
    return out, counts > 0


def load_segments(cache: Any, video_ids: Sequence[str], metas: Sequence[FeatureMeta],
                  length: int | None = None,
                  keep_half: bool = False) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Every feature of every video in memory, on the segment timeline: ``{name: (array (N, T,
    *shape), mask (N, T))}`` and ``T``. ``T`` is ``length`` or the longest segment sequence.
    Patch tokens stay float16 (they are large); other features are float32, or with ``keep_half``
    float16 when the cache stores them so (no value changes: the heads convert a batch at a time)."""
    ids = list(video_ids)
    seg_len = _seg_len(cache, metas)
    raw = {}
    for m in metas:
        info = cache.info(m.name)
        half = m.role == "tokens" or (keep_half and str(getattr(info, "dtype", "")) == "float16")
        dtype = np.float16 if half else np.float32
        raw[m.name] = (cache.batch(ids, m.name, dtype=dtype), info)
    if length is None:
        lens = []
        for (x, mask), info in raw.values():
            if getattr(info, "on_timeline", True):
                lens.append(x.shape[1])
            else:
                last = info.start + info.hop * (x.shape[1] - 1)  # centre of the last row
                lens.append(int(np.floor(last / seg_len + 1e-9)) + 1 if x.shape[1] else 0)
        length = max(lens, default=0)
    if length <= 0:
        raise HeadError("the selected features have no rows for these videos")
    out = {}
    for name, ((x, mask), info) in raw.items():
        if not getattr(info, "on_timeline", True):
            x, mask = _to_segments(x, mask, info.start, info.hop, seg_len, length)
        elif x.shape[1] != length:  # pad or cut to the common length
            pad = max(0, length - x.shape[1])
            x = np.pad(x[:, :length], [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
            mask = np.pad(mask[:, :length], [(0, 0), (0, pad)])
        out[name] = (x, mask)
    return out, length


def text_encoders(cache: Any) -> list[str]:
    """The text encoders whose embeddings the cache holds (none without a cache)."""
    return list(cache.text_encoders) if cache is not None else []


def question_embeddings(cache: Any, encoder: str, questions: Sequence[Question]) -> np.ndarray:
    """``(N, D)`` cached text embeddings of the questions, by question id, else by filled text."""
    if encoder not in cache.text_encoders:
        raise HeadError(f"the cache has no text encoder {encoder!r}; it has: {', '.join(cache.text_encoders) or 'none'}")
    try:
        return cache.text_embeddings(encoder, question_ids=[q.question_id for q in questions])
    except KeyError:
        pass
    try:
        return cache.text_embeddings(encoder, texts=[q.text for q in questions])
    except KeyError as exc:
        raise HeadError(f"some questions have no {encoder!r} embedding in the cache ({exc.args[0]}); "
                        "encode these question files with featpipe first") from None


# Provenance keys that say nothing about the values: versions warn, performance knobs are ignored.
_VERSION_KEYS = {("featpipe",), ("decode", "pyav")}
_IGNORED_KEYS = {("decode", "chunk_segments"), ("decode", "seek")}


def _diff(a: Any, b: Any, path: tuple = ()) -> list[tuple[tuple, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), path + (k,))
        return out
    return [] if a == b else [(path, a, b)]


def check_features(cache: Any, saved: Sequence[dict], where: str) -> list[FeatureMeta]:
    """Refuse (one-line :class:`HeadError`) a cache whose features differ from those the head at
    ``where`` was trained on: missing, other row shape, or other provenance (spec, weights, decode
    parameters, options, timeline). Differing featpipe/PyAV versions only warn."""
    metas = []
    for s in saved:
        name = s["name"]
        if name not in cache.features:
            raise HeadError(f"{where} was trained on feature {name!r}, which this cache lacks "
                            f"(it has: {', '.join(cache.features) or 'none'})")
        m = describe(cache, [name])[0]
        if list(m.shape) != list(s["shape"]):
            raise HeadError(f"{where} was trained on {name!r} rows of shape {tuple(s['shape'])}; "
                            f"this cache has {m.shape}")
        diffs = [d for d in _diff(s["provenance"], m.provenance) if d[0] not in _IGNORED_KEYS]
        hard = [d for d in diffs if d[0] not in _VERSION_KEYS]
        if hard:
            path, a, b = hard[0]
            raise HeadError(f"{where} was trained on {name!r} with {'.'.join(path)}={a!r}; this cache has "
                            f"{b!r}: features differ, extract them as the head expects or retrain")
        for path, a, b in diffs:
            warnings.warn(f"{name!r}: {'.'.join(path)} was {a!r} at training, {b!r} in this cache", stacklevel=2)
        metas.append(m)
    return metas
