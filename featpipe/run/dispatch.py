"""Running the planned videos on Dask: submit with a bounded number in flight, commit results as
they come, enforce the bounds of :mod:`featpipe.run.retry`.

The client process is the cache's only writer. At most ``max_in_flight`` videos are submitted and
not yet committed at once, so memory stays bounded however many videos there are and however
slow the writer is. Losing the scheduler ends the run with :class:`PipelineError`; what was
committed stays, and a rerun resumes.

Rows stream (:mod:`featpipe.run.spool`): workers write each video's rows to ``<cache>.spool/`` chunk
by chunk and send references; the writer copies them in blocks and their files are deleted. The
run's start removes what a killed run left there and its end removes the folder. When a worker
cannot write where the client reads (another machine's disk), or with ``stream=False``, results
come in memory.
"""

from __future__ import annotations

import time
import uuid
import warnings
from concurrent.futures import CancelledError
from typing import Callable

from distributed import Future, KilledWorker, wait
from distributed.client import FutureCancelledError

from .. import __version__
from ..cache import CacheWriter
from .cluster import ClusterError, connect, dashboard_link
from .config import ExtractConfig, FeatureNames, PipelineError, RunSummary
from .failure import RepeatGuard, describe
from .spool import SpoolError, SpoolFolder
from .retry import TryCounter, Watchdog
from .extract_video import VideoJob, VideoResult, cache_record, one_line
from .worker import load_check, run_video, worker_check


def _limit(client, cfg: ExtractConfig) -> int:
    """Videos in flight: ``max_in_flight``, or two per worker thread (one running, one queued)."""
    if cfg.max_in_flight:
        return cfg.max_in_flight
    slots = sum(w.get("nthreads", 1) for w in client.scheduler_info(n_workers=-1).get("workers", {}).values())
    return max(2, 2 * slots)


def check_workers(client, cfg: ExtractConfig, jobs: list[tuple[VideoJob, dict]],
                  spool: SpoolFolder | None = None) -> bool:
    """Fail fast, with the reason, when the workers cannot do the job (no featpipe, paths, plugins).

    Returns whether rows can stream through ``spool``: every worker wrote a check file there that
    this client reads back (a worker on another machine whose disk does not hold the folder cannot)."""
    try:
        client.wait_for_workers(1, timeout=cfg.worker_wait)
    except TimeoutError:
        raise PipelineError(f"no Dask worker joined the scheduler within {cfg.worker_wait:g} s") from None
    specs = tuple(sorted({s for job, _ in jobs for s in job.specs}))
    answers = client.run(worker_check, specs, cfg.options, jobs[0][0].path, str(spool.path) if spool else None,
                         on_error="return")
    blind = []
    for addr, answer in sorted(answers.items()):
        if isinstance(answer, BaseException):
            raise PipelineError(f"worker {addr} cannot run featpipe ({type(answer).__name__}: {answer}); "
                                "install featpipe on every worker")
        version, problem, check = answer
        if problem:
            raise PipelineError(f"worker {addr}: {problem}")
        if version != __version__:
            warnings.warn(f"worker {addr} runs featpipe {version}, the client {__version__}", stacklevel=2)
        if spool is not None and not (check and spool.visible(check)):
            blind.append(addr)
    options = jobs[0][0].options  # the jobs' own (the beat timeline adds one): the models the videos use
    loads = {addr: client.submit(load_check, specs, options, workers=[addr], allow_other_workers=False, pure=False,
                                 key=f"featpipe-load-{uuid.uuid4().hex}") for addr in sorted(answers)}
    for addr, fut in loads.items():
        try:
            problem = fut.result()
        except Exception as exc:  # noqa: BLE001 - its worker died loading (out of memory, a crash)
            problem = f"could not load the extractors ({type(exc).__name__}: {one_line(exc)})"
        finally:
            fut.release()
        if problem:
            raise PipelineError(f"worker {addr}: {problem}")
    if blind:
        warnings.warn(f"worker {blind[0]}{f' and {len(blind) - 1} more' if len(blind) > 1 else ''} cannot write "
                      f"to {spool.path}, which this client reads: results come in memory", stacklevel=2)
    return spool is not None and not blind


