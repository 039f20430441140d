"""The extraction run: plan what is missing, run it on Dask, commit results, write the report.

Planning happens here, on the client: extractors are built and checked before any video is
touched (missing weights fail here), and each video gets only the extractors whose outputs it
still lacks. :mod:`featpipe.run.dispatch` runs the plan (bounded in flight, one writer); each video
is :func:`featpipe.run.extract_video.process_video` on a worker, tried as :mod:`featpipe.run.retry` says.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import __version__, extractors
from ..cache import CacheWriter, same_source, source_stat
from .cluster import local_cpu, warm_workers
from .config import ExtractConfig, FeatureNames, PipelineError, RunSummary
from ..contracts import BEATS_OUTPUT, ExtractOptions, OutputSpec
from ..decode import DecodeParams
from .dispatch import run_jobs
from ..extractors.base import Extractor, ExtractorError
from ..cache.identity import DECODE_KEYS, mismatch
from .inputs import discover
from .beat_timeline import Timeline
from .extract_video import VideoJob, VideoResult

__all__ = ["ExtractConfig", "PipelineError", "RunSummary", "build_extractors", "check_options", "provenance",
           "run_extract", "timeline_of", "variant_names"]


def build_extractors(visual: tuple[str, ...], audio: tuple[str, ...], options: ExtractOptions) -> list[Extractor]:
    """Build and check every extractor on the client, before any video is touched."""
    built = []
    for modality, specs in (("visual", visual), ("audio", audio)):
        for spec in specs:
            ext = extractors.build(spec, options)
            kinds = {o.modality for o in ext.outputs()}
            if kinds != {modality}:
                other = "audio" if modality == "visual" else "visual"
                raise ExtractorError(f"{spec!r} is a {'/'.join(sorted(kinds))} extractor: pass it with --{other}")
            built.append(ext)
    if not built:
        raise ExtractorError("no extractor asked for: give at least one --visual or --audio spec")
    names = [o.name for e in built for o in e.outputs()]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ExtractorError(f"two specs write the same feature {sorted(dup)}")
    check_options(built, options)
    for ext in built:
        ext.check()
    return built


def check_options(exts: list[Extractor], options: ExtractOptions) -> None:
    """Every ``--set`` key must be declared by an extractor of the run, every value must parse, and every
    ``--weights NAME=PATH`` must name an extractor of the run."""
    declared = {key for e in exts for key in e.option_specs} | {f"{e.name}.{key}" for e in exts for key in e.option_specs}
    for key, _ in options.extra:
        if key not in declared:
            reads = "; ".join(f"{e.name} reads {', '.join(sorted(e.option_specs)) or 'none'}" for e in exts)
            raise ExtractorError(f"--set {key}: no extractor of this run has that option ({reads})")
    for selector, _ in options.weights_by:
        if not any(selector in (e.spec, e.name) for e in exts):
            raise ExtractorError(f"--weights {selector}=...: no extractor {selector!r} in this run "
                                 f"({', '.join(e.spec for e in exts)})")
    for e in exts:
        e.resolved_options()  # a bad value is a one-line ExtractorError here, before any video


def identity(ext: Extractor, out: OutputSpec, params: DecodeParams, dtype: str | None,
             timeline: dict[str, Any] | None = None) -> dict[str, Any]:
    """The canonical identity of output ``out`` of ``ext``, as stored with the feature.

    The frames part is the extractor's own request: the decoder serves every extractor frames at
    its own size, so adding another extractor to a run never changes an existing feature.
    ``timeline`` is :meth:`featpipe.run.beat_timeline.Timeline.as_dict` (empty for fixed seconds, so their
    identities stay as they were; a beat feature never equals a fixed-second one).
    """
    decode = params.as_dict()
    needs = ext.needs()
    media: dict[str, Any] = {k: decode[k] for k in DECODE_KEYS}
    if needs.video:
        media["frames"] = {"positions": list(needs.frame_positions), "short_side": needs.frame_short_side,
                           "native": needs.native_frames}
    if decode.get("extra"):
        media["extra"] = decode["extra"]
    if timeline:
        media["timeline"] = dict(timeline)
    return {
        "extractor": ext.name,
        "version": str(ext.version),
        "spec": ext.spec,
        "output": out.name,
        "weights": ext.weights_identity(),
        "options": {k: v for k, v in ext.resolved_options().items() if ext.option_specs[k].affects_output},
        "dtype": np.dtype(dtype or out.dtype).name,
        "decode": media,
    }


def provenance(ext: Extractor, params: DecodeParams, out: OutputSpec | None = None, dtype: str | None = None,
               timeline: Timeline = Timeline()) -> dict:
    """How a feature is made; with ``out``, also its identity (:mod:`featpipe.cache.identity`; the fingerprint is
    its digest, computed when read, so a reader comparing provenance sees which part differs)."""
    prov = {"spec": ext.spec, "weights": ext.weights_identity(), "featpipe": __version__,
            "decode": params.as_dict(), "options": {"tokens": ext.options.tokens, **ext.resolved_options()}}
    if out is not None:
        prov["identity"] = identity(ext, out, params, dtype, timeline.as_dict())
    return prov


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def variant_names(exts: list[Extractor], names: tuple[tuple[str, str], ...]) -> FeatureNames:
    """The feature name of every output, renamed by ``--name [SPEC=]NAME``.

    The selector is a spec or an extractor name; none is needed when the run has one extractor.
    The first output takes NAME; the others keep their suffix (``<NAME>-native``, ``<NAME>-tokens``).
    """
    renamed: dict[str, str] = {}
    for selector, name in names:
        if not _NAME.fullmatch(name):
            raise ExtractorError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (a feature name, not a path)")
        chosen = [e for e in exts if selector in (e.spec, e.name)] if selector else exts
        if len(chosen) != 1:
            specs = ", ".join(e.spec for e in exts)
            raise ExtractorError(f"--name {selector + '=' if selector else ''}{name}: "
                                 f"{'say which extractor, as SPEC=NAME' if not selector else 'no such extractor'}"
                                 f" (this run has {specs})")
        outs = [o.name for o in chosen[0].outputs()]
        for o in outs:
            renamed[o] = name + o[len(outs[0]):] if o.startswith(outs[0]) else f"{name}-{o}"
    named = FeatureNames(renamed)
    final = [named(o.name) for e in exts for o in e.outputs()]
    if len(set(final)) != len(final):
        clash = sorted({n for n in final if final.count(n) > 1})
        raise ExtractorError(f"--name: two features of this run would be called {clash}")
    return named


def _check_identity(writer: CacheWriter, cache: Path, name: str, prov: dict) -> None:
    old = writer.feature_provenance(name)
    why = mismatch(name, str(cache), old, prov) if old is not None else None
    if why:
        raise PipelineError(why)


def timeline_of(params: DecodeParams) -> dict:
    return {"fps": params.fps, "seg_len": params.seg_len, "max_seconds": params.max_seconds, "pad": params.pad}


def _needed(record: dict | None, source: dict, exts: list[Extractor], names: FeatureNames,
            beat_spec: str | None = None) -> tuple[str, ...]:
    """Specs whose outputs (by stored name) this video still lacks (all of them when the source changed).

    On the beat timeline the rhythm extractor runs whenever anything does: its beats make the segments."""
    if record is None or not same_source(record, {"source": source}):
        return tuple(e.spec for e in exts)
    have = record.get("features", {})
    need = [e.spec for e in exts if any(names(o.name) not in have for o in e.outputs()
                                        if not (beat_spec and o.name == BEATS_OUTPUT))]
    if need and beat_spec and beat_spec not in need:
        need.insert(0, beat_spec)
    return tuple(need)


# -- the beat timeline (featpipe.run.beat_timeline): rhythm in the run, asked for its beat times ----------------
def _beat_options(cfg: ExtractConfig) -> ExtractOptions:
    """The run's options; on the beat timeline with ``beat_times=1`` for the rhythm extractor."""
    if (not cfg.timeline.beats or any(k == "beat_times" for k, _ in cfg.options.extra)
            or not any(spec.partition(":")[0] == "rhythm" for spec in cfg.audio)):
        return cfg.options
    return replace(cfg.options, extra=tuple(sorted((*cfg.options.extra, ("beat_times", "1")))))


