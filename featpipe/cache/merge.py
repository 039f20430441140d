"""``featpipe merge A.h5 B.h5 -o C.h5``: combine caches built as shards (say, one per cluster).

Rules, which are the single writer's own (:class:`featpipe.cache.CacheWriter`):

* every input must have the same timeline (fps, segment length, max_seconds, pad);
* a feature present in several inputs must have the same provenance (extractor spec, weights
  identity, feature identity (:mod:`featpipe.cache.identity`), row shape, dtype), else the merge stops
  with the reason;
* every input's latest record of each video is committed to the new cache in the order the
  records were first committed (ties: argument order), so the later record wins. As in
  ``featpipe extract``, a later record of the same source keeps the features it does not
  replace, so shards that computed different features of one video combine;
* text-embedding tables are appended in argument order (a text embedded twice: the later wins).

The output must not exist; it is written as ``<output>.partial`` and renamed when complete,
so an interrupted merge never leaves something that looks finished.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import Cache, CacheError, CacheWriter, open_cache
from .layout import FEATURES, INDEX, RECORDS, TEXTS, decode_records
from ..contracts import OutputSpec
from .identity import differences

_COMPARED = ("spec", "weights")


@dataclass
class MergeSummary:
    output: Path
    videos: int = 0  # distinct videos in the output
    records: int = 0  # records committed (a video in two inputs counts twice)
    features: list[str] = field(default_factory=list)
    texts: int = 0  # text embeddings copied


def _committed(record: dict) -> float:
    """When a record was first committed (a merged record keeps its origin's time)."""
    return float(record.get("merged_from", {}).get("committed") or record.get("committed") or 0.0)


def _feature_spec(cache: Cache, name: str) -> tuple[OutputSpec, dict]:
    info = cache.info(name)
    spec = OutputSpec(name=info.name, shape=tuple(info.shape), modality=info.modality, dtype=info.dtype,
                      hop=None if info.on_timeline else info.hop, start=0.0 if info.on_timeline else info.start,
                      window=info.window, layout=info.layout, attrs=info.attrs)
    prov = {k: v for k, v in cache.provenance(name).items() if k != "timeline"}
    return spec, prov


def _plan_features(caches: list[Cache]) -> dict[str, tuple[OutputSpec, dict, Path]]:
    """Every feature once, checked to mean the same thing in every input that has it."""
    plan: dict[str, tuple[OutputSpec, dict, Path]] = {}
    for cache in caches:
        for name in cache.features:
            spec, prov = _feature_spec(cache, name)
            if name not in plan:
                plan[name] = (spec, prov, cache.path)
                continue
            spec0, prov0, where = plan[name]
            diff = [f"{k} {prov0.get(k)!r} vs {prov.get(k)!r}" for k in _COMPARED if prov0.get(k) != prov.get(k)]
            if prov0.get("identity") is not None or prov.get("identity") is not None:  # options, version, dtype...
                diff += [f"identity.{k} {a!r} vs {b!r}" for k, a, b in
                         differences(prov0.get("identity") or {}, prov.get("identity") or {})][:1]
            if (spec0.shape, spec0.dtype) != (spec.shape, spec.dtype):
                diff.append(f"rows {spec0.shape} {spec0.dtype} vs {spec.shape} {spec.dtype}")
            if diff:
                raise CacheError(f"feature {name!r} differs between {where} and {cache.path} ({'; '.join(diff)}); "
                                 "only features with the same provenance merge")
    return plan


def _plan_texts(caches: list[Cache]) -> dict[str, tuple[tuple[int, ...], dict]]:
    plan: dict[str, tuple[tuple[int, ...], dict]] = {}
    for cache in caches:
        for enc in cache.text_encoders:
            g = cache.f[TEXTS][enc]
            prov = json.loads(g.attrs["provenance"])
            dim = tuple(int(n) for n in g["data"].shape[1:])  # row shape: (D,) or e.g. (77, D)
            if enc in plan and (plan[enc][0] != dim or plan[enc][1].get("weights") != prov.get("weights")):
                raise CacheError(f"text encoder {enc!r} in {cache.path} used other weights than an earlier input")
            plan.setdefault(enc, (dim, prov))
    return plan


def _copy_texts(cache: Cache, writer: CacheWriter, encoders: list[str]) -> int:
    copied = 0
    for enc in encoders:
        if enc not in cache.text_encoders:
            continue
        g = cache.f[TEXTS][enc]
        n = g[INDEX].shape[0]
        if n == 0:
            continue
        idx = g[INDEX][:n]
        for rec in decode_records(idx, g[RECORDS][: int((idx[:, 0] + idx[:, 1]).max())]):
            start, rows = rec["rows"]
            writer.add_texts(enc, rec["items"], g["data"][start:start + rows])
            copied += rows
    return copied


def _take_partial(partial: Path) -> None:
    """Remove what a killed merge left, unless another merge is writing it right now."""
    if not partial.exists():
        return
    with open(f"{partial}.lock", "a+") as lock:  # the writer's lock file: held while a merge runs
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CacheError(f"{partial} is being written by another featpipe merge") from None
        partial.unlink()


def merge_caches(inputs: list[str | Path], output: str | Path,
                 on_record: Callable[[str], None] | None = None) -> MergeSummary:
    """Merge ``inputs`` into a new cache ``output``; see the module docstring for the rules."""
    output = Path(output)
    paths = [Path(p) for p in inputs]
    if not paths:
        raise CacheError("nothing to merge: give at least one input cache")
    if output.exists():
        raise CacheError(f"{output} exists; merge writes a new cache (merge it as an input instead)")
    caches: list[Cache] = []
    try:
        for p in paths:
            caches.append(open_cache(p))
        first = caches[0]
        for cache in caches[1:]:
            if cache.timeline != first.timeline:
                raise CacheError(f"{cache.path} has timeline {cache.timeline}, {first.path} has {first.timeline}; "
                                 "only caches with the same timeline merge")
        features = _plan_features(caches)
        texts = _plan_texts(caches)
        order = sorted(((_committed(c.record(v)), i, v) for i, c in enumerate(caches) for v in c.videos))
        partial = Path(f"{output}.partial")
        _take_partial(partial)
        summary = MergeSummary(output=output, features=sorted(features))
        with CacheWriter(partial, first.timeline) as writer:
            for spec, prov, _ in features.values():
                writer.ensure_feature(spec, prov, spec.dtype)
            for enc, (dim, prov) in texts.items():
                writer.ensure_text_table(enc, dim, prov)
            writer.start()
            for when, i, vid in order:
                cache = caches[i]
                rec = cache.record(vid)
                arrays, valid = {}, {}
                for name, (off, rows, *rest) in rec.get("features", {}).items():
                    arrays[name] = cache.f[FEATURES][name]["data"][off:off + rows]
                    valid[name] = int(rest[0]) if rest else rows
                record = {k: v for k, v in rec.items()
                          if k not in ("features", "committed", "featpipe", "merged_from", "bounds")}
                record["merged_from"] = {"cache": str(cache.path), "committed": when}
                bounds = cache.bounds(vid) if "bounds" in rec else None  # beat timeline: offsets are per file
                writer.commit(record, arrays, valid, bounds=bounds)
                summary.records += 1
                if on_record:
                    on_record(vid)
            for cache in caches:
                summary.texts += _copy_texts(cache, writer, sorted(texts))
            summary.videos = len(writer.records)
        os.replace(partial, output)
        Path(f"{partial}.lock").unlink(missing_ok=True)
        return summary
    finally:
        for cache in caches:
            cache.close()