def run_jobs(cfg: ExtractConfig, writer: CacheWriter, jobs: list[tuple[VideoJob, dict]], summary: RunSummary,
             note: Callable[..., None], on_progress: Callable | None, on_start: Callable | None, total: int,
             names: FeatureNames | None = None) -> None:
    """Connect to the cluster, check the workers, and run ``jobs`` (video job, source stat) to the end.

    ``names`` gives the name each output is committed under (``--name`` variants).
    """
    if not jobs:
        if on_start:
            on_start(total, 0, None)
        return
    try:
        client_cm = connect(cfg.scheduler, cfg.workers, device=cfg.options.device, policy=cfg.try_policy,
                            tls=(cfg.tls_ca_file, cfg.tls_cert, cfg.tls_key))
        client = client_cm.__enter__()
    except ClusterError as exc:
        raise PipelineError(str(exc)) from None
    except (OSError, TimeoutError) as exc:
        raise PipelineError(f"cannot reach the Dask scheduler {cfg.scheduler}: {exc}") from None
    spool = _open_spool(cfg) if cfg.stream else None  # a killed run's files go first
    try:
        summary.dashboard = dashboard_link(client)
        summary.streamed = check_workers(client, cfg, jobs, spool)
        if on_start:
            on_start(total, len(jobs), summary.dashboard)
        Dispatch(client, cfg, writer, summary, note, on_progress, names,
                 spool if summary.streamed else None).run(jobs)
    except (OSError, TimeoutError) as exc:
        raise PipelineError(f"lost the Dask scheduler ({type(exc).__name__}: {exc}); rerun to resume") from None
    finally:
        client_cm.__exit__(None, None, None)
        if spool is not None:
            spool.close()


def _open_spool(cfg: ExtractConfig) -> SpoolFolder | None:
    """The run's ``<cache>.spool/``, emptied of a killed run's files; None (rows in memory) when it cannot be made."""
    folder = SpoolFolder(cfg.cache)
    try:
        return folder.open()
    except OSError as exc:
        warnings.warn(f"cannot use {folder.path} ({exc.strerror or exc}): results come in memory", stacklevel=2)
        return None


