"""Chunks of aligned segments, and the honest count of the segments each stream delivered.

Segment k covers ``[k/fps, (k+1)/fps)``. A segment is *valid* for a stream when the stream
decoded at least half of it: the time the stream covered (video: the union of its frames'
display intervals; audio: the decoded samples, holes filled with silence left out) is measured
per segment (:func:`segment_mask`). For a stream without holes that starts at 0 this is the
prefix of the segments whose centre lies before its end (:func:`covered_segments`); a stream
that starts late or has holes marks the segments it missed. A stream that decodes less than
half of every segment keeps the segment it covered most. The
duration the container states is only a hint: decoding goes on while a stream delivers and
stops early when every stream has ended, and a stream that delivers less than
``DecodeParams.min_decoded`` of its stated duration, or whose share of undecodable packets
exceeds ``DecodeParams.max_bad_packets``, fails the video (:meth:`DecodeStats.verdict`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..contracts import AUDIO_RATE, Chunk, MediaNeeds
from .rows import valid_end
from .audio import AudioWindow, audio_blocks, audio_channels
from .packets import StreamTally
from .params import DecodeError, DecodeParams
from .streams import MediaInfo
from .video import MAX_JUMP, VideoSource, skip_window, use_seek

TAIL_KEEP = 0.5
"""A last partial segment is kept when at least this fraction of it was recorded (its centre is)."""


def covered_segments(seconds: float, fps: float) -> int:
    """Segments whose centre lies at or before ``seconds`` (at least half of each was recorded)."""
    return max(0, math.floor(seconds * fps + (1.0 - TAIL_KEEP) + 1e-9))


def segment_mask(spans: np.ndarray, fps: float, n: int | None = None) -> np.ndarray:
    """Per segment, whether ``spans`` (``(m, 2)`` covered ``[start, end)`` seconds, sorted and
    disjoint) cover at least :data:`TAIL_KEEP` of it; ``n`` segments (default: up to the last
    span's end). When no segment qualifies, the one covered most is valid (never none)."""
    spans = np.asarray(spans, np.float64).reshape(-1, 2) * fps  # in segment units
    if n is None:
        n = max(1, math.ceil(spans[-1, 1])) if spans.size else 1
    if not spans.size:
        return np.arange(n) == 0
    a, b = spans[:, 0], spans[:, 1]
    cum = np.concatenate([[0.0], np.cumsum(b - a)])
    edges = np.arange(n + 1, dtype=np.float64)
    j = np.searchsorted(a, edges, side="right")  # spans starting at or before each edge
    last = np.maximum(j - 1, 0)
    before = np.where(j > 0, cum[last] + np.clip(edges - a[last], 0.0, b[last] - a[last]), 0.0)
    per = np.diff(before)  # covered share of each segment
    mask = per + 1e-9 >= TAIL_KEEP
    if not mask.any() and per.max(initial=0.0) > 0:
        mask[int(np.argmax(per))] = True
    elif not mask.any():
        mask[0] = True
    return mask


def count_segments(duration: float, params: DecodeParams) -> tuple[int, int]:
    """``(stored, valid)`` segment counts for a recording of ``duration`` seconds.

    ``valid`` is :func:`covered_segments`, never fewer than one. ``stored`` equals ``valid``
    unless ``max_seconds`` fixes it, in which case longer videos are cut and shorter ones padded.
    """
    valid = max(1, covered_segments(duration, params.fps))
    stored = params.fixed_segments
    if stored is None:
        return valid, valid
    return stored, min(valid, stored)


def rows_before(seconds: float, hop: float, start: float = 0.0) -> int:
    """Rows of an output with its own ``hop`` whose centre ``start + i * hop`` lies before ``seconds``.

    The one rounding rule for such outputs, used for both their stored and their valid rows.
    """
    return max(0, math.ceil((seconds - start) / hop - 1e-9))


def merge_needs(needs: list[MediaNeeds]) -> MediaNeeds:
    """One decode serves every extractor: the union of positions and context, and every distinct
    frame request with the positions asked at it (``frame_sizes``; native first, then larger first),
    so each extractor receives frames at its own size (:meth:`Chunk.for_needs`)."""
    sizes: dict[int, set[float]] = {}
    for n in needs:
        for request, positions in n.requests().items():
            sizes.setdefault(request, set()).update(positions)
    order = sorted(sizes, key=lambda r: (r != 0, -r))
    return MediaNeeds(
        frame_positions=tuple(sorted({p for n in needs for p in n.frame_positions})),
        frame_short_side=max((n.frame_short_side for n in needs), default=0),
        native_frames=any(n.native_frames for n in needs),
        audio=any(n.audio for n in needs),
        audio_context=max((n.audio_context for n in needs), default=0.0),
        frame_sizes=tuple((r, tuple(sorted(sizes[r]))) for r in order),
        audio_copies=tuple(sorted({c for n in needs for c in n.audio_copies},
                                  key=lambda c: (c.rate, c.layout, c.sample_format))),
    )


@dataclass
class Verdict:
    """What may be committed: stored segments and, per modality, which of them are valid.

    ``valid[m]`` is the number of segments up to and including the last valid one (``data[:valid]``
    holds every decoded row), ``masks[m]`` the per-segment mask over the stored segments.
    """

    stored: int
    valid: dict[str, int]  # "visual" / "audio" -> segments up to the last valid one
    streams: dict[str, dict] = field(default_factory=dict)  # per stream: stated, decoded, bad packets...
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # "visual" / "audio" -> (stored,) bool
    seg_len: float = 1.0

    def record(self, info: MediaInfo) -> dict:
        """The facts a cache record keeps: stated and decoded durations, counts, media, streams."""
        return {"duration": info.duration,
                "decoded_duration": max((s["end"] for s in self.streams.values()), default=0.0),
                "segments": self.stored, "valid": max(self.valid.values(), default=0),
                "valid_by_modality": dict(self.valid),
                "decoded_segments": {m: int(k.sum()) for m, k in self.masks.items()},
                "bad_packets": sum(s["bad_packets"] for s in self.streams.values()),
                "media": info.facts(), "streams": self.streams}

    def row_mask(self, modality: str, rows: int, hop: float | None = None, start: float = 0.0,
                 available: int | None = None) -> np.ndarray:
        """Which of an output's ``rows`` its stream decoded (and were computed: ``available``).

        Rows on the segment timeline are their segments. A row of an output with its own ``hop``
        belongs to the segment its centre ``start + i * hop`` lies in, by :func:`rows_before`'s
        rounding (so for a stream without holes the valid rows are ``rows_before(valid / fps)``,
        the one rule for stored and valid rows). Outputs of no decoded stream are all valid.
        """
        seg = self.masks.get(modality)
        if seg is None:
            mask = np.ones(rows, bool)
        elif hop is None:
            mask = np.zeros(rows, bool)
            mask[:min(rows, seg.shape[0])] = seg[:rows]
        else:
            edges = np.array([rows_before(k * self.seg_len, hop, start) for k in range(seg.shape[0] + 1)])
            per = np.repeat(seg, np.diff(edges))  # rows whose centre lies in segment k take its validity
            per = np.concatenate([np.full(edges[0], seg[0] if seg.size else False), per])  # centres before 0
            mask = np.zeros(rows, bool)
            mask[:min(rows, per.shape[0])] = per[:rows]
        if available is not None:
            mask[available:] = False
        return mask


@dataclass
class DecodeStats:
    """Filled by :func:`iter_chunks` while it decodes; read once the last chunk was consumed."""

    video: StreamTally | None = None
    audio: StreamTally | None = None
    segments: int = 0  # segments handed out in chunks

    def tallies(self) -> list[StreamTally]:
        return [t for t in (self.video, self.audio) if t is not None]

    def verdict(self, params: DecodeParams) -> Verdict:
        """The honest masks; :class:`DecodeError` when a stream delivered too little or too badly."""
        masks: dict[str, np.ndarray] = {}
        horizon = params.max_seconds
        for t in self.tallies():
            stopped = f"; the demuxer stopped: {t.demux_error}" if t.demux_error else ""
            if t.start is None:
                raise DecodeError(f"the {t.kind} stream decoded nothing ({t.packets} packets, "
                                  f"{t.bad} undecodable){stopped}")
            if t.bad_share > params.max_bad_packets:
                raise DecodeError(f"{t.bad} of {t.packets} {t.kind} packets could not be decoded "
                                  f"({t.bad_share:.1%}, more than the {params.max_bad_packets:.1%} "
                                  "allowed by --max-bad-packets)")
            wanted = min(t.stated, horizon) if horizon else t.stated
            if wanted > 0 and t.decoded < params.min_decoded * wanted:
                raise DecodeError(f"the {t.kind} stream decoded {t.decoded:.2f} s of the {t.stated:.2f} s "
                                  f"the file states (under {params.min_decoded:.0%}, see --min-decoded){stopped}")
            mask = segment_mask(t.covered.array(), params.fps)
            if self.segments:  # only segments handed out were computed (a stream under half a segment late on)
                mask = mask[:self.segments]
            masks["visual" if t.kind == "video" else "audio"] = mask[:valid_end(mask)]
        ends = [m.shape[0] for m in masks.values()]
        stored = params.fixed_segments or max(1, max(ends, default=self.segments))
        masks = {k: np.pad(m[:stored], (0, max(0, stored - m.shape[0]))) for k, m in masks.items()}
        return Verdict(stored, {k: valid_end(m) for k, m in masks.items()},
                       {t.kind: t.as_dict() for t in self.tallies()}, masks, params.seg_len)


LATE_SLACK = 2 * MAX_JUMP
"""Seconds past the stated end (or ``max_seconds``) a stream may still deliver: frames later than
``MAX_JUMP`` past the stated duration are dropped as corrupt, and the last frame may run on."""


def hopeless(tally: StreamTally, source: VideoSource | AudioWindow, params: DecodeParams, duration: float) -> None:
    """Stop as soon as a stream can no longer decode ``min_decoded`` of what it states.

    What it decoded so far plus all the time still ahead of where reading stands (up to the
    stated end, or ``max_seconds``, plus :data:`LATE_SLACK`) is the most it can reach; under the
    share, :meth:`DecodeStats.verdict` would fail it anyway, so the rest (an hour of nothing
    between two frames) is never chunked through. Raises :class:`DecodeError` naming the share.
    """
    horizon = params.max_seconds
    wanted = min(tally.stated, horizon) if horizon else tally.stated
    if wanted <= 0 or not params.min_decoded:
        return
    read = source.read_to
    end = min(duration, horizon) if horizon else duration
    most = getattr(source, "upper_decoded", tally.decoded) + max(0.0, end + LATE_SLACK - read)
    if most < params.min_decoded * wanted:
        raise DecodeError(f"the {tally.kind} stream decoded {tally.decoded:.2f} s of the {tally.stated:.2f} s the "
                          f"file states before reading reached {read:.2f} s: it can no longer reach "
                          f"{params.min_decoded:.0%} (see --min-decoded); decoding stopped there")


def iter_chunks(info: MediaInfo, needs: MediaNeeds, params: DecodeParams, video_id: str,
                n_segments: int, stats: DecodeStats | None = None) -> Iterator[Chunk]:
    """Decode ``info.path`` once into chunks of consecutive segments from segment 0.

    ``n_segments`` (the count the stated duration gives) sets the chunking only: chunks go on
    while a stream still delivers and stop once every stream has ended and the segments they
    cover were handed out, and never go past ``max_seconds``. Segments past the end of a stream
    repeat its last frame and carry silent audio. What each stream delivered is kept in
    ``stats`` (:meth:`DecodeStats.verdict` turns it into valid counts). With several frame
    requests (merged needs) the frames are in ``Chunk.sized``; :meth:`Chunk.for_needs` picks one.
    """
    if needs.video and not info.has_video:
        raise DecodeError(info.video_note or "the file has no video stream (a visual extractor needs one)")
    if needs.audio and not info.has_audio:
        raise DecodeError(info.audio_note or "the file has no audio stream (an audio extractor needs one)")
    stats = stats if stats is not None else DecodeStats()
    seg, positions, ctx = params.seg_len, needs.frame_positions, needs.audio_context
    limit = params.fixed_segments
    requests = needs.requests()  # frame request -> positions decoded at it
    wanted = {p: tuple(r for r, ps in requests.items() if p in ps) for p in positions}
    video = audio = None
    try:
        if needs.video:
            stats.video = StreamTally("video", info.video_stated)
            video = VideoSource(info, requests, use_seek(info, needs, params), stats.video,
                                skip_window(info, needs, params, TAIL_KEEP), bridge=seg)
        if needs.audio:
            stats.audio = StreamTally("audio", info.audio_stated)
            copies = needs.audio_copies
            audio = AudioWindow(audio_blocks(info, stats.audio, copies), [audio_channels(info), *(c.channels for c in copies)])
        first = 0
        while True:
            count = min(params.chunk_segments, n_segments - first) if first < n_segments else params.chunk_segments
            if limit is not None:
                count = min(count, limit - first)
            chunk = Chunk(video_id=video_id, first=first, count=count, seg_len=seg,
                          duration=info.duration, audio_context=ctx)
            if video is not None:
                per = [[video.frames_at((k + p) * seg, wanted[p]) for p in positions]
                       for k in range(first, first + count)]
                chunk.sized = {r: {p: np.stack([row[i][r] for row in per]) for i, p in enumerate(positions) if p in ps}
                               for r, ps in requests.items()}
                if len(chunk.sized) == 1:  # one request: the chunk is what its extractor receives
                    (chunk.frames,) = chunk.sized.values()
                    chunk.sized = {}
            if audio is not None:
                start = round((first * seg - ctx) * AUDIO_RATE)
                stop = round(((first + count) * seg + ctx) * AUDIO_RATE)
                chunk.audio = audio.window(start, stop)
                for i, cp in enumerate(needs.audio_copies, 1):
                    chunk.audio_copies[cp] = audio.window(round((first * seg - ctx) * cp.rate),
                                                          round(((first + count) * seg + ctx) * cp.rate), i)
            first += count
            stats.segments = first
            yield chunk
            if limit is not None and first >= limit:
                break
            if video is None and audio is None:  # nothing decoded: the stated duration is all there is
                if first >= n_segments:
                    break
                continue
            edge = (first + TAIL_KEEP) * seg  # segment `first` is valid for a stream lasting to here
            if not ((video is not None and video.covers(edge, (first + positions[0]) * seg)) or (audio is not None and audio.covers(edge, stats.audio))):
                break
            for tally, source in ((stats.video, video), (stats.audio, audio)):
                if source is not None:
                    hopeless(tally, source, params, info.duration)
    finally:
        for s in (video, audio):
            if s is not None:
                s.close()
