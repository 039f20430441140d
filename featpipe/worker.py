"""What runs on a Dask worker for one video: decode once, run every extractor, pad.

Extractors are built and loaded once per worker process (``_EXTRACTORS``), not per video.
Decoding runs in a prefetch thread one chunk ahead of the models (:func:`prefetch`), so a GPU
is not left idle while the CPU decodes. Errors become a failed :class:`VideoResult` with a
one-line reason, so a bad file never takes the run down; only a crash of the process itself
escapes, and Dask retries the video on another worker a bounded number of times
(:func:`run_video` counts those deaths itself, whatever the scheduler's setting).
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np

from . import __version__, extractors
from .decode import (DecodeError, DecodeParams, DecodeStats, MediaInfo, count_segments, iter_chunks, merge_needs,
                     probe, rows_before)
from .extractors.base import ExtractOptions, Extractor, ExtractorError, MediaNeeds

_EXTRACTORS: dict[tuple[str, ExtractOptions], Extractor] = {}
T = TypeVar("T")


@dataclass(frozen=True)
class VideoJob:
    video_id: str
    path: str
    specs: tuple[str, ...]  # extractors to run for this video (only those with missing outputs)
    options: ExtractOptions
    params: DecodeParams
    dtype: str | None = None  # None: each output's own dtype (float16 for embeddings)
    allowed_failures: int | None = None  # worker deaths tolerated before giving up (None: no check)
    topic: str | None = None  # Dask event topic for "start"/"probed" announcements (None: silent)
    tries: str | None = None  # name of the scheduler-side counter of this video's tries


@dataclass
class VideoResult:
    video_id: str
    path: str
    ok: bool
    reason: str = ""
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    valid: dict[str, int] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    segments: int = 0
    seconds: float = 0.0


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def get_extractor(spec: str, options: ExtractOptions) -> Extractor:
    """The loaded extractor for ``spec`` in this process (built and loaded on first use)."""
    key = (spec, options)
    if key not in _EXTRACTORS:
        ext = extractors.build(spec, options)
        ext.load(resolve_device(options.device))
        _EXTRACTORS[key] = ext
    return _EXTRACTORS[key]


# -- decoding ahead of the models ---------------------------------------------------------------
_DONE = object()


def prefetch(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    The producer's exceptions are raised in the consumer, in order. When the consumer stops
    early (an extractor raised), the producer is told to stop and closes its iterator in its
    own thread, so decoders release their files.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put((item, None)):
                    break
            else:
                put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put((_DONE, exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="featpipe-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if item is _DONE:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)


def chunk_params(params: DecodeParams, needs: MediaNeeds, batch_size: int) -> DecodeParams:
    """Decode parameters whose chunks hold at least ``batch_size`` frames, so models see full batches.

    Only the chunking changes; extractors give the same rows however a video is chunked.
    """
    per_segment = len(needs.frame_positions)
    if per_segment == 0:
        return params
    segments = max(params.chunk_segments, math.ceil(batch_size / per_segment))
    return params if segments == params.chunk_segments else replace(params, chunk_segments=segments)


# -- one video ----------------------------------------------------------------------------------
def _pad(arr: np.ndarray, rows: int, mode: str) -> np.ndarray:
    if arr.shape[0] >= rows:
        return arr[:rows]
    if arr.shape[0] == 0 or mode == "zero":
        fill = np.zeros((rows - arr.shape[0], *arr.shape[1:]), arr.dtype)
    else:  # MUSIC-AVQA's rule: repeat the last second
        fill = np.repeat(arr[-1:], rows - arr.shape[0], axis=0)
    return np.concatenate([arr, fill])


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    text = msg[0] if msg else ""
    if isinstance(exc, (DecodeError, ExtractorError)):  # sentences about the media or the setup
        return text
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    loc = f" (at {where.name}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {text}{loc}"


def process_video(job: VideoJob, on_probe: Callable[[MediaInfo], None] | None = None) -> VideoResult:
    """Decode ``job.path`` once and return every requested output, padded to the timeline.

    ``on_probe(info)`` is called once the duration is known (the client scales its time limit
    with it).
    """
    t0 = time.perf_counter()
    result = VideoResult(job.video_id, job.path, ok=False)
    try:
        exts = [get_extractor(s, job.options) for s in job.specs]
        info = probe(job.path, job.params)
        if on_probe is not None:
            on_probe(info)
        params = job.params
        planned, _ = count_segments(info.duration, params)  # the stated duration: a hint for chunking
        needs = merge_needs([e.needs() for e in exts])
        parts: dict[str, list[np.ndarray]] = {o.name: [] for e in exts for o in e.outputs()}
        stats = DecodeStats()  # what each stream really delivered, filled while decoding
        chunks = iter_chunks(info, needs, chunk_params(params, needs, job.options.batch_size), job.video_id, planned,
                             stats)
        with closing(prefetch(chunks)) as ahead:  # closing: stop decoding at once if a model raises
            for chunk in ahead:
                for e in exts:
                    out = e.extract(chunk)
                    for name, arr in out.items():
                        parts[name].append(np.asarray(arr))
        verdict = stats.verdict(params)  # honest valid counts per modality, or a DecodeError
        stored = verdict.stored
        for e in exts:
            for o in e.outputs():
                arr = np.concatenate(parts[o.name]) if parts[o.name] else np.zeros((0, *o.shape), np.float32)
                if arr.shape[1:] != tuple(o.shape):
                    raise ValueError(f"{e.spec} gave rows of shape {arr.shape[1:]}, declared {o.shape}")
                valid = verdict.valid.get(o.modality, stored)
                if o.hop is None:
                    rows, ok_rows = stored, valid
                    if arr.shape[0] != stats.segments:
                        raise ValueError(f"{e.spec} gave {arr.shape[0]} rows for {stats.segments} segments")
                else:
                    rows = max(1, rows_before(stored * params.seg_len, o.hop, o.start))
                    ok_rows = min(arr.shape[0], rows, rows_before(valid * params.seg_len, o.hop, o.start))
                out = _pad(arr[:ok_rows], rows, params.pad).astype(job.dtype or o.dtype)
                if not np.all(np.isfinite(out)):  # after the cast: a value past float16's range is inf
                    raise ExtractorError(f"{e.spec} produced values that are not finite as {out.dtype}"
                                         + (" (past float16's range: use --dtype float32)" if out.dtype == np.float16 else ""))
                result.arrays[o.name] = out
                result.valid[o.name] = ok_rows
        result.info = verdict.record(info)
        result.segments = stored
        result.ok = True
    except Exception as exc:  # noqa: BLE001 - every failure of one video is reported, not raised
        result.reason = _one_line(exc)
        result.arrays = {}
    result.seconds = time.perf_counter() - t0
    return result


# -- the Dask task ------------------------------------------------------------------------------
def count_try(name: str) -> int | None:
    """Add one to the scheduler-side try counter ``name`` and return it (None when it cannot be asked).

    Tries of one video run one after another (Dask retries a task only after its worker died),
    so reading and then setting the counter does not race. Counted here, where the work starts,
    rather than with the scheduler's own death count, which also blames tasks that were only
    queued on a dying worker.
    """
    try:
        from distributed import Variable, get_client

        var = Variable(name, client=get_client())
        try:
            n = int(var.get(timeout=5))  # the client created it when it submitted the video
        except TimeoutError:
            n = 0
        var.set(n + 1)
        return n + 1
    except Exception:  # noqa: BLE001 - e.g. an old scheduler: the scheduler's own bound still holds
        return None


def run_video(job: VideoJob) -> VideoResult:
    """The task the client submits: :func:`process_video`, inside the client's fault bounds.

    Before any work it counts this try of the video (:func:`count_try`); when the earlier tries
    all ended with their worker dead more than ``job.allowed_failures`` times, it gives up with
    a reason instead of killing one more worker. This bounds tries on any scheduler, whatever
    its own ``allowed-failures``. It then announces "start" and, once probed, the duration on
    ``job.topic``, which the client's watchdog turns into a time limit.
    """
    from distributed import get_worker

    try:
        worker = get_worker()
        key = worker.get_current_task()
    except ValueError:  # not on a Dask worker (tests call it directly)
        return process_video(job)
    if job.allowed_failures is not None and job.tries:
        n = count_try(job.tries)
        deaths = n - 1 if n is not None else 0
        if deaths > job.allowed_failures:
            return VideoResult(job.video_id, job.path, ok=False, reason=(
                f"its worker died {deaths} times while processing it (a crash in the decoder or an "
                "extractor, or out of memory); see the worker logs"))

    def announce(stage: str, **extra) -> None:
        if job.topic:
            worker.log_event(job.topic, {"key": key, "stage": stage, "worker": worker.address, **extra})

    announce("start")
    return process_video(job, on_probe=lambda info: announce("probed", duration=info.duration))


def worker_check(specs: tuple[str, ...], options: ExtractOptions, sample: str | None) -> tuple[str, str | None]:
    """Run on every worker before a run: (featpipe version, None or why this worker cannot work)."""
    if sample is not None and not os.access(sample, os.R_OK):
        return __version__, f"cannot read {sample} (workers need the same video paths as the client)"
    try:
        for spec in specs:
            extractors.build(spec, options)
    except Exception as exc:  # noqa: BLE001 - reported to the client as one line
        return __version__, f"{_one_line(exc)} (workers need the client's FEATPIPE_* environment)"
    return __version__, None
