"""Video frames at target times, upright, on the true timeline.

Frames are placed by their timestamps (never by counting), so frames lost to a skipped packet
leave the previous frame on screen and everything after stays where it belongs. Each frame kept
is converted once per frame request of the run (native display size, or a short side) in one
swscale step from the decoded frame (sample aspect ratio applied), then turned by the display
matrix, before any extractor sees it (a free angle, no multiple of 90 degrees, is turned at the
displayed size and then scaled). Every frame's display interval is added to the stream's covered
time (``StreamTally.covered``), from which the per-segment validity masks come. Frames with impossible timestamps (a jump far past anything the
file states, or back in time) are dropped and counted as bad.

Frames are taken either by decoding in order (sequential) or by seeking to each target when
keyframes are at least as dense as the targets (:func:`use_seek`); either way the decoder skips
non-reference frames far from every target (:class:`SkipWindow`), which never changes a
sampled frame. ``bench/bench_decode.py`` measures the strategies (docs/performance.md).
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import av
import numpy as np

from ..contracts import MediaNeeds
from .packets import Coverage, StreamTally, decoded_frames, media_errors
from .params import DecodeError, DecodeParams
from .streams import MediaInfo, open_media

MAX_JUMP = 30.0
"""Seconds a timestamp may jump ahead (beyond the stated duration) before it counts as corrupt."""

TAIL_FRAMES = 3
"""Frames before the stated end that are always decoded (so the decoded end is exact)."""

JOIN_FRAMES = 2
"""Frame periods a gap between two decoded frames may last and still be no hole in the covered time
(a dropped frame, a variable frame rate, a frame without a stated duration)."""


def decoder_threads() -> int:
    """FFmpeg threads for a video decoder: 0 (FFmpeg's choice, frame threads on every core) unless
    this process's compute budget is one thread (``OMP_NUM_THREADS=1``: a local featpipe worker per
    core, whose decoding runs beside its model in the prefetch thread). There the frame threads
    only compete with the other workers for the same cores: decoding a 60 s 640x360 x264 clip
    costs 0.84 CPU-s with them and 0.70 on one thread (bench/results/2026-12-07-speed.md)."""
    return 1 if os.environ.get("OMP_NUM_THREADS", "").strip() == "1" else 0


INTERPOLATION = "BILINEAR"
"""swscale's filter for every size change (PyAV's default, so stored values are unchanged). When
downscaling, swscale widens the bilinear kernel to the scale ratio, so every source pixel is
averaged in (no aliasing; on the test clips it gives the same bytes as ``AREA``)."""


def frame_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Scale so the short side is ``short_side`` (never up); 0 keeps the native size."""
    short = min(width, height)
    if short_side <= 0 or short <= short_side:
        return width, height
    scale = short_side / short
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass(frozen=True)
class SkipWindow:
    """When the decoder may skip non-reference frames (``skip_frame="NONREF"``) without changing
    a sampled frame.

    A frame must be decoded when it could be on screen at a *protected* time: a target
    ``(k + p) * seg_len`` for a position ``p`` asked for, or a validity edge ``(k + TAIL_KEEP) *
    seg_len`` (so the valid counts stay those of decoding every frame). A packet shown at ``t`` for
    ``dur`` seconds is decoded normally when a protected time lies in ``[t - period/2, t + dur +
    period/2]`` (its own display interval widened by half a frame period each side, for
    timestamp rounding), and from ``tail`` on (the last frames of the stated duration, so the decoded end of a
    well-formed file is exact); elsewhere its non-reference frames are skipped. Reference frames are always decoded,
    so every decoded frame is the one decoding everything gives, and the frame on screen at each
    target is the same one: at most one frame period before its target.
    """

    seg_len: float
    positions: tuple[float, ...]  # protected positions inside a segment (targets and TAIL_KEEP)
    period: float
    tail: float = math.inf  # from here on nothing is skipped

    def needed(self, t: float, dur: float) -> bool:
        """Whether a frame shown at ``t`` for ``dur`` seconds must be decoded."""
        lo, hi = t - self.period / 2, t + max(dur, self.period) + self.period / 2
        if t >= self.tail or hi - lo >= self.seg_len:
            return True
        k = math.floor(lo / self.seg_len)
        return any(lo <= (j + p) * self.seg_len <= hi for j in (k, k + 1) for p in self.positions)


def skip_window(info: MediaInfo, needs: MediaNeeds, params: DecodeParams, edge: float) -> SkipWindow | None:
    """The skip window for this stream (None: decode every frame: ``DecodeParams.skip="never"``, or
    no timestamps to place packets by)."""
    if params.skip == "never" or info.frame_rate <= 0:
        return None
    period = 1.0 / info.frame_rate
    tail = max(0.0, min(info.duration, info.video_stated or info.duration) - TAIL_FRAMES * period)
    return SkipWindow(params.seg_len, tuple(sorted({*needs.frame_positions, edge})), period, tail)


def use_seek(info: MediaInfo, needs: MediaNeeds, params: DecodeParams) -> bool:
    """Seek per target only when keyframes are at least as dense as the targets."""
    if params.seek != "auto":
        return params.seek == "always"
    if len(needs.frame_positions) != 1 or info.keyframe_spacing is None:
        return False
    return info.keyframe_spacing <= params.seg_len * 1.01


