"""The extraction run: plan what is missing, fan videos out on Dask, commit results as they come.

The client process is the cache's only writer. Workers decode and extract
(:func:`featpipe.worker.process_video`) and send arrays back; at most ``max_in_flight``
videos are queued at once, so memory stays bounded however many videos there are and however
slow the writer is.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from distributed import as_completed
from distributed.client import FutureCancelledError

from . import __version__, extractors
from .cache import CacheWriter, same_source, source_stat
from .cluster import ALLOWED_FAILURES, connect, dashboard_link
from .decode import DecodeParams
from .extractors.base import ExtractOptions, Extractor, ExtractorError
from .inputs import discover
from .worker import VideoJob, VideoResult, process_video


class PipelineError(Exception):
    """The run as a whole cannot go on (bad spec, missing weights, lost scheduler)."""


@dataclass
class ExtractConfig:
    inputs: list[str]
    cache: Path
    visual: tuple[str, ...] = ()
    audio: tuple[str, ...] = ()
    params: DecodeParams = field(default_factory=DecodeParams)
    options: ExtractOptions = field(default_factory=ExtractOptions)
    workers: int = 2
    scheduler: str | None = None
    dtype: str | None = None
    max_in_flight: int | None = None


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (video_id, path, reason)
    segments: int = 0
    seconds: float = 0.0
    report: Path | None = None
    dashboard: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


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
            ext.check()
            built.append(ext)
    if not built:
        raise ExtractorError("no extractor asked for: give at least one --visual or --audio spec")
    names = [o.name for e in built for o in e.outputs()]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ExtractorError(f"two specs write the same feature {sorted(dup)}")
    return built


def provenance(ext: Extractor, params: DecodeParams) -> dict:
    return {"spec": ext.spec, "weights": ext.weights_identity(), "featpipe": __version__,
            "decode": params.as_dict(), "options": {"tokens": ext.options.tokens, **dict(ext.options.extra)}}


def timeline_of(params: DecodeParams) -> dict:
    return {"fps": params.fps, "seg_len": params.seg_len, "max_seconds": params.max_seconds, "pad": params.pad}


def _needed(record: dict | None, source: dict, exts: list[Extractor]) -> tuple[str, ...]:
    """Specs whose outputs this video still lacks (all of them when the source changed)."""
    if record is None or not same_source(record, {"source": source}):
        return tuple(e.spec for e in exts)
    have = record.get("features", {})
    return tuple(e.spec for e in exts if any(o.name not in have for o in e.outputs()))


def run_extract(cfg: ExtractConfig, on_progress: Callable[[str, VideoResult | None], None] | None = None,
                on_start: Callable[[int, int, str | None], None] | None = None) -> RunSummary:
    """Extract every missing feature of every input video into ``cfg.cache``.

    ``on_start(total, todo, dashboard)`` is called once the plan is known; ``on_progress(kind,
    result)`` after each video ("done", "failed" or "skipped").
    """
    t_start = time.perf_counter()
    exts = build_extractors(cfg.visual, cfg.audio, cfg.options)
    videos, rejects = discover(cfg.inputs)
    summary = RunSummary(report=Path(f"{cfg.cache}.report.jsonl"))
    report_lines: list[dict] = []

    def note(kind: str, video_id: str, path: str, reason: str = "", seconds: float = 0.0) -> None:
        report_lines.append({"video_id": video_id, "path": path, "status": kind, "reason": reason,
                             "seconds": round(seconds, 3)})

    for path, reason in rejects:
        summary.failed.append((Path(path).stem, path, reason))
        note("failed", Path(path).stem, path, reason)
    with CacheWriter(cfg.cache, timeline_of(cfg.params)) as writer:
        for ext in exts:
            prov = provenance(ext, cfg.params)
            for out in ext.outputs():
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
            specs = _needed(writer.records.get(v.video_id), src, exts)
            if not specs:
                summary.skipped.append(v.video_id)
                note("skipped", v.video_id, v.path)
                if on_progress:
                    on_progress("skipped", None)
                continue
            jobs.append((VideoJob(v.video_id, v.path, specs, cfg.options, cfg.params, cfg.dtype), src))
        try:
            _run_jobs(cfg, writer, jobs, summary, note, on_progress, on_start, len(videos))
        finally:
            summary.seconds = time.perf_counter() - t_start
            with open(summary.report, "w") as fh:
                for line in report_lines:
                    fh.write(json.dumps(line) + "\n")
    return summary


def _run_jobs(cfg, writer, jobs, summary, note, on_progress, on_start, total) -> None:
    if not jobs:
        if on_start:
            on_start(total, 0, None)
        return
    try:
        client_cm = connect(cfg.scheduler, cfg.workers)
        client = client_cm.__enter__()
    except OSError as exc:
        raise PipelineError(f"cannot reach the Dask scheduler {cfg.scheduler}: {exc}") from None
    try:
        summary.dashboard = dashboard_link(client)
        if on_start:
            on_start(total, len(jobs), summary.dashboard)
        slots = sum(w.get("nthreads", 1) for w in client.scheduler_info(n_workers=-1).get("workers", {}).values())
        limit = cfg.max_in_flight or max(2, 2 * max(slots, 1))
        pending = iter(jobs)
        sources = {}
        futures = as_completed()

        def submit_next() -> bool:
            item = next(pending, None)
            if item is None:
                return False
            job, src = item
            fut = client.submit(process_video, job, pure=False, key=f"video-{job.video_id}-{time.time_ns()}")
            sources[fut.key] = (job, src)
            futures.add(fut)
            return True

        for _ in range(limit):
            if not submit_next():
                break
        for fut in futures:
            job, src = sources.pop(fut.key)
            try:
                result: VideoResult = fut.result()
            except FutureCancelledError:
                raise PipelineError("the Dask scheduler went away (tasks cancelled); rerun to resume") from None
            except Exception as exc:  # noqa: BLE001 - KilledWorker and friends: this video only
                name = type(exc).__name__
                reason = (f"its worker died {ALLOWED_FAILURES + 1} times while processing it (decoder or "
                          "extractor crash)" if name == "KilledWorker" else f"{name}: {exc}")
                result = VideoResult(job.video_id, job.path, ok=False, reason=reason)
            fut.release()
            if result.ok:
                record = {"video_id": job.video_id, "source": src, "decode": cfg.params.as_dict(), **result.info}
                writer.commit(record, result.arrays, result.valid)
                summary.done.append(job.video_id)
                summary.segments += result.segments
                note("done", job.video_id, job.path, seconds=result.seconds)
            else:
                summary.failed.append((job.video_id, job.path, result.reason))
                note("failed", job.video_id, job.path, result.reason, result.seconds)
            if on_progress:
                on_progress("done" if result.ok else "failed", result)
            submit_next()
    except (OSError, TimeoutError) as exc:
        raise PipelineError(f"lost the Dask scheduler ({type(exc).__name__}: {exc}); rerun to resume") from None
    finally:
        client_cm.__exit__(None, None, None)
