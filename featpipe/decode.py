"""Decode a video once with PyAV into chunks of aligned segments.

Segment k covers ``[k/fps, (k+1)/fps)``. For every segment the decoder delivers the frames on
screen at the positions the extractors asked for (0.5 = the centre, MUSIC-AVQA's convention)
and the audio, resampled once to 48 kHz with its channels kept (mono stays mono, anything with
two or more channels becomes stereo). Audio and video are decoded by two lazy generators, each
over its own demuxer, so memory holds a chunk of segments, never the whole video.

Visual frames are taken either by decoding every frame (sequential) or by seeking to each target
when keyframes are at least as dense as the targets; ``plan_video_access`` chooses from the
keyframe spacing, read from packets without decoding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import av
import numpy as np

from .contracts import AUDIO_RATE, Chunk, MediaNeeds

TAIL_KEEP = 0.25
"""A last partial segment is kept when it is at least this fraction of a segment long."""


class DecodeError(Exception):
    """The media cannot be decoded; the message is one line meant for the run summary."""


@dataclass(frozen=True)
class MediaInfo:
    """What probing a file found out, without decoding it."""

    path: str
    duration: float
    has_video: bool
    has_audio: bool
    width: int = 0
    height: int = 0
    frame_rate: float = 0.0
    audio_rate: int = 0
    audio_channels: int = 0
    video_codec: str = ""
    audio_codec: str = ""
    start_time: float = 0.0
    keyframe_spacing: float | None = None  # median seconds between video keyframes


@dataclass(frozen=True)
class DecodeParams:
    """How videos are turned into segments; stored with every video as provenance."""

    fps: float = 1.0
    max_seconds: float | None = None  # fixes the number of segments to max_seconds * fps
    pad: str = "repeat"  # how short videos reach max_seconds: "repeat" the last segment, or "zero"
    chunk_segments: int = 16
    seek: str = "auto"  # "auto", "always" or "never"
    extra: dict = field(default_factory=dict)

    @property
    def seg_len(self) -> float:
        return 1.0 / self.fps

    def as_dict(self) -> dict:
        d = asdict(self)
        d["audio_rate"] = AUDIO_RATE
        d["pyav"] = av.__version__
        return d


def count_segments(duration: float, params: DecodeParams) -> tuple[int, int]:
    """``(stored, valid)`` segment counts for a video of ``duration`` seconds.

    ``valid`` is how many segments the recording covers (a partial last segment counts when it
    is at least ``TAIL_KEEP`` of a segment; never fewer than one). ``stored`` equals ``valid``
    unless ``max_seconds`` fixes it, in which case longer videos are cut and shorter ones padded.
    """
    valid = max(1, math.floor(duration * params.fps + (1.0 - TAIL_KEEP)))
    if params.max_seconds is None:
        return valid, valid
    stored = max(1, round(params.max_seconds * params.fps))
    return stored, min(valid, stored)


def _open(path: str) -> av.container.InputContainer:
    try:
        return av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise DecodeError(f"cannot open: {exc.strerror or exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DecodeError(f"cannot open: {exc}") from None


def _keyframe_spacing(container, stream) -> float | None:
    """Median seconds between keyframes, from packets only (no decoding), first 60 s."""
    times = []
    try:
        for packet in container.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            t = float(packet.pts * stream.time_base)
            if packet.is_keyframe:
                times.append(t)
            if t > 60 or len(times) > 64:
                break
    except av.error.FFmpegError:
        return None
    if len(times) < 2:
        return None
    return float(np.median(np.diff(sorted(times))))


def probe(path: str) -> MediaInfo:
    """Read stream metadata; raise :class:`DecodeError` for files with nothing to decode."""
    with _open(path) as c:
        vs = next((s for s in c.streams.video if s.codec_context is not None), None)
        aus = c.streams.audio[0] if c.streams.audio else None
        if vs is None and aus is None:
            raise DecodeError("no audio or video stream")
        start = c.start_time / 1e6 if c.start_time is not None else 0.0
        durations = []
        if c.duration:
            durations.append(c.duration / 1e6)
        for s in (vs, aus):
            if s is not None and s.duration and s.time_base:
                durations.append(float(s.duration * s.time_base))
        duration = max(durations) if durations else 0.0
        spacing = None
        if vs is not None:
            spacing = _keyframe_spacing(c, vs)
        if duration <= 0:
            duration = _scan_duration(path, start)
        if not math.isfinite(duration) or duration <= 0:
            raise DecodeError("media has no decodable duration (empty or truncated)")
        return MediaInfo(
            path=path,
            duration=duration,
            has_video=vs is not None,
            has_audio=aus is not None,
            width=vs.codec_context.width if vs is not None else 0,
            height=vs.codec_context.height if vs is not None else 0,
            frame_rate=float(vs.average_rate or 0) if vs is not None else 0.0,
            audio_rate=aus.codec_context.sample_rate if aus is not None else 0,
            audio_channels=aus.codec_context.channels if aus is not None else 0,
            video_codec=vs.codec_context.name if vs is not None else "",
            audio_codec=aus.codec_context.name if aus is not None else "",
            start_time=start,
            keyframe_spacing=spacing,
        )


def _scan_duration(path: str, start: float) -> float:
    """Duration from the last packet timestamps, for containers that do not state it."""
    end = 0.0
    with _open(path) as c:
        try:
            for packet in c.demux():
                if packet.pts is not None and packet.stream.time_base:
                    dur = float((packet.duration or 0) * packet.stream.time_base)
                    end = max(end, float(packet.pts * packet.stream.time_base) + dur)
        except av.error.FFmpegError:
            pass
    return end - start


def merge_needs(needs: list[MediaNeeds]) -> MediaNeeds:
    """One decode serves every extractor: the union of positions, the largest frames and context."""
    return MediaNeeds(
        frame_positions=tuple(sorted({p for n in needs for p in n.frame_positions})),
        frame_short_side=max((n.frame_short_side for n in needs), default=0),
        native_frames=any(n.native_frames for n in needs),
        audio=any(n.audio for n in needs),
        audio_context=max((n.audio_context for n in needs), default=0.0),
    )


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


def _frames_at(path: str, info: MediaInfo, targets: Iterator[float], size: tuple[int, int],
               seek: bool) -> Iterator[np.ndarray]:
    """The RGB frame on screen at each target time (seconds from the media start), in order."""
    c = _open(path)
    try:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        w, h = size

        def rgb(frame) -> np.ndarray:
            return frame.reformat(width=w, height=h, format="rgb24").to_ndarray()

        def timed_frames(from_time: float | None = None) -> Iterator[tuple[float, object]]:
            if from_time is not None:
                pts = int((from_time + info.start_time) / stream.time_base)
                c.seek(max(pts, 0), stream=stream, backward=True, any_frame=False)
            n = 0
            for frame in c.decode(stream):
                t = frame.time
                if t is None:  # no timestamp: assume the nominal rate
                    t = info.start_time + n / (info.frame_rate or 25.0)
                n += 1
                yield t - info.start_time, frame

        last = None
        if seek:
            for target in targets:
                prev = None
                for t, frame in timed_frames(target):
                    if t > target + 1e-6 and prev is not None:
                        break
                    prev = frame
                if prev is None:
                    raise DecodeError("video stream has no decodable frame")
                yield rgb(prev)
            return
        frames = timed_frames()
        prev = None
        pending = None
        exhausted = False
        for target in targets:
            # advance until the next frame would be shown after the target
            while not exhausted:
                if pending is None:
                    try:
                        pending = next(frames)
                    except StopIteration:
                        exhausted = True
                        break
                t, frame = pending
                if t > target + 1e-6 and prev is not None:
                    break
                prev, pending = frame, None
                last = None  # prev changed; convert lazily below
            if prev is None:
                raise DecodeError("video stream has no decodable frame")
            if last is None:
                last = rgb(prev)
            yield last
    except av.error.FFmpegError as exc:
        raise DecodeError(f"video decode failed: {exc.strerror or exc}") from None
    finally:
        c.close()


def _audio_blocks(path: str, info: MediaInfo) -> Iterator[np.ndarray]:
    """48 kHz float32 ``(channels, n)`` blocks from the media start; leading gap zero-filled."""
    layout = "stereo" if info.audio_channels >= 2 else "mono"
    channels = 2 if layout == "stereo" else 1
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=AUDIO_RATE)
    c = _open(path)
    try:
        stream = c.streams.audio[0]
        position = None  # samples emitted so far, on the 48 kHz timeline from the media start
        for frame in c.decode(stream):
            if position is None:
                t = (frame.time or info.start_time) - info.start_time
                lead = round(t * AUDIO_RATE)
                if lead > 0:
                    yield np.zeros((channels, lead), np.float32)
                position = lead
            for out in resampler.resample(frame):
                block = out.to_ndarray().astype(np.float32, copy=False).reshape(channels, -1)
                if position < 0:  # audio starting before the media start: drop the early part
                    drop = min(-position, block.shape[1])
                    block, position = block[:, drop:], position + drop
                position += block.shape[1]
                yield block
        for out in resampler.resample(None):
            yield out.to_ndarray().astype(np.float32, copy=False).reshape(channels, -1)
    except av.error.FFmpegError as exc:
        raise DecodeError(f"audio decode failed: {exc.strerror or exc}") from None
    finally:
        c.close()


class _AudioWindow:
    """A sliding buffer over the audio blocks: hands out any later window, zero-padded."""

    def __init__(self, blocks: Iterator[np.ndarray], channels: int) -> None:
        self.blocks = blocks
        self.buf = np.zeros((channels, 0), np.float32)
        self.offset = 0  # sample index of buf[:, 0]
        self.done = False

    def window(self, start: int, stop: int) -> np.ndarray:
        have = self.offset + self.buf.shape[1]
        parts = [self.buf]
        while not self.done and have < stop:
            try:
                block = next(self.blocks)
            except StopIteration:
                self.done = True
                break
            parts.append(block)
            have += block.shape[1]
        if len(parts) > 1:  # one concatenation per window: linear, not quadratic, in the blocks
            self.buf = np.concatenate(parts, axis=1)
        out = np.zeros((self.buf.shape[0], stop - start), np.float32)
        lo, hi = max(start, self.offset), min(stop, self.offset + self.buf.shape[1])
        if hi > lo:
            out[:, lo - start:hi - start] = self.buf[:, lo - self.offset:hi - self.offset]
        keep = max(start, self.offset)  # windows only move forward: drop what lies before
        self.buf = self.buf[:, keep - self.offset:]
        self.offset = keep
        return out


def iter_chunks(info: MediaInfo, needs: MediaNeeds, params: DecodeParams, video_id: str,
                n_segments: int) -> Iterator[Chunk]:
    """Decode ``info.path`` once into chunks covering segments ``0 .. n_segments-1``.

    Segments past the end of the recording repeat its last frame and carry silent audio; the
    caller pads or cuts to ``max_seconds`` afterwards.
    """
    if needs.video and not info.has_video:
        raise DecodeError("no video stream (a visual extractor needs one)")
    if needs.audio and not info.has_audio:
        raise DecodeError("no audio stream (an audio extractor needs one)")
    seg = params.seg_len
    positions = needs.frame_positions
    frames_iter = None
    if needs.video:
        short_side = 0 if needs.native_frames else needs.frame_short_side
        size = frame_size(info.width, info.height, short_side)
        targets = ((k + p) * seg for k in range(n_segments) for p in positions)
        frames_iter = _frames_at(info.path, info, targets, size, use_seek(info, needs, params))
    audio = None
    if needs.audio:
        channels = 2 if info.audio_channels >= 2 else 1
        audio = _AudioWindow(_audio_blocks(info.path, info), channels)
    ctx = needs.audio_context
    for first in range(0, n_segments, params.chunk_segments):
        count = min(params.chunk_segments, n_segments - first)
        chunk = Chunk(video_id=video_id, first=first, count=count, seg_len=seg,
                      duration=info.duration, audio_context=ctx)
        if frames_iter is not None:
            per = [[next(frames_iter) for _ in positions] for _ in range(count)]
            chunk.frames = {p: np.stack([row[i] for row in per]) for i, p in enumerate(positions)}
        if audio is not None:
            start = round((first * seg - ctx) * AUDIO_RATE)
            stop = round(((first + count) * seg + ctx) * AUDIO_RATE)
            chunk.audio = audio.window(start, stop)
        yield chunk
