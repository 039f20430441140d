"""Audio on the true timeline: 48 kHz float32 blocks placed by each frame's timestamp.

Every decoded frame is placed where its timestamp says, not where the previous one ended: a
hole between frames (a skipped packet, a gap in the stream) is filled with silence and counted,
an overlap is trimmed and counted. The decoded samples' spans are the stream's covered time
(``StreamTally.covered``): silence put in for a hole or a late start is not covered. Timestamps that jump far past anything the file states, or
more than a second back, are corrupt: such frames are dropped and counted as bad. Channels are
kept (mono stays mono, two or more become stereo). Copies an extractor asks for
(:class:`~featpipe.contracts.AudioCopy`: another rate, layout and sample format, made by FFmpeg's
resampler from the same source frames, as the ``ffmpeg`` command line makes them) come from the
same decode, each with its own resampler, placed by the same timestamps.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import av
import numpy as np

from ..contracts import AUDIO_RATE, AudioCopy
from .packets import StreamTally, decoded_frames, media_errors
from .streams import MediaInfo, open_media
from .video import MAX_JUMP

TOLERANCE = 0.005
"""Seconds a frame may start off the previous frame's end before it counts as a gap or overlap."""
MAX_BACK = 1.0
"""Seconds a timestamp may go back before the frame counts as corrupt rather than overlapping."""


def audio_channels(info: MediaInfo) -> int:
    return 2 if info.audio_channels >= 2 else 1


class _Track:
    """One output of the decode: a resampler and where its timeline stands (samples at its rate)."""

    def __init__(self, rate: int, layout: str, fmt: str) -> None:
        self.rate, self.layout, self.fmt = rate, layout, fmt
        self.channels = 2 if layout == "stereo" else 1
        self.position = 0  # samples emitted on this track's timeline
        self.drop = 0  # samples still to drop (an overlap)
        self.resampler = None

    def new_resampler(self) -> None:
        self.resampler = av.AudioResampler(format=self.fmt, layout=self.layout, rate=self.rate)

    def array(self, out) -> np.ndarray:
        a = out.to_ndarray()
        if self.fmt == "s16":  # packed: (1, n * channels) interleaved, values / 32768
            return (a.reshape(-1, self.channels).T / 32768.0).astype(np.float32)
        return a.astype(np.float32, copy=False).reshape(self.channels, -1)


