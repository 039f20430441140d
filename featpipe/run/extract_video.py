"""One video, start to end: probe, decode once, run every extractor on every chunk, pad.

This is the whole per-video algorithm, with no cluster in it: :func:`process_video` runs the
same in a test, a benchmark or a Dask worker (:mod:`featpipe.run.worker` wraps it in the task).
Decoding runs in a prefetch thread one chunk ahead of the models. Errors become a failed
:class:`VideoResult` with a one-line reason, so a bad file never takes the run down.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field, replace

import numpy as np

from ..contracts import BEATS_OUTPUT, ExtractOptions, MediaNeeds
from ..decode import (DecodeParams, DecodeStats, MediaInfo, Verdict, count_segments, iter_chunks, merge_needs,
                      probe, rows_before)
from ..extractors.base import Extractor, ExtractorError
from .config import FeatureNames
from .failure import describe
from .loaded_extractors import get_extractor
from .prefetch import prefetch
from ..decode.rows import fill_plan, invalid_runs, valid_end
from .spool import MemorySink, Spooled, SpoolSink, block_rows, read_rows
from .beat_timeline import Timeline, beat_mask, pool, to_beats

log = logging.getLogger("featpipe.run")

Sink = MemorySink | SpoolSink
"""Where a video's rows go as each chunk's come: memory (the default) or spool files (:mod:`featpipe.run.spool`)."""


@dataclass(frozen=True)
class VideoJob:
    """One video to extract: which extractors, with which options, on which timeline."""

    video_id: str
    path: str
    specs: tuple[str, ...]  # extractors to run for this video (only those with missing outputs)
    options: ExtractOptions
    params: DecodeParams
    dtype: str | None = None  # None: each output's own dtype (float16 for embeddings)
    timeline: Timeline = field(default_factory=Timeline)  # beats: pooled after extraction (featpipe.run.beat_timeline)


@dataclass
class VideoResult:
    """What came of one video: the padded arrays and valid rows, or a one-line reason.

    ``valid[name]`` counts the rows up to the last valid one; ``invalid[name]`` lists the
    ``[start, stop)`` runs before it that hold fill (a stream that started late, a hole), not
    computed values (:mod:`featpipe.decode.rows`). ``arrays`` holds each output's stored rows, or with a
    :class:`~featpipe.run.spool.SpoolSink` a :class:`~featpipe.run.spool.Spooled` reference to them (the
    cache's writer copies them in blocks).
    """

    video_id: str
    path: str
    ok: bool
    reason: str = ""
    arrays: dict[str, np.ndarray | Spooled] = field(default_factory=dict)
    valid: dict[str, int] = field(default_factory=dict)
    invalid: dict[str, list[list[int]]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    segments: int = 0
    seconds: float = 0.0
    bounds: np.ndarray | None = None  # (K, 2) start/end seconds of each row on the beat timeline
    internal: str = ""  # a bug in featpipe (featpipe.run.failure): the error's type and where it was raised
    detail: str = ""  # its traceback, for the report


def cache_record(job: VideoJob, source: dict, result: VideoResult, names: FeatureNames) -> dict:
    """The record of a video that extracted, as the run hands it to the cache's writer: the video, its
    source file's stat, the decode parameters, what decoding found (``result.info``: the decoder's
    :meth:`~featpipe.decode.Verdict.record`, and the beat timeline's counts) and each feature's fill
    runs. The writer adds where the rows are, when and by which featpipe (docs/cache-format.md)."""
    return {"video_id": job.video_id, "source": source, "decode": job.params.as_dict(), **result.info,
            "invalid": names.keyed({k: r for k, r in result.invalid.items() if r})}


def chunk_params(params: DecodeParams, needs: MediaNeeds, batch_size: int) -> DecodeParams:
    """Decode parameters whose chunks hold at least ``batch_size`` frames, so models see full batches.

    Only the chunking changes; extractors give the same rows however a video is chunked.
    """
    per_segment = len(needs.frame_positions)
    if per_segment == 0:
        return params
    segments = max(params.chunk_segments, math.ceil(batch_size / per_segment))
    return params if segments == params.chunk_segments else replace(params, chunk_segments=segments)


def _beat_rows(result: VideoResult, exts: list[Extractor], masks: dict[str, np.ndarray], seg_len: float,
               stored: int, per: int, sink: Sink) -> None:
    """The beat timeline's step after extraction: pool every output's base-grid rows into the video's
    beat segments (featpipe.run.beat_timeline), in place; no second decode. Rows are read and pooled in blocks
    (:func:`_pool_blocks`) and the pooled rows go to ``sink``, so spooled outputs stay on disk.
    ``masks`` are the outputs' row masks on the base grid."""
    centres, covered = {}, {}
    for e in exts:
        for o in e.outputs():
            n, ok = result.arrays[o.name].shape[0], result.valid[o.name]
            hop, start = (seg_len, seg_len / 2) if o.hop is None else (o.hop, o.start)
            centres[o.name] = start + hop * np.arange(n)
            covered[o.name] = start + hop * (ok - 0.5) if ok else 0.0
    beats = {k: read_rows(a, 0, a.shape[0]) for k, a in result.arrays.items() if k == BEATS_OUTPUT}
    _, _, bounds, fallback = to_beats(beats, masks, centres, covered, seg_len, stored, per)
    base, result.arrays, result.valid, result.bounds = result.arrays, {}, {}, bounds
    result.invalid = {}
    for i, (name, src) in enumerate(base.items()):
        if name != BEATS_OUTPUT:  # consumed: the beats are the bounds
            key, dt = f"{i}b", np.dtype(src.dtype)
            sink.open(key, src.shape[1:], dt)
            for r0, r1, s0, s1 in _pool_blocks(centres[name], bounds, block_rows(src.shape[1:], 8)):
                sink.add(key, pool(read_rows(src, r0, r1), centres[name][r0:r1], bounds[s0:s1]).astype(dt))
            result.arrays[name] = sink.stored(key, None)
            beat = beat_mask(bounds, centres[name], covered[name], masks[name])
            result.valid[name], result.invalid[name] = valid_end(beat), invalid_runs(beat)
        if isinstance(src, Spooled):
            src.remove()  # the base-grid rows are pooled
    result.info["timeline"] = {"kind": "beats", "beats_per_segment": per, "segments": int(bounds.shape[0]),
                               "fallback": fallback}


def _pool_blocks(centres: np.ndarray, bounds: np.ndarray, most: int) -> list[tuple[int, int, int, int]]:
    """``(r0, r1, s0, s1)``: blocks of beat segments ``s0:s1`` of at most ``most`` segments and (unless
    one segment alone covers more) ``most`` base rows ``r0:r1``, which hold every row those segments
    average or, for a segment holding no centre, take; so :func:`featpipe.run.beat_timeline.pool` on a block
    gives exactly its rows of pooling the whole video."""
    k, n = bounds.shape[0], centres.shape[0]
    if n == 0:
        return [(0, 0, 0, k)]
    seg = np.searchsorted(bounds[:, 0], centres, side="right") - 1
    inside = np.flatnonzero((seg >= 0) & (centres < bounds[-1, 1]))  # as pool counts them
    first, last = np.full(k, n), np.full(k, -1)
    np.minimum.at(first, seg[inside], inside)
    np.maximum.at(last, seg[inside], inside)
    empty = np.flatnonzero(last < 0)
    if empty.size:  # pool's choice for them: the row whose centre is nearest the middle
        first[empty] = last[empty] = np.abs(centres[None, :] - bounds[empty].mean(axis=1)[:, None]).argmin(axis=1)
    blocks, s0 = [], 0
    while s0 < k:
        s1, lo, hi = s0 + 1, first[s0], last[s0]
        while s1 < k and s1 - s0 < most and max(hi, last[s1]) - min(lo, first[s1]) < most:
            lo, hi, s1 = min(lo, first[s1]), max(hi, last[s1]), s1 + 1
        blocks.append((int(lo), int(hi) + 1, s0, s1))
        s0 = s1
    return blocks


def one_line(exc: BaseException) -> str:
    """The reason an exception gives for a failed video (:func:`featpipe.run.failure.describe`)."""
    return describe(exc).reason


def _add_chunk(sink: Sink, key: str, arr: np.ndarray, dtype: np.dtype, bad: list[int], spec: str,
               shape: tuple[int, ...]) -> None:
    """One chunk's rows of one output into ``sink``, cast to the storage dtype; the rows that are not
    finite after the cast (a value past float16's range is inf) are noted in ``bad``."""
    with np.errstate(over="ignore"):  # checked below
        rows = np.asarray(arr).astype(dtype, copy=False)
    if rows.shape[1:] != tuple(shape):
        raise ValueError(f"{spec} gave rows of shape {rows.shape[1:]}, declared {shape}")
    flat = rows.reshape(rows.shape[0], -1)
    finite = np.isfinite(flat.max(axis=1, initial=0)) & np.isfinite(flat.min(axis=1, initial=0))  # NaN propagates
    bad.extend((np.flatnonzero(~finite) + sink.rows(key)).tolist())
    sink.add(key, rows)


def process_video(job: VideoJob, on_probe: Callable[[MediaInfo], None] | None = None,
                  load: Callable[[str, ExtractOptions], Extractor] = get_extractor,
                  sink: Sink | None = None) -> VideoResult:
    """Decode ``job.path`` once and return every requested output, padded to the timeline.

    ``on_probe(info)`` is called once the duration is known (the client scales its time limit
    with it). ``load(spec, options)`` gives the loaded extractors (by default the ones this
    process keeps). ``sink`` takes each chunk's rows as they come, cast to the storage dtype: by
    default a :class:`~featpipe.run.spool.MemorySink` (``arrays`` holds the stored rows); a
    :class:`~featpipe.run.spool.SpoolSink` writes them to files, holding no more than a chunk, and
    ``arrays`` holds references with their take plans. Every exception becomes a failed result
    with a one-line reason, and the sink's files are deleted.
    """
    t0 = time.perf_counter()
    result = VideoResult(job.video_id, job.path, ok=False)
    sink = MemorySink() if sink is None else sink
    try:
        exts = [load(s, job.options) for s in job.specs]
        info = probe(job.path, job.params)
        if on_probe is not None:
            on_probe(info)
        outs = _Outputs(exts, job.dtype, sink)
        stats = _extract_rows(job, exts, info, outs)
        verdict = stats.verdict(job.params)  # honest valid counts per modality, or a DecodeError
        masks = _store_rows(result, outs, stats, verdict, job.params)
        result.info = verdict.record(info)
        result.segments = verdict.stored
        if job.timeline.beats:
            _beat_rows(result, exts, masks, job.params.seg_len, verdict.stored, job.timeline.per, sink)
        result.ok = True
    except Exception as exc:  # noqa: BLE001 - every failure of one video is reported, not raised
        failure = describe(exc)
        result.reason, result.internal, result.detail = failure.reason, failure.internal, failure.detail
        if failure.internal:
            log.error("%s: internal error in featpipe\n%s", job.video_id, failure.detail)
        result.arrays = {}
        sink.discard()
    result.seconds = time.perf_counter() - t0
    return result


class _Outputs:
    """Every output of a video's extractors, each opened in the sink under a key of its own (spool
    file names: never a feature's name), with its storage dtype and the computed rows that were not
    finite after the cast."""

    def __init__(self, exts: list[Extractor], dtype: str | None, sink: Sink) -> None:
        self.pairs = [(e, o) for e in exts for o in e.outputs()]
        self.sink = sink
        self.key = {o.name: str(i) for i, (_, o) in enumerate(self.pairs)}
        self.dtype = {o.name: np.dtype(dtype or o.dtype) for _, o in self.pairs}
        self.bad: dict[str, list[int]] = {o.name: [] for _, o in self.pairs}
        self.declared = {o.name: (e.spec, tuple(o.shape)) for e, o in self.pairs}
        for _, o in self.pairs:
            sink.open(self.key[o.name], o.shape, self.dtype[o.name])

    def add(self, name: str, arr: np.ndarray) -> None:
        _add_chunk(self.sink, self.key[name], arr, self.dtype[name], self.bad[name], *self.declared[name])


def _extract_rows(job: VideoJob, exts: list[Extractor], info: MediaInfo, outs: _Outputs) -> DecodeStats:
    """Decode once and hand every chunk to every extractor, its rows to the sink; returns what each
    stream really delivered. Decoding runs in a thread one chunk ahead of the models."""
    params = job.params
    # the valid segments of the stated duration: a hint for chunking (decoding goes on while a stream does)
    _, planned = count_segments(info.duration, params)
    own = [e.needs() for e in exts]
    needs = merge_needs(own)  # one decode; each extractor gets frames at its own request
    stats = DecodeStats()  # filled while decoding
    chunks = iter_chunks(info, needs, chunk_params(params, needs, job.options.batch_size), job.video_id, planned,
                         stats)
    with closing(prefetch(chunks)) as ahead:  # closing: stop decoding at once if a model raises
        for chunk in ahead:
            for e, n in zip(exts, own):
                for name, arr in e.extract(chunk.for_needs(n)).items():
                    outs.add(name, arr)
    return stats


def _store_rows(result: VideoResult, outs: _Outputs, stats: DecodeStats, verdict: Verdict,
                params: DecodeParams) -> dict[str, np.ndarray]:
    """Which rows each output stores (the take plan of its row mask: :mod:`featpipe.decode.rows`), into
    ``result``; refuses an output whose stored rows are not finite. Returns each output's row mask."""
    stored = verdict.stored
    masks: dict[str, np.ndarray] = {}
    for e, o in outs.pairs:
        computed = outs.sink.rows(outs.key[o.name])
        if o.hop is None:
            rows = stored
            if computed != stats.segments:
                raise ValueError(f"{e.spec} gave {computed} rows for {stats.segments} segments")
        else:
            rows = max(1, rows_before(stored * params.seg_len, o.hop, o.start))
        # the rows whose time this output's stream decoded (featpipe.decode.Verdict.row_mask)
        mask = masks[o.name] = verdict.row_mask(o.modality, rows, o.hop, o.start, available=computed)
        take = fill_plan(mask, computed, params.pad)
        dtype = outs.dtype[o.name]
        if outs.bad[o.name] and np.isin(take, outs.bad[o.name]).any():  # only rows the cache would store count
            raise ExtractorError(f"{e.spec} produced values that are not finite as {dtype}"
                                 + (" (past float16's range: use --dtype float32)" if dtype == np.float16 else ""))
        result.arrays[o.name] = outs.sink.stored(outs.key[o.name], take)  # the take is applied here or by the writer
        result.valid[o.name] = valid_end(mask)
        result.invalid[o.name] = invalid_runs(mask)
    return masks
