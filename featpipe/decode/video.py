"""Video frames at target times, upright, on the true timeline.

Frames are placed by their timestamps (never by counting), so frames lost to a skipped packet
leave the previous frame on screen and everything after stays where it belongs. Each frame is
scaled to the displayed size (sample aspect ratio applied) and turned by the display matrix
before any extractor sees it. Frames with impossible timestamps (a jump far past anything the
file states, or back in time) are dropped and counted as bad.

Frames are taken either by decoding every frame (sequential) or by seeking to each target when
keyframes are at least as dense as the targets (:func:`use_seek`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import av
import numpy as np

from ..contracts import MediaNeeds
from .packets import StreamTally, decoded_frames, media_errors
from .params import DecodeError, DecodeParams
from .streams import MediaInfo, open_media

MAX_JUMP = 30.0
"""Seconds a timestamp may jump ahead (beyond the stated duration) before it counts as corrupt."""


def frame_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Scale so the short side is ``short_side`` (never up); 0 keeps the native size."""
    short = min(width, height)
    if short_side <= 0 or short <= short_side:
        return width, height
    scale = short_side / short
    return max(1, round(width * scale)), max(1, round(height * scale))


def use_seek(info: MediaInfo, needs: MediaNeeds, params: DecodeParams) -> bool:
    """Seek per target only when keyframes are at least as dense as the targets."""
    if params.seek != "auto":
        return params.seek == "always"
    if len(needs.frame_positions) != 1 or info.keyframe_spacing is None:
        return False
    return info.keyframe_spacing <= params.seg_len * 1.01


class VideoSource:
    """The displayed RGB frame on screen at each target time (seconds from the media start)."""

    def __init__(self, info: MediaInfo, short_side: int, seek: bool, tally: StreamTally) -> None:
        self.info, self.seek, self.tally = info, seek, tally
        dw, dh = frame_size(info.display_width, info.display_height, short_side)
        self.size = (dh, dw) if info.orientation.transpose else (dw, dh)  # before turning
        self.c = open_media(info.path)
        self.stream = self.c.streams[info.video_index]
        self.stream.thread_type = "AUTO"
        self.period = 1.0 / info.frame_rate if info.frame_rate > 0 else 0.04
        self.limit = max(info.duration, 0.0) + MAX_JUMP
        self.frames: Iterator | None = None
        self.prev = None  # (t, frame) on screen at the last target
        self.ahead: deque = deque()  # (t, frame) decoded, not yet on screen
        self.prev_rgb: np.ndarray | None = None
        self.exhausted = False
        self.last_target: float | None = None  # seek mode: the last target a seek found frames after

    def close(self) -> None:
        self.c.close()

    def _timed(self) -> Iterator[tuple[float, object]]:
        """Decoded frames with times from the media start; impossible times dropped and counted."""
        last = None
        for frame in decoded_frames(self.c, self.stream, self.tally):
            t = frame.time
            t = (last + self.period if last is not None else 0.0) if t is None else t - self.info.start_time
            if t > self.limit or (last is not None and t < last - 1e-3 and not self.seek):
                self.tally.bad += 1
                continue
            last = t
            dur = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.0
            self._seen(t, dur if 0 < dur <= 1.0 else self.period)
            yield t, frame

    def _seen(self, t: float, dur: float) -> None:
        tally = self.tally
        tally.start = t if tally.start is None else min(tally.start, t)
        tally.end = max(tally.end, t + dur)

    def _rgb(self, frame) -> np.ndarray:
        with media_errors("a video frame could not be converted"):
            w, h = self.size
            img = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
        return self.info.orientation.apply(img)

    def _next(self):
        if self.frames is None:
            self.frames = self._timed()
        with media_errors("the video stream could not be decoded"):
            try:
                return next(self.frames)
            except StopIteration:
                self.exhausted = True
                return None

    def frame_at(self, target: float) -> np.ndarray:
        if self.seek:
            return self._seek_to(target)
        while True:  # advance until the next frame would be shown after the target
            if not self.ahead and (self.exhausted or not self._pull()):
                break
            if self.ahead[0][0] > target + 1e-6 and self.prev is not None:
                break
            self.prev, self.prev_rgb = self.ahead.popleft(), None
        if self.prev is None:
            raise DecodeError("the video stream has no decodable frame")
        if self.prev_rgb is None:
            self.prev_rgb = self._rgb(self.prev[1])
        return self.prev_rgb

    def _pull(self) -> bool:
        item = self._next()
        if item is not None:
            self.ahead.append(item)
        return item is not None

    def _seek_to(self, target: float) -> np.ndarray:
        with media_errors("the video stream could not be decoded"):
            pts = int((target + self.info.start_time) / self.stream.time_base)
            self.c.seek(max(pts, 0), stream=self.stream, backward=True, any_frame=False)
            self.frames = self._timed()
            prev, after = None, False
            for t, frame in self.frames:
                if t > target + 1e-6 and prev is not None:
                    after = True
                    break
                prev = frame
        if not after and self.last_target is not None:
            # the stream ends before this target (or a damaged index points past the data): read
            # the rest in order from the last target that worked, so the true end is seen
            self.seek, self.ahead, self.prev, self.prev_rgb = False, deque(), None, None
            with media_errors("the video stream could not be decoded"):
                pts = int((self.last_target + self.info.start_time) / self.stream.time_base)
                self.c.seek(max(pts, 0), stream=self.stream, backward=True, any_frame=False)
            self.frames = self._timed()
            return self.frame_at(target)
        if not after:
            self.exhausted = True  # no frame after the very first target: the stream ends before it
        self.last_target = target
        if prev is None:
            if self.prev_rgb is None:
                raise DecodeError("the video stream has no decodable frame")
            return self.prev_rgb
        self.prev_rgb = self._rgb(prev)
        return self.prev_rgb

    def covers(self, t: float, next_target: float) -> bool:
        """Whether the stream delivers frames lasting to ``t`` or later (decodes ahead as needed).

        Frames read ahead that an earlier frame's successor hides by ``next_target`` are let go
        at once (as :meth:`frame_at` would), so reading ahead never holds more than it must.
        """
        if self.seek and self.tally.end < t:
            with media_errors("the video stream could not be decoded"):
                self.c.seek(max(int((t + self.info.start_time) / self.stream.time_base), 0), stream=self.stream,
                            backward=True, any_frame=False)
                for _ in self._timed():  # _timed moves tally.end
                    if self.tally.end >= t:
                        break
            return self.tally.end >= t
        while self.tally.end < t and not self.exhausted:
            self._pull()
            while len(self.ahead) >= 2 and self.ahead[1][0] <= next_target + 1e-6:
                self.prev, self.prev_rgb = self.ahead.popleft(), None
        return self.tally.end >= t