def _beat_spec(cfg: ExtractConfig, exts: list[Extractor]) -> str | None:
    """The rhythm extractor's spec on the beat timeline (None on fixed seconds); a one-line refusal
    when the run has none."""
    if not cfg.timeline.beats:
        return None
    rhythm = [e for e in exts if e.name == "rhythm"]
    if not rhythm:
        raise PipelineError(f"--timeline {cfg.timeline} takes its beats from the rhythm extractor in the same "
                            "decode: add --audio rhythm")
    if not rhythm[0].opt("beat_times"):
        raise PipelineError(f"--timeline {cfg.timeline} needs the rhythm extractor's beat times: drop --set beat_times=0")
    return rhythm[0].spec


def run_extract(cfg: ExtractConfig, on_progress: Callable[[str, VideoResult | None], None] | None = None,
                on_start: Callable[[int, int, str | None], None] | None = None) -> RunSummary:
    """Extract every missing feature of every input video into ``cfg.cache``.

    ``on_start(total, todo, dashboard)`` is called once the plan is known; ``on_progress(kind,
    result)`` after each video ("done", "failed" or "skipped"). Local CPU workers start from a
    fork server importing and loading the run's models while the client plans (:func:`featpipe.run.cluster.warm_workers`).
    """
    with warm_workers(cfg.visual + cfg.audio, cfg.workers, local_cpu(cfg.scheduler, cfg.options.device),
                      _beat_options(cfg)):
        return _run_extract(cfg, on_progress, on_start)


