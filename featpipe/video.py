"""One video, start to end: probe, decode once, run every extractor on every chunk, pad.

This is the whole per-video algorithm, with no cluster in it: :func:`process_video` runs the
same in a test, a benchmark or a Dask worker (:mod:`featpipe.worker` wraps it in the task).
Decoding runs in a prefetch thread one chunk ahead of the models. Errors become a failed
:class:`VideoResult` with a one-line reason, so a bad file never takes the run down.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field, replace

import numpy as np

from .contracts import ExtractOptions, MediaNeeds
from .decode import (DecodeError, DecodeParams, DecodeStats, MediaInfo, count_segments, iter_chunks, merge_needs,
                     probe, rows_before)
from .extractors.base import Extractor, ExtractorError
from .loaded import get_extractor
from .prefetch import prefetch
from .rows import fill_plan, invalid_runs, runs_mask, take_rows, valid_end
from .timeline import Timeline, to_beats


@dataclass(frozen=True)
class VideoJob:
    """One video to extract: which extractors, with which options, on which timeline."""

    video_id: str
    path: str
    specs: tuple[str, ...]  # extractors to run for this video (only those with missing outputs)
    options: ExtractOptions
    params: DecodeParams
    dtype: str | None = None  # None: each output's own dtype (float16 for embeddings)
    timeline: Timeline = field(default_factory=Timeline)  # beats: pooled after extraction (featpipe.timeline)


@dataclass
class VideoResult:
    """What came of one video: the padded arrays and valid rows, or a one-line reason.

    ``valid[name]`` counts the rows up to the last valid one; ``invalid[name]`` lists the
    ``[start, stop)`` runs before it that hold fill (a stream that started late, a hole), not
    computed values (:mod:`featpipe.rows`).
    """

    video_id: str
    path: str
    ok: bool
    reason: str = ""
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    valid: dict[str, int] = field(default_factory=dict)
    invalid: dict[str, list[list[int]]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    segments: int = 0
    seconds: float = 0.0
    bounds: np.ndarray | None = None  # (K, 2) start/end seconds of each row on the beat timeline


def chunk_params(params: DecodeParams, needs: MediaNeeds, batch_size: int) -> DecodeParams:
    """Decode parameters whose chunks hold at least ``batch_size`` frames, so models see full batches.

    Only the chunking changes; extractors give the same rows however a video is chunked.
    """
    per_segment = len(needs.frame_positions)
    if per_segment == 0:
        return params
    segments = max(params.chunk_segments, math.ceil(batch_size / per_segment))
    return params if segments == params.chunk_segments else replace(params, chunk_segments=segments)


def _beat_rows(result: VideoResult, exts: list[Extractor], seg_len: float, stored: int, per: int) -> None:
    """The beat timeline's step after extraction: pool every output's base-grid rows into the video's
    beat segments (featpipe.timeline), in place; no second decode."""
    centres, covered, masks = {}, {}, {}
    for e in exts:
        for o in e.outputs():
            n, ok = result.arrays[o.name].shape[0], result.valid[o.name]
            hop, start = (seg_len, seg_len / 2) if o.hop is None else (o.hop, o.start)
            centres[o.name] = start + hop * np.arange(n)
            covered[o.name] = start + hop * (ok - 0.5) if ok else 0.0
            masks[o.name] = runs_mask(n, ok, result.invalid.get(o.name))
    result.arrays, beat, result.bounds, fallback = to_beats(
        result.arrays, masks, centres, covered, seg_len, stored, per)
    result.valid = {k: valid_end(m) for k, m in beat.items()}
    result.invalid = {k: invalid_runs(m) for k, m in beat.items()}
    result.info["timeline"] = {"kind": "beats", "beats_per_segment": per, "segments": int(result.bounds.shape[0]),
                               "fallback": fallback}


def one_line(exc: BaseException) -> str:
    """The reason an exception gives for a failed video: its first line, and where it was raised."""
    msg = str(exc).strip().splitlines()
    text = msg[0] if msg else ""
    if isinstance(exc, (DecodeError, ExtractorError)):  # sentences about the media or the setup
        return text
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    loc = f" (at {where.name}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {text}{loc}"


def process_video(job: VideoJob, on_probe: Callable[[MediaInfo], None] | None = None,
                  load: Callable[[str, ExtractOptions], Extractor] = get_extractor) -> VideoResult:
    """Decode ``job.path`` once and return every requested output, padded to the timeline.

    ``on_probe(info)`` is called once the duration is known (the client scales its time limit
    with it). ``load(spec, options)`` gives the loaded extractors (by default the ones this
    process keeps). Every exception becomes a failed result with a one-line reason.
    """
    t0 = time.perf_counter()
    result = VideoResult(job.video_id, job.path, ok=False)
    try:
        exts = [load(s, job.options) for s in job.specs]
        info = probe(job.path, job.params)
        if on_probe is not None:
            on_probe(info)
        params = job.params
        # the valid segments of the stated duration: a hint for chunking (decoding goes on while a stream does)
        _, planned = count_segments(info.duration, params)
        own = [e.needs() for e in exts]
        needs = merge_needs(own)  # one decode; each extractor gets frames at its own request
        parts: dict[str, list[np.ndarray]] = {o.name: [] for e in exts for o in e.outputs()}
        stats = DecodeStats()  # what each stream really delivered, filled while decoding
        chunks = iter_chunks(info, needs, chunk_params(params, needs, job.options.batch_size), job.video_id, planned,
                             stats)
        with closing(prefetch(chunks)) as ahead:  # closing: stop decoding at once if a model raises
            for chunk in ahead:
                for e, n in zip(exts, own):
                    out = e.extract(chunk.for_needs(n))
                    for name, arr in out.items():
                        parts[name].append(np.asarray(arr))
        verdict = stats.verdict(params)  # honest valid counts per modality, or a DecodeError
        stored = verdict.stored
        for e in exts:
            for o in e.outputs():
                arr = np.concatenate(parts[o.name]) if parts[o.name] else np.zeros((0, *o.shape), np.float32)
                if arr.shape[1:] != tuple(o.shape):
                    raise ValueError(f"{e.spec} gave rows of shape {arr.shape[1:]}, declared {o.shape}")
                if o.hop is None:
                    rows = stored
                    if arr.shape[0] != stats.segments:
                        raise ValueError(f"{e.spec} gave {arr.shape[0]} rows for {stats.segments} segments")
                else:
                    rows = max(1, rows_before(stored * params.seg_len, o.hop, o.start))
                # the rows whose time this output's stream decoded (featpipe.decode.Verdict.row_mask)
                mask = verdict.row_mask(o.modality, rows, o.hop, o.start, available=arr.shape[0])
                ok_rows = valid_end(mask)
                out = take_rows(arr, fill_plan(mask, arr.shape[0], params.pad)).astype(job.dtype or o.dtype)
                if not np.all(np.isfinite(out)):  # after the cast: a value past float16's range is inf
                    raise ExtractorError(f"{e.spec} produced values that are not finite as {out.dtype}"
                                         + (" (past float16's range: use --dtype float32)"
                                            if out.dtype == np.float16 else ""))
                result.arrays[o.name] = out
                result.valid[o.name] = ok_rows
                result.invalid[o.name] = invalid_runs(mask)
        result.info = verdict.record(info)
        result.segments = stored
        if job.timeline.beats:
            _beat_rows(result, exts, params.seg_len, stored, job.timeline.per)
        result.ok = True
    except Exception as exc:  # noqa: BLE001 - every failure of one video is reported, not raised
        result.reason = one_line(exc)
        result.arrays = {}
    result.seconds = time.perf_counter() - t0
    return result
