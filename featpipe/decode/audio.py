"""Audio on the true timeline: 48 kHz float32 blocks placed by each frame's timestamp.

Every decoded frame is placed where its timestamp says, not where the previous one ended: a
hole between frames (a skipped packet, a gap in the stream) is filled with silence and counted,
an overlap is trimmed and counted. The decoded samples' spans are the stream's covered time
(``StreamTally.covered``): silence put in for a hole or a late start is not covered. Timestamps that jump far past anything the file states, or
more than a second back, are corrupt: such frames are dropped and counted as bad. Channels are
kept (mono stays mono, two or more become stereo).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import av
import numpy as np

from ..contracts import AUDIO_RATE
from .packets import StreamTally, decoded_frames, media_errors
from .streams import MediaInfo, open_media
from .video import MAX_JUMP

TOLERANCE = 0.005
"""Seconds a frame may start off the previous frame's end before it counts as a gap or overlap."""
MAX_BACK = 1.0
"""Seconds a timestamp may go back before the frame counts as corrupt rather than overlapping."""


def audio_channels(info: MediaInfo) -> int:
    return 2 if info.audio_channels >= 2 else 1


def audio_blocks(info: MediaInfo, tally: StreamTally) -> Iterator[np.ndarray | int]:
    """``(channels, n)`` blocks from the media start (time 0) on; where nothing decoded, the
    number of silent samples (an ``int``) instead of an array, whatever the gap's length."""
    channels = audio_channels(info)
    layout = "stereo" if channels == 2 else "mono"
    c = open_media(info.path)
    state = {"position": 0, "drop": 0}  # samples emitted on the 48 kHz timeline; samples still to drop

    def emit(out) -> Iterator[np.ndarray]:
        block = out.to_ndarray().astype(np.float32, copy=False).reshape(channels, -1)
        drop = min(state["drop"], block.shape[1])
        if drop:
            block, state["drop"] = block[:, drop:], state["drop"] - drop
        if block.shape[1]:
            tally.covered.add(state["position"] / AUDIO_RATE, (state["position"] + block.shape[1]) / AUDIO_RATE)
            state["position"] += block.shape[1]
            tally.end = state["position"] / AUDIO_RATE
            yield block

    def silence(n: int) -> Iterator[int]:
        state["position"] += n
        yield n  # a count, not zeros: an hour's gap costs nothing until a window asks for it

    def place(target: int, first: bool) -> Iterator[np.ndarray | int]:
        """Move the timeline to sample ``target``: silence up to it, or drop what overlaps it."""
        if target > state["position"]:
            if not first:
                tally.gaps += 1
                tally.gap_seconds += (target - state["position"]) / AUDIO_RATE
            yield from silence(target - state["position"])
        elif target < state["position"]:
            state["drop"] = state["position"] - target
            if not first:
                tally.overlap_seconds += state["drop"] / AUDIO_RATE

    try:
        stream = c.streams[info.audio_index]
        resampler, setup, expected, last = None, None, None, None
        limit = max(info.duration, 0.0) + MAX_JUMP
        with media_errors("the audio stream could not be decoded"):
            for frame in decoded_frames(c, stream, tally):
                if not frame.samples or not frame.sample_rate:
                    continue
                t = frame.time - info.start_time if frame.time is not None else (expected or 0.0)
                if t > limit or (expected is not None and t < expected - MAX_BACK):
                    tally.bad += 1
                    continue
                this = (frame.format.name, frame.layout.name, frame.sample_rate)
                jump = expected is None or abs(t - expected) > TOLERANCE
                if resampler is not None and (jump or this != setup):
                    for out in resampler.resample(None):  # flush what belongs before the jump
                        yield from emit(out)
                    resampler = None
                if jump and expected is None:
                    yield from place(round(t * AUDIO_RATE), True)
                    tally.start = max(t, 0.0)
                elif jump:  # relative to where the timeline is, so rounding never accumulates
                    yield from place(state["position"] + round(_snap(t - expected, last, stream) * AUDIO_RATE), False)
                if resampler is None:
                    resampler, setup = av.AudioResampler(format="fltp", layout=layout, rate=AUDIO_RATE), this
                try:
                    outs = resampler.resample(frame)
                except (av.error.FFmpegError, ValueError):  # a damaged frame (21 channels, say): skip it
                    tally.bad += 1
                    resampler = None
                    continue
                for out in outs:
                    yield from emit(out)
                expected, last = t + frame.samples / frame.sample_rate, frame
            if resampler is not None:
                for out in resampler.resample(None):
                    yield from emit(out)
    finally:
        c.close()


def _snap(jump: float, last, stream) -> float:
    """A jump of whole frames of the previous size, when timestamps are too coarse to say otherwise.

    Matroska stamps milliseconds: a lost 1024-sample frame reads as 23 or 24 ms, not 23.22. When
    the jump is within one tick of a whole number of frames, that number is the true one.
    """
    tick = float(stream.time_base) if stream.time_base else 0.0
    size = last.samples / last.sample_rate
    frames = round(jump / size)
    if frames and abs(jump - frames * size) <= tick + 1e-6:
        return frames * size
    return jump


class AudioWindow:
    """A sliding buffer over the audio blocks: hands out any later window, zero-padded.

    Silence is held as a count of samples (``audio_blocks`` yields an ``int`` for a gap), so
    reading ahead through a gap of any length (two frames an hour apart) holds only the decoded
    blocks around it: memory is bounded by a window plus one decoded block, whatever the
    timestamps say.
    """

    def __init__(self, blocks: Iterator[np.ndarray | int], channels: int) -> None:
        self.blocks = blocks
        self.channels = channels
        self.pieces: deque[tuple[int, np.ndarray | int]] = deque()  # (first sample, block or silent count)
        self.offset = 0  # sample index where the first piece starts
        self.end = 0  # sample index after the last piece
        self.done = False

    def _pull(self) -> bool:
        try:
            block = next(self.blocks)
        except StopIteration:
            self.done = True
            return False
        n = block if isinstance(block, int) else block.shape[1]
        if n:
            self.pieces.append((self.end, block))
            self.end += n
        return True

    def window(self, start: int, stop: int) -> np.ndarray:
        while not self.done and self.end < stop:
            self._pull()
        out = np.zeros((self.channels, stop - start), np.float32)
        for first, block in self.pieces:
            if first >= stop:
                break
            if isinstance(block, int):
                continue  # silence: out is zeros already
            lo, hi = max(start, first), min(stop, first + block.shape[1])
            if hi > lo:
                out[:, lo - start:hi - start] = block[:, lo - first:hi - first]
        while self.pieces:  # windows only move forward: let go of what ends before this one starts
            first, block = self.pieces[0]
            n = block if isinstance(block, int) else block.shape[1]
            if first + n > start:
                break
            self.pieces.popleft()
            self.offset = first + n
        return out

    def covers(self, t: float, tally: StreamTally) -> bool:
        """Whether decoded audio lasts to ``t`` seconds or later (reads ahead as needed; a gap
        read through is held as a count)."""
        while tally.end < t and not self.done:
            self._pull()
        return tally.end >= t

    @property
    def read_to(self) -> float:
        """Seconds of the timeline read so far: nothing decoded later can land before it."""
        return self.end / AUDIO_RATE

    def close(self) -> None:
        close = getattr(self.blocks, "close", None)
        if close is not None:
            close()