def _run_extract(cfg: ExtractConfig, on_progress: Callable[[str, VideoResult | None], None] | None,
                 on_start: Callable[[int, int, str | None], None] | None) -> RunSummary:
    t_start = time.perf_counter()
    exts = build_extractors(cfg.visual, cfg.audio, _beat_options(cfg))
    beat_spec = _beat_spec(cfg, exts)
    names = variant_names(exts, cfg.names)
    videos, rejects = discover(cfg.inputs)
    summary = RunSummary(report=Path(f"{cfg.cache}.report.jsonl"))
    report = open(summary.report, "w")  # a line per video as it finishes: kill -9 keeps what was committed

    def note(kind: str, video_id: str, path: str, reason: str = "", seconds: float = 0.0, detail: str = "") -> None:
        line = {"video_id": video_id, "path": path, "status": kind, "reason": reason, "seconds": round(seconds, 3)}
        if detail:  # a bug in featpipe: its traceback, for the bug report
            line["traceback"] = detail
        report.write(json.dumps(line) + "\n")
        report.flush()

    try:
        for path, reason in rejects:
            summary.failed.append((Path(path).stem, path, reason))
            note("failed", Path(path).stem, path, reason)
        with CacheWriter(cfg.cache, {**timeline_of(cfg.params), **cfg.timeline.as_dict()}) as writer:
            features = [(replace(out, name=names(out.name)),
                         provenance(ext, cfg.params, out, cfg.dtype, cfg.timeline))
                        for ext in exts for out in ext.outputs() if not (beat_spec and out.name == BEATS_OUTPUT)]
            for out, prov in features:  # every check before any new feature is created
                _check_identity(writer, cfg.cache, out.name, prov)
            for out, prov in features:
                writer.ensure_feature(out, prov, cfg.dtype)
            writer.start()
            jobs: list[tuple[VideoJob, dict]] = []
            for v in videos:
                try:
                    src = source_stat(v.path)
                except OSError as exc:
                    summary.failed.append((v.video_id, v.path, str(exc)))
                    note("failed", v.video_id, v.path, str(exc))
                    continue
                specs = _needed(writer.records.get(v.video_id), src, exts, names, beat_spec)
                if not specs:
                    summary.skipped.append(v.video_id)
                    note("skipped", v.video_id, v.path)
                    if on_progress:
                        on_progress("skipped", None)
                    continue
                jobs.append((VideoJob(v.video_id, v.path, specs, _beat_options(cfg), cfg.params, cfg.dtype,
                                      timeline=cfg.timeline), src))
            try:
                run_jobs(cfg, writer, jobs, summary, note, on_progress, on_start, len(videos), names)
            finally:
                summary.seconds = time.perf_counter() - t_start
    finally:
        report.close()
    return summary


