"""The extraction run: plan what is missing, fan videos out on Dask, commit results as they come.

The client process is the cache's only writer. Workers decode and extract
(:func:`featpipe.worker.run_video`) and send arrays back; at most ``max_in_flight`` videos are
submitted and not yet committed at once, so memory stays bounded however many videos there are
and however slow the writer is. Faults end one video, not the run: a worker death is retried by
Dask on another worker (bounded, see :mod:`featpipe.worker`), a video past its time limit is
cancelled and its worker restarted (:class:`featpipe.cluster.Watchdog`). Losing the scheduler
ends the run with :class:`PipelineError`; what was committed stays, and a rerun resumes.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import CancelledError
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from distributed import Future, KilledWorker, Variable, wait
from distributed.client import FutureCancelledError

from . import __version__, extractors
from .cache import CacheWriter, same_source, source_stat
from .cluster import (ALLOWED_FAILURES, TIMEOUT_PER_SECOND, VIDEO_TIMEOUT, ClusterError, Watchdog, connect,
                      dashboard_link)
from .decode import DecodeParams
from .extractors.base import ExtractOptions, Extractor, ExtractorError
from .inputs import discover
from .worker import VideoJob, VideoResult, run_video, worker_check


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
    max_in_flight: int | None = None  # None: two per worker thread
    video_timeout: float | None = VIDEO_TIMEOUT  # base of the per-video limit; None or 0: no limit
    timeout_per_second: float = TIMEOUT_PER_SECOND  # ... plus this many seconds per second of video
    allowed_failures: int = ALLOWED_FAILURES  # worker deaths a video may cause before it is failed
    worker_wait: float = 60.0  # seconds to wait for a first worker on an external scheduler


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (video_id, path, reason)
    segments: int = 0
    seconds: float = 0.0
    report: Path | None = None
    dashboard: str | None = None
    peak_in_flight: int = 0  # most videos submitted and not yet committed at once

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
    report = open(summary.report, "w")  # a line per video as it finishes: kill -9 keeps what was committed

    def note(kind: str, video_id: str, path: str, reason: str = "", seconds: float = 0.0) -> None:
        report.write(json.dumps({"video_id": video_id, "path": path, "status": kind, "reason": reason,
                                 "seconds": round(seconds, 3)}) + "\n")
        report.flush()

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
            report.close()
    return summary


def _limit(client, cfg: ExtractConfig) -> int:
    """Videos in flight: ``max_in_flight``, or two per worker thread (one running, one queued)."""
    if cfg.max_in_flight:
        return cfg.max_in_flight
    slots = sum(w.get("nthreads", 1) for w in client.scheduler_info(n_workers=-1).get("workers", {}).values())
    return max(2, 2 * slots)


def _check_workers(client, cfg: ExtractConfig, jobs: list[tuple[VideoJob, dict]]) -> None:
    """Fail fast, with the reason, when the workers cannot do the job (no featpipe, paths, plugins)."""
    try:
        client.wait_for_workers(1, timeout=cfg.worker_wait)
    except TimeoutError:
        raise PipelineError(f"no Dask worker joined the scheduler within {cfg.worker_wait:g} s") from None
    specs = tuple(sorted({s for job, _ in jobs for s in job.specs}))
    answers = client.run(worker_check, specs, cfg.options, jobs[0][0].path, on_error="return")
    for addr, answer in sorted(answers.items()):
        if isinstance(answer, BaseException):
            raise PipelineError(f"worker {addr} cannot run featpipe ({type(answer).__name__}: {answer}); "
                                "install featpipe on every worker")
        version, problem = answer
        if problem:
            raise PipelineError(f"worker {addr}: {problem}")
        if version != __version__:
            warnings.warn(f"worker {addr} runs featpipe {version}, the client {__version__}", stacklevel=2)


def _run_jobs(cfg, writer, jobs, summary, note, on_progress, on_start, total) -> None:
    if not jobs:
        if on_start:
            on_start(total, 0, None)
        return
    try:
        client_cm = connect(cfg.scheduler, cfg.workers, device=cfg.options.device)
        client = client_cm.__enter__()
    except ClusterError as exc:
        raise PipelineError(str(exc)) from None
    except (OSError, TimeoutError) as exc:
        raise PipelineError(f"cannot reach the Dask scheduler {cfg.scheduler}: {exc}") from None
    try:
        summary.dashboard = dashboard_link(client)
        _check_workers(client, cfg, jobs)
        if on_start:
            on_start(total, len(jobs), summary.dashboard)
        _Dispatch(client, cfg, writer, summary, note, on_progress).run(jobs)
    except (OSError, TimeoutError) as exc:
        raise PipelineError(f"lost the Dask scheduler ({type(exc).__name__}: {exc}); rerun to resume") from None
    finally:
        client_cm.__exit__(None, None, None)


class _Dispatch:
    """Submit videos with at most ``limit`` in flight, commit results as they come, enforce time limits."""

    TICK = 0.5  # seconds between time-limit checks while waiting for results

    def __init__(self, client, cfg: ExtractConfig, writer: CacheWriter, summary: RunSummary, note, on_progress):
        self.client, self.cfg, self.writer, self.summary = client, cfg, writer, summary
        self.note, self.on_progress = note, on_progress
        self.run_id = uuid.uuid4().hex[:12]
        self.watch = Watchdog(client, f"featpipe-{self.run_id}", cfg.video_timeout, cfg.timeout_per_second)
        self.active: dict[str, tuple[Future, VideoJob, dict]] = {}
        self.finished: set[str] = set()
        self.submitted = 0
        self.killed: dict[str, int] = {}  # video id -> KilledWorker answers so far

    def submit(self, job: VideoJob, src: dict) -> None:
        if job.tries is None:
            job = replace(job, allowed_failures=self.cfg.allowed_failures,
                          tries=f"featpipe-{self.run_id}-tries-{job.video_id}",
                          topic=self.watch.topic if self.watch.enabled else None)
            # created before the task runs, so reading it never waits (a wait that times out
            # makes the scheduler log a traceback)
            Variable(job.tries, client=self.client).set(0)
        self.submitted += 1
        key = f"featpipe-{self.run_id}-{self.submitted}-{job.video_id}"
        self.watch.expect(key)  # before submitting, so its "start" event is never missed
        fut = self.client.submit(run_video, job, pure=False, key=key)
        self.active[key] = (fut, job, src)
        self.summary.peak_in_flight = max(self.summary.peak_in_flight, len(self.active))

    def tries(self, job: VideoJob) -> int:
        """How many times workers started this video (its counter on the scheduler)."""
        try:
            return int(Variable(job.tries, client=self.client).get(timeout=5))
        except TimeoutError:
            return 0

    def run(self, jobs: list[tuple[VideoJob, dict]]) -> None:
        pending = iter(jobs)
        limit, checked = _limit(self.client, self.cfg), time.monotonic()
        try:
            while True:
                if time.monotonic() - checked > 10:  # workers may have joined or left
                    limit, checked = _limit(self.client, self.cfg), time.monotonic()
                while len(self.active) < limit and (item := next(pending, None)) is not None:
                    self.submit(*item)
                if not self.active:
                    return
                try:
                    done = wait([f for f, _, _ in self.active.values()], timeout=self.TICK,
                                return_when="FIRST_COMPLETED").done
                except TimeoutError:
                    done = set()
                except CancelledError:  # only the scheduler connection cancels what we did not
                    raise PipelineError("lost the Dask scheduler (the connection dropped and its tasks were "
                                        "cancelled); rerun to resume") from None
                if self.client.status != "running":
                    raise PipelineError("lost the Dask scheduler (the client is disconnected); rerun to resume")
                for fut in done:
                    self.collect(fut)
                for key, worker, elapsed, limit_s in self.watch.expired():
                    self.time_out(key, worker, elapsed, limit_s)
        finally:
            self.watch.close()

    def collect(self, fut: Future) -> None:
        _, job, src = self.active.pop(fut.key)
        self.watch.forget(fut.key)
        try:
            result: VideoResult = fut.result()
        except FutureCancelledError:
            raise PipelineError("lost the Dask scheduler (its tasks were cancelled); rerun to resume") from None
        except KilledWorker:
            # The scheduler's own bound, which also counts deaths of workers that merely had the
            # video queued: resubmit unless the video's own tries used up the bound.
            tries = self.tries(job)
            self.killed[job.video_id] = n = self.killed.get(job.video_id, 0) + 1
            if tries <= self.cfg.allowed_failures and n <= 2 * (self.cfg.allowed_failures + 1):
                fut.release()
                self.submit(job, src)
                return
            result = VideoResult(job.video_id, job.path, ok=False, reason=(
                f"its worker died {max(tries, n)} times while processing it (a crash in the decoder or an "
                "extractor, or out of memory); see the worker logs"))
        except Exception as exc:  # noqa: BLE001 - e.g. the job could not be unpickled there
            result = VideoResult(job.video_id, job.path, ok=False, reason=f"{type(exc).__name__}: {exc}")
        fut.release()
        self.finish(job, src, result)

    def time_out(self, key: str, worker: str, elapsed: float, limit_s: float) -> None:
        fut, job, src = self.active.pop(key)
        self.watch.forget(key)
        fut.cancel()
        self.watch.restart(worker)  # frees the worker: the stuck thread cannot be stopped any other way
        self.finish(job, src, VideoResult(job.video_id, job.path, ok=False, seconds=elapsed, reason=(
            f"timed out after {elapsed:.0f} s (limit {limit_s:.0f} s: --video-timeout {self.cfg.video_timeout:g} "
            f"+ {self.cfg.timeout_per_second:g} x duration); its worker was restarted")))

    def finish(self, job: VideoJob, src: dict, result: VideoResult) -> None:
        if job.video_id in self.finished:  # cannot happen: one submission per video and run
            raise PipelineError(f"{job.video_id} came back twice")
        self.finished.add(job.video_id)
        try:
            Variable(job.tries, client=self.client).delete()  # the try counter is no longer needed
        except Exception:  # noqa: BLE001 - a lost scheduler is noticed by the main loop
            pass
        summary = self.summary
        if result.ok:
            record = {"video_id": job.video_id, "source": src, "decode": self.cfg.params.as_dict(), **result.info}
            self.writer.commit(record, result.arrays, result.valid)
            summary.done.append(job.video_id)
            summary.segments += result.segments
            self.note("done", job.video_id, job.path, seconds=result.seconds)
        else:
            summary.failed.append((job.video_id, job.path, result.reason))
            self.note("failed", job.video_id, job.path, result.reason, result.seconds)
        if self.on_progress:
            self.on_progress("done" if result.ok else "failed", result)