def audio_blocks(info: MediaInfo, tally: StreamTally, copies: tuple[AudioCopy, ...] = ()) -> Iterator[tuple[int, np.ndarray | int]]:
    """``(track, block)``: ``(channels, n)`` blocks from the media start (time 0) on; where nothing
    decoded, the number of silent samples (an ``int``) instead of an array, whatever the gap's
    length. Track 0 is featpipe's 48 kHz audio (channels kept); track ``i`` is ``copies[i - 1]``,
    made by its own FFmpeg resampler from the same decoded frames and placed by the same
    timestamps. Only track 0 is counted in ``tally``."""
    channels = audio_channels(info)
    tracks = [_Track(AUDIO_RATE, "stereo" if channels == 2 else "mono", "fltp")]
    tracks += [_Track(cp.rate, cp.layout, cp.sample_format) for cp in copies]
    c = open_media(info.path)

    def emit(i: int, tr: _Track, out) -> Iterator[tuple[int, np.ndarray]]:
        block = tr.array(out)
        drop = min(tr.drop, block.shape[1])
        if drop:
            block, tr.drop = block[:, drop:], tr.drop - drop
        if block.shape[1]:
            if i == 0:
                tally.covered.add(tr.position / tr.rate, (tr.position + block.shape[1]) / tr.rate)
                tally.end = (tr.position + block.shape[1]) / tr.rate
            tr.position += block.shape[1]
            yield i, block

    def flush() -> Iterator[tuple[int, np.ndarray]]:
        for i, tr in enumerate(tracks):
            if tr.resampler is not None:
                for out in tr.resampler.resample(None):  # what belongs before a jump or the end
                    yield from emit(i, tr, out)
            tr.resampler = None

    def place(i: int, tr: _Track, target: int, first: bool) -> Iterator[tuple[int, int]]:
        """Move the track's timeline to sample ``target``: silence up to it, or drop what overlaps it."""
        if target > tr.position:
            if not first and i == 0:
                tally.gaps += 1
                tally.gap_seconds += (target - tr.position) / tr.rate
            n = target - tr.position
            tr.position = target
            yield i, n  # a count, not zeros: an hour's gap costs nothing until a window asks for it
        elif target < tr.position:
            tr.drop = tr.position - target
            if not first and i == 0:
                tally.overlap_seconds += tr.drop / tr.rate

    try:
        stream = c.streams[info.audio_index]
        setup, expected, last = None, None, None
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
                if tracks[0].resampler is not None and (jump or this != setup):
                    yield from flush()
                if jump and expected is None:
                    for i, tr in enumerate(tracks):
                        yield from place(i, tr, round(t * tr.rate), True)
                    tally.start = max(t, 0.0)
                elif jump:  # relative to where each timeline is, so rounding never accumulates
                    step = _snap(t - expected, last, stream)
                    for i, tr in enumerate(tracks):
                        yield from place(i, tr, tr.position + round(step * tr.rate), False)
                if tracks[0].resampler is None:
                    for tr in tracks:
                        tr.new_resampler()
                    setup = this
                try:
                    outs = [tr.resampler.resample(frame) for tr in tracks]
                except (av.error.FFmpegError, ValueError):  # a damaged frame (21 channels, say): skip it
                    tally.bad += 1
                    for tr in tracks:
                        tr.resampler = None
                    continue
                for i, (tr, got) in enumerate(zip(tracks, outs)):
                    for out in got:
                        yield from emit(i, tr, out)
                expected, last = t + frame.samples / frame.sample_rate, frame
            yield from flush()
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
    """A sliding buffer over the tracks of :func:`audio_blocks`: hands out any later window of a
    track, zero-padded. Windows only move forward; all tracks advance together.

    Silence is held as a count of samples (``audio_blocks`` yields an ``int`` for a gap), so
    reading ahead through a gap of any length (two frames an hour apart) holds only the decoded
    blocks around it: memory is bounded by a window plus one decoded block per track, whatever
    the timestamps say.
    """

    def __init__(self, blocks: Iterator[tuple[int, np.ndarray | int]], channels: int | list[int],
                 rate: int = AUDIO_RATE) -> None:
        self.blocks = blocks
        self.channels = [channels] if isinstance(channels, int) else list(channels)
        self.rate = rate  # of track 0
        # per track: (first sample, block or silent count), in order
        self.pieces: list[deque[tuple[int, np.ndarray | int]]] = [deque() for _ in self.channels]
        self.end = [0] * len(self.channels)  # per track: the sample index after the last piece
        self.done = False

    def _pull(self) -> bool:
        try:
            i, block = next(self.blocks)
        except StopIteration:
            self.done = True
            return False
        n = block if isinstance(block, int) else block.shape[1]
        if n:
            self.pieces[i].append((self.end[i], block))
            self.end[i] += n
        return True

    def window(self, start: int, stop: int, track: int = 0) -> np.ndarray:
        while not self.done and self.end[track] < stop:
            self._pull()
        out = np.zeros((self.channels[track], stop - start), np.float32)
        pieces = self.pieces[track]
        for first, block in pieces:
            if first >= stop:
                break
            if isinstance(block, int):
                continue  # silence: out is zeros already
            lo, hi = max(start, first), min(stop, first + block.shape[1])
            if hi > lo:
                out[:, lo - start:hi - start] = block[:, lo - first:hi - first]
        while pieces:  # windows only move forward: let go of what ends before this one starts
            first, block = pieces[0]
            n = block if isinstance(block, int) else block.shape[1]
            if first + n > start:
                break
            pieces.popleft()
        return out

    def covers(self, t: float, tally: StreamTally) -> bool:
        """Whether decoded audio (track 0) lasts to ``t`` seconds or later (reads ahead as needed;
        a gap read through is held as a count)."""
        while tally.end < t and not self.done:
            self._pull()
        return tally.end >= t

    @property
    def read_to(self) -> float:
        """Seconds of the timeline (track 0) read so far: nothing decoded later can land before it."""
        return self.end[0] / self.rate

    def close(self) -> None:
        close = getattr(self.blocks, "close", None)
        if close is not None:
            close()