class VideoSource:
    """The displayed RGB frame on screen at each target time (seconds from the media start), at
    every frame request asked for (0: native display size, else a short side).

    Each kept frame is converted once per request, in one swscale step from the decoded frame
    (sample aspect ratio included, :data:`INTERPOLATION`), then turned upright; frames no target
    keeps are never converted.
    """

    def __init__(self, info: MediaInfo, requests: Iterable[int], seek: bool, tally: StreamTally,
                 skip: SkipWindow | None = None, bridge: float = 1.0) -> None:
        self.info, self.seek, self.tally, self.skip = info, seek, tally, skip
        self.bridge = bridge  # seek mode: the longest unread span between two reads taken as covered
        self.decoded = 0  # frames the decoder delivered (skipped non-reference frames are not)
        self.skipping = False
        self.sizes = {r: self._stored_size(r) for r in requests}
        self.c = open_media(info.path)
        self.stream = self.c.streams[info.video_index]
        if decoder_threads() == 1:
            self.stream.codec_context.thread_count = 1
        else:
            self.stream.thread_type = "AUTO"
        self.tb = float(self.stream.time_base or 0)
        self.period = 1.0 / info.frame_rate if info.frame_rate > 0 else 0.04
        tally.covered.join = JOIN_FRAMES * self.period
        self.skipped = Coverage(join=self.period / 4)  # packets the decoder was let skip (see _accepted)
        self.read_end: float | None = None  # end of the last frame decoded (where a seek leaves reading)
        self.prev_start = 0.0  # start of the last frame decoded
        self.limit = max(info.duration, 0.0) + MAX_JUMP
        self.frames: Iterator | None = None
        self.prev = None  # (t, frame) on screen at the last target
        self.ahead: deque = deque()  # (t, frame) decoded, not yet on screen
        self.rgb: dict[int, np.ndarray] = {}  # conversions of self.prev, by request
        self.upright: np.ndarray | None = None  # self.prev at its displayed size, turned by a free angle
        self.exhausted = False
        self.last_target: float | None = None  # seek mode: the last target a seek found frames after

    def _stored_size(self, request: int) -> tuple[int, int]:
        dw, dh = frame_size(self.info.display_width, self.info.display_height, request)
        return (dh, dw) if self.info.orientation.transpose else (dw, dh)  # before turning

    def close(self) -> None:
        self.tally.covered.fill(self.skipped)
        self.c.close()

    @property
    def shown_time(self) -> float | None:
        """Time of the frame on screen at the last target (None before the first)."""
        return self.prev[0] if self.prev is not None else None

    def _timed(self, after_seek: bool = False) -> Iterator[tuple[float, object]]:
        """Decoded frames with times from the media start; impossible times dropped and counted.

        After a seek, the span between where reading stopped and the first frame decoded from
        the new position was never read; it counts as covered when shorter than ``bridge`` (one
        segment: seeking is chosen only when keyframes are at least that dense), so a hole is seen
        when a read passes through it, i.e. when it holds a target or a validity edge.
        """
        last = None
        mark = self.read_end if after_seek else None
        before = self._before if self.skip is not None and self.tb > 0 else None
        accepted = self._accepted if before is not None else None
        for frame in decoded_frames(self.c, self.stream, self.tally, before, accepted):
            self.decoded += 1
            t = frame.time
            t = (last + self.period if last is not None else 0.0) if t is None else t - self.info.start_time
            if t > self.limit or (last is not None and t < last - 1e-3 and not self.seek):
                self.tally.bad += 1
                continue
            last = t
            dur = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.0
            if mark is not None:
                if mark < t <= mark + self.bridge:
                    self.tally.covered.add(mark, t)
                mark = None
            self._seen(t, dur if 0 < dur <= 1.0 else self.period)
            yield t, frame

    def _before(self, packet) -> None:
        """Skip non-reference frames in this packet when no protected time is near it.

        Never after a packet failed to decode: from there on frames may be missing (a lost
        reference), so only decoded frames say what the stream covered."""
        if packet.pts is None or not packet.size or self.tally.bad:
            skip = False
        else:  # float time base: Fraction arithmetic per packet would cost more than it saves
            t = packet.pts * self.tb - self.info.start_time
            skip = not self.skip.needed(t, (packet.duration or 0) * self.tb)
        if skip != self.skipping:
            self.stream.codec_context.skip_frame = "NONREF" if skip else "DEFAULT"
            self.skipping = skip

    def _accepted(self, packet) -> None:
        """A packet the decoder took while skipping non-reference frames: its time may count as
        delivered. It does where such packets fill a gap between decoded frames whole (the frames
        decoding everything gives there); a stretch where the decoder took packets but gave no
        frame (a broken reference) stays a hole (:meth:`close` folds them in)."""
        if self.skipping and packet.pts is not None and packet.size:
            t = packet.pts * self.tb - self.info.start_time
            dur = (packet.duration or 0) * self.tb
            self.skipped.add(t, t + (dur if 0 < dur <= 1.0 else self.period))

    @property
    def read_to(self) -> float:
        """Seconds of the timeline read so far in order: no frame decoded later lands before it
        (0 in seek mode, where reads jump around)."""
        return 0.0 if self.seek or self.read_end is None else self.prev_start

    @property
    def upper_decoded(self) -> float:
        """The most the covered time can still grow to before :data:`read_to`: holes that
        skipped packets may fill at :meth:`close`."""
        return self.tally.decoded + self.skipped.total

    def _seen(self, t: float, dur: float) -> None:
        self.prev_start = t
        tally = self.tally
        tally.start = t if tally.start is None else min(tally.start, t)
        tally.end = max(tally.end, t + dur)
        tally.covered.add(t, t + dur)
        self.read_end = t + dur

    def _show(self, item) -> None:
        self.prev, self.rgb, self.upright = item, {}, None

    def _convert(self, frame, request: int) -> np.ndarray:
        orientation = self.info.orientation
        with media_errors("a video frame could not be converted"):
            w, h = self.sizes[request]
            if orientation.angle:  # a free turn: at the displayed size first, then scaled, as players show it
                if self.upright is None:
                    dw, dh = self.info.display_width, self.info.display_height
                    self.upright = orientation.apply(frame.reformat(width=dw, height=dh, format="rgb24",
                                                                    interpolation=INTERPOLATION).to_ndarray())
                if self.upright.shape[:2] == (h, w):
                    return self.upright
                return av.VideoFrame.from_ndarray(self.upright, format="rgb24").reformat(
                    width=w, height=h, interpolation=INTERPOLATION).to_ndarray()
            img = frame.reformat(width=w, height=h, format="rgb24", interpolation=INTERPOLATION).to_ndarray()
        return orientation.apply(img)

    def _next(self):
        if self.frames is None:
            self.frames = self._timed()
        with media_errors("the video stream could not be decoded"):
            try:
                return next(self.frames)
            except StopIteration:
                self.exhausted = True
                return None

    def frames_at(self, target: float, requests: Iterable[int]) -> dict[int, np.ndarray]:
        """The frame on screen at ``target``, at each of ``requests`` (each converted once per frame)."""
        if self.seek:
            self._seek_to(target)
        else:
            self._advance(target)
        if self.prev is None:
            raise DecodeError("the video stream has no decodable frame")
        for r in requests:
            if r not in self.rgb:
                self.rgb[r] = self._convert(self.prev[1], r)
        return {r: self.rgb[r] for r in requests}

    def _advance(self, target: float) -> None:
        while True:  # advance until the next frame would be shown after the target
            if not self.ahead and (self.exhausted or not self._pull()):
                break
            if self.ahead[0][0] > target + 1e-6 and self.prev is not None:
                break
            self._show(self.ahead.popleft())

    def _pull(self) -> bool:
        item = self._next()
        if item is not None:
            self.ahead.append(item)
        return item is not None

    def _seek_to(self, target: float) -> None:
        with media_errors("the video stream could not be decoded"):
            if self.read_end is None:  # the first target: read from the start, so the time before it is seen
                self.frames = self._timed()
            else:
                pts = int((target + self.info.start_time) / self.stream.time_base)
                self.c.seek(max(pts, 0), stream=self.stream, backward=True, any_frame=False)
                self.frames = self._timed(after_seek=True)
            found, after = None, False
            for item in self.frames:
                if item[0] > target + 1e-6 and found is not None:
                    after = True
                    break
                found = item
        if not after and self.last_target is not None:
            # the stream ends before this target (or a damaged index points past the data): read
            # the rest in order from the last target that worked, so the true end is seen
            self.seek, self.ahead = False, deque()
            self._show(None)
            with media_errors("the video stream could not be decoded"):
                pts = int((self.last_target + self.info.start_time) / self.stream.time_base)
                self.c.seek(max(pts, 0), stream=self.stream, backward=True, any_frame=False)
            self.frames = self._timed(after_seek=True)
            self._advance(target)
            return
        if not after:
            self.exhausted = True  # no frame after the very first target: the stream ends before it
        self.last_target = target
        if found is not None:
            self._show(found)  # else the frame shown at the last target stays on screen

    def covers(self, t: float, next_target: float) -> bool:
        """Whether the stream delivers frames lasting to ``t`` or later (decodes ahead as needed).

        Frames read ahead that an earlier frame's successor hides by ``next_target`` are let go
        at once (as :meth:`frames_at` would), so reading ahead never holds more than it must.
        """
        if self.seek and self.tally.end < t:
            with media_errors("the video stream could not be decoded"):
                self.c.seek(max(int((t + self.info.start_time) / self.stream.time_base), 0), stream=self.stream,
                            backward=True, any_frame=False)
                for _ in self._timed(after_seek=True):  # _timed moves tally.end
                    if self.tally.end >= t:
                        break
            return self.tally.end >= t
        while self.tally.end < t and not self.exhausted:
            self._pull()
            while len(self.ahead) >= 2 and self.ahead[1][0] <= next_target + 1e-6:
                self._show(self.ahead.popleft())
        return self.tally.end >= t
