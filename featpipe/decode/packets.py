"""Tolerant decoding: a packet that fails to decode is skipped and counted, the decoder goes on.

PyAV raises ``InvalidDataError`` for one corrupt packet and, inside ``container.decode``, that
ends the whole loop. Here packets are demuxed and decoded one by one, so one bad packet costs
its own frames only; what each stream delivered is kept in a :class:`StreamTally`, from which
:mod:`featpipe.decode.timeline` decides whether the video is honest enough to commit.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import av
import numpy as np

from .params import DecodeError

DEMUX_RETRIES = 3
"""Consecutive demuxer errors (no packet in between) after which the stream is taken to end there."""


HOLES_KEPT = 64
"""Holes a stream record lists (the longest ones); the total is always kept."""


class Coverage:
    """The time a stream delivered: a sorted union of disjoint ``[start, end)`` spans (seconds).

    Spans closer than ``join`` seconds are merged (a frame held a little longer than its stated
    duration is no hole). Spans arrive mostly in order, so adding is O(1) then.
    """

    def __init__(self, join: float = 0.0) -> None:
        self.join = join
        self.spans: list[list[float]] = []

    def add(self, a: float, b: float) -> None:
        if not b > a:
            return
        s = self.spans
        if not s or a >= s[-1][0]:  # in order: after the last span, or extending it
            if s and a <= s[-1][1] + self.join:
                s[-1][1] = max(s[-1][1], b)
            else:
                s.append([a, b])
            return
        starts = [x[0] for x in s]  # out of order (after a seek): merge every span it touches
        lo = bisect.bisect_left(starts, a - self.join)
        if lo and s[lo - 1][1] + self.join >= a:
            lo -= 1
        hi = bisect.bisect_right(starts, b + self.join)
        if hi > lo:
            a, b = min(a, s[lo][0]), max(b, s[hi - 1][1])
        s[lo:hi] = [[a, b]]

    def fill(self, other: Coverage) -> None:
        """Close the holes of this coverage that one span of ``other`` covers whole."""
        for a, b in self.holes():
            if any(x <= a + other.join and y >= b - other.join for x, y in other.spans):
                self.add(a, b)

    @property
    def total(self) -> float:
        return sum(b - a for a, b in self.spans)

    def holes(self) -> list[tuple[float, float]]:
        """The uncovered spans between the first and the last covered time."""
        return [(self.spans[i][1], self.spans[i + 1][0]) for i in range(len(self.spans) - 1)]

    def array(self) -> np.ndarray:
        return np.asarray(self.spans, np.float64).reshape(-1, 2)


@dataclass
class StreamTally:
    """What one stream delivered, on the timeline from the media start (seconds)."""

    kind: str  # "video" or "audio"
    stated: float  # seconds the container states for this stream (a hint)
    packets: int = 0  # packets handed to the decoder
    bad: int = 0  # packets that failed to decode, or frames dropped for impossible timestamps
    start: float | None = None  # time of the first decoded frame
    end: float = 0.0  # end of the last decoded frame (or sample)
    gaps: int = 0  # audio: holes between frames filled with silence
    gap_seconds: float = 0.0
    overlap_seconds: float = 0.0  # audio: overlapping frames trimmed
    demux_error: str = ""  # why the demuxer stopped early, if it did
    covered: Coverage = field(default_factory=Coverage)  # the time it delivered (holes and a late start left out)

    @property
    def bad_share(self) -> float:
        return self.bad / self.packets if self.packets else 0.0

    @property
    def decoded(self) -> float:
        """Seconds decoded: the covered time, holes left out (video and audio alike)."""
        if self.start is None:
            return 0.0
        return self.covered.total

    def as_dict(self) -> dict:
        holes = sorted(self.covered.holes(), key=lambda h: h[0] - h[1])[:HOLES_KEPT]
        return {"stated": round(self.stated, 3), "decoded": round(self.decoded, 3),
                "start": round(self.start or 0.0, 3), "end": round(self.end, 3), "packets": self.packets,
                "bad_packets": self.bad, "gaps": self.gaps, "gap_seconds": round(self.gap_seconds, 3),
                "overlap_seconds": round(self.overlap_seconds, 3), "demux_error": self.demux_error,
                "holes": [[round(a, 3), round(b, 3)] for a, b in sorted(holes)],
                "hole_seconds": round(sum(b - a for a, b in self.covered.holes()), 3)}


def ffmpeg_text(exc: BaseException) -> str:
    """FFmpeg's own sentence for an error (``strerror``), without PyAV's call site."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip().splitlines()[0] if str(text).strip() else "unknown error"


@contextmanager
def media_errors(what: str) -> Iterator[None]:
    """Turn what a broken file makes PyAV raise into a one-sentence :class:`DecodeError`.

    Only the media's own errors become sentences about the file: FFmpeg's errors (with FFmpeg's
    text) and failures to read the file. Anything else (an AttributeError, a TypeError) is a bug
    in featpipe, or featpipe meeting a PyAV API it does not know: it passes through unchanged,
    and the run reports it as featpipe's (:mod:`featpipe.run.failure`), never as damaged media.
    """
    try:
        yield
    except DecodeError:
        raise
    except av.error.FFmpegError as exc:
        raise DecodeError(f"{what}: {ffmpeg_text(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DecodeError(f"{what}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}") from None


def decoded_frames(container, stream, tally: StreamTally, before: Callable[[object], None] | None = None,
                   accepted: Callable[[object], None] | None = None) -> Iterator:
    """Every frame of ``stream`` from the container's current position, skipping bad packets.

    ``before(packet)`` is called before each packet is decoded (the video source sets the
    decoder's ``skip_frame`` there, see :class:`featpipe.decode.video.SkipWindow`), and
    ``accepted(packet)`` after the decoder took it without an error (the video source counts the
    time of a packet it let the decoder skip as delivered there).

    Packets that raise when decoded are counted in ``tally.bad``. A demuxer error is retried a
    few times (FFmpeg's demuxers often resync on the next packet); when it persists the stream
    ends there and the error is kept in ``tally.demux_error``.
    """
    packets = container.demux(stream)
    failures = 0
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.error.FFmpegError as exc:
            failures += 1
            if failures >= DEMUX_RETRIES or isinstance(exc, av.error.EOFError):
                tally.demux_error = ffmpeg_text(exc)
                yield from _flush(stream, tally)  # the frames still inside the decoder
                break
            packets = container.demux(stream)
            continue
        failures = 0
        if packet.size:
            tally.packets += 1
        if before is not None:
            before(packet)
        try:
            frames = packet.decode()  # the empty packets at the end flush the decoder
        except av.error.FFmpegError:
            if packet.size:
                tally.bad += 1
            continue
        if accepted is not None:
            accepted(packet)
        yield from frames


def _flush(stream, tally: StreamTally) -> list:
    try:
        return list(stream.codec_context.decode(None))
    except av.error.FFmpegError:
        return []