class Dispatch:
    """Submit videos with at most ``limit`` in flight, commit results as they come, enforce time limits."""

    TICK = 0.5  # seconds between time-limit checks while waiting for results

    def __init__(self, client, cfg: ExtractConfig, writer: CacheWriter, summary: RunSummary, note, on_progress,
                 names: FeatureNames | None = None, spool: SpoolFolder | None = None):
        self.client, self.cfg, self.writer, self.summary = client, cfg, writer, summary
        self.spool = spool  # None: results come in memory
        self.names = names or FeatureNames()
        self.note, self.on_progress = note, on_progress
        self.run_id = uuid.uuid4().hex[:12]
        self.policy = cfg.try_policy
        self.watch = Watchdog(client, f"featpipe-{self.run_id}", self.policy)
        self.active: dict[str, tuple[Future, VideoJob, dict]] = {}
        self.prefixes: dict[str, str] = {}  # task key -> its spool files' prefix (run id, submission)
        self.counters: dict[str, TryCounter] = {}  # video id -> its try counter
        self.finished: set[str] = set()
        self.submitted = 0
        self.killed: dict[str, int] = {}  # video id -> KilledWorker answers so far
        self.repeats = RepeatGuard()  # the same featpipe bug failing videos in a row stops the run

    def submit(self, job: VideoJob, src: dict) -> None:
        counter = self.counters.get(job.video_id)
        if counter is None:  # a first submission (a resubmission after KilledWorker keeps the count)
            counter = self.counters[job.video_id] = TryCounter(f"featpipe-{self.run_id}-tries-{job.video_id}",
                                                        self.policy.allowed_failures,
                                                        self.watch.topic if self.watch.enabled else None)
            counter.create(self.client)
        self.submitted += 1
        key = f"featpipe-{self.run_id}-{self.submitted}-{job.video_id}"
        self.prefixes[key] = prefix = f"{self.run_id}-{self.submitted}"  # spool names: never the video id
        self.watch.expect(key)  # before submitting, so its "start" event is never missed
        fut = self.client.submit(run_video, job, counter, self.spool.target(prefix) if self.spool else None,
                                 pure=False, key=key)
        self.active[key] = (fut, job, src)
        self.summary.peak_in_flight = max(self.summary.peak_in_flight, len(self.active))

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
        self.watch.unwatch(fut.key)
        try:
            result: VideoResult = fut.result()
        except FutureCancelledError:
            raise PipelineError("lost the Dask scheduler (its tasks were cancelled); rerun to resume") from None
        except KilledWorker:
            # The scheduler's own bound, which also counts deaths of workers that merely had the
            # video queued: resubmit unless the video's own tries used up the bound.
            tries = self.counters[job.video_id].read(self.client)
            self.killed[job.video_id] = n = self.killed.get(job.video_id, 0) + 1
            if self.policy.resubmit(tries, n):
                fut.release()
                self.delete_spool_files(fut.key)  # what its dead tries wrote
                self.submit(job, src)
                return
            result = VideoResult(job.video_id, job.path, ok=False, reason=self.policy.death_reason(max(tries, n)))
        except Exception as exc:  # noqa: BLE001 - e.g. the job could not be unpickled there: featpipe's fault
            failure = describe(exc)
            result = VideoResult(job.video_id, job.path, ok=False, reason=failure.reason, internal=failure.internal,
                                 detail=failure.detail)
        fut.release()
        self.finish(job, src, result, fut.key)

    def time_out(self, key: str, worker: str, elapsed: float, limit_s: float) -> None:
        fut, job, src = self.active.pop(key)
        self.watch.unwatch(key)
        fut.cancel()
        self.watch.restart(worker)  # frees the worker: the stuck thread cannot be stopped any other way
        self.finish(job, src, VideoResult(job.video_id, job.path, ok=False, seconds=elapsed,
                                          reason=self.policy.timeout_reason(elapsed, limit_s)), key)

    def delete_spool_files(self, key: str) -> None:
        """Delete every spool file of the submission ``key`` (committed, failed, or of a try that died)."""
        prefix = self.prefixes.pop(key, None)
        if self.spool is not None and prefix is not None:
            self.spool.delete_submission(prefix)

    def finish(self, job: VideoJob, src: dict, result: VideoResult, key: str) -> None:
        if job.video_id in self.finished:  # cannot happen: one submission per video and run
            raise PipelineError(f"{job.video_id} came back twice")
        self.finished.add(job.video_id)
        self.counters.pop(job.video_id).delete(self.client)  # the try counter is no longer needed
        summary = self.summary
        if result.ok:
            named = self.names.keyed
            try:  # spooled rows are copied in blocks; the record is written after them
                self.writer.commit(cache_record(job, src, result, self.names), named(result.arrays),
                                   named(result.valid), bounds=result.bounds)
            except SpoolError as exc:  # no record: the rows written so far are referenced by nothing
                result.ok, result.reason = False, f"its rows could not be read back: {exc}"
        self.delete_spool_files(key)  # the submission's spool files: these rows, and what an earlier try of it left
        if result.ok:
            summary.done.append(job.video_id)
            summary.segments += result.segments
            self.note("done", job.video_id, job.path, seconds=result.seconds)
        else:
            summary.failed.append((job.video_id, job.path, result.reason))
            self.note("failed", job.video_id, job.path, result.reason, result.seconds, detail=result.detail)
        if self.on_progress:
            self.on_progress("done" if result.ok else "failed", result)
        if self.repeats.see(result.ok, result.internal, result.reason):
            raise InternalErrorRepeated(self.repeats.message(f"{self.cfg.cache}.report.jsonl"))


class InternalErrorRepeated(PipelineError):
    """The same bug in featpipe failed several videos in a row: the run stops (exit 2), keeping what it committed."""
