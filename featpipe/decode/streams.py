"""Probing: which streams a file has, which ones to use, how its pictures are displayed.

Stream choice (the same in probing and decoding, through :attr:`MediaInfo.video_index` and
:attr:`MediaInfo.audio_index`): the video stream is the one with the most pixels among those
that are not attached pictures (cover art) and carry more than one packet, earliest first on a
tie; the audio stream is the one marked default, else the one with the most channels, then the
highest rate, then the earliest. ``DecodeParams.video_stream`` / ``audio_stream`` pick an index.

Orientation: the display matrix (read from the first decoded frame, as FFmpeg attaches it to
every frame) is reduced to a transpose and two flips when its angle, rounded to a whole degree as
FFmpeg's tools round it, is a multiple of 90; any other angle turns the picture by that angle
about its centre, at the same size, black outside (what ``ffmpeg``/``ffplay`` do with the
``rotate`` filter). The sample aspect ratio gives the display width. See :mod:`featpipe.decode.video`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from .packets import StreamTally, decoded_frames, media_errors
from .pyav_compat import display_matrix_side_data
from .params import DecodeError, DecodeParams

SCAN_PACKETS = 400
"""Packets read to count each video stream's packets (a cover picture has one)."""


def display_angle(m: np.ndarray) -> float:
    """The clockwise turn (degrees in ``[0, 360)``, a whole number) a display matrix asks for, as
    FFmpeg's tools compute it: ``-round(av_display_rotation_get(m))``, wrapped the same way; NaN
    for a degenerate matrix."""
    a, b, c, d = (float(m[i]) for i in (0, 1, 3, 4))
    sx, sy = math.hypot(a, c), math.hypot(b, d)
    if sx == 0 or sy == 0:
        return math.nan
    ccw = -math.degrees(math.atan2(b / sy, a / sx))  # av_display_rotation_get: counter-clockwise degrees
    theta = -math.copysign(math.floor(abs(ccw) + 0.5), ccw)  # C's round: halves away from zero
    return float(theta - 360 * math.floor(theta / 360 + 0.9 / 360)) + 0.0  # + 0.0: no -0.0


@dataclass(frozen=True)
class Orientation:
    """How a stored picture becomes the displayed one: transpose first, then flip rows / columns;
    or, for an angle that is no multiple of 90 degrees, a turn by ``angle`` degrees clockwise."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    angle: float = 0.0  # clockwise degrees of a free turn (0: none, the flips above say it all)

    @classmethod
    def from_matrix(cls, m: np.ndarray) -> Orientation:
        """From FFmpeg's display matrix (``p' = a p + c q``, ``q' = b p + d q``; p right, q down)."""
        theta = display_angle(m)
        if math.isnan(theta):
            return cls()
        if abs(theta - 90 * round(theta / 90)) >= 1.0:  # FFmpeg's tools: the rotate filter, not a transpose
            return cls(angle=theta)
        a, b, c, d = (float(m[i]) for i in (0, 1, 3, 4))
        if abs(a) + abs(d) >= abs(b) + abs(c):
            return cls(False, d < 0, a < 0)
        return cls(True, b < 0, c < 0)

    @property
    def rotation(self) -> float:
        """Degrees the picture is turned clockwise for display (a mirror, if any, comes after)."""
        if self.angle:
            return float(self.angle)
        return float(_TURNS[(self.transpose, self.flip_rows, self.flip_cols)][0])

    @property
    def mirrored(self) -> bool:
        return not self.angle and _TURNS[(self.transpose, self.flip_rows, self.flip_cols)][1]

    def apply(self, img: np.ndarray) -> np.ndarray:
        """The displayed ``(H, W, 3)`` picture from the stored one."""
        if self.angle:
            return rotate(img, self.angle)
        if self.transpose:
            img = img.transpose(1, 0, 2)
        if self.flip_rows:
            img = img[::-1]
        if self.flip_cols:
            img = img[:, ::-1]
        return np.ascontiguousarray(img)


CACHED_MAP_PIXELS = 2_100_000
"""Pictures up to this size (1080p) keep their rotation map between frames (about 66 MB at 1080p);
larger ones are turned band by band, so memory never grows with the picture's size beyond the
picture itself (a 4000x4000 frame cost 2.7 GB at once)."""
BAND_PIXELS = 1 << 18
"""Output pixels turned per band (about 40 MB of temporaries)."""


def rotate(img: np.ndarray, angle: float) -> np.ndarray:
    """``img`` (H, W, C) uint8 turned ``angle`` degrees clockwise about its centre, same size.

    Each output pixel takes the bilinear mix (float32, rounded) of the four source pixels around
    its inverse-mapped position, pixel centres at integer coordinates and the centre of the
    picture at ``((W-1)/2, (H-1)/2)`` as in FFmpeg's ``rotate`` filter; positions outside the
    source picture (more than half a pixel beyond its edge pixels) are black. Large pictures are
    turned in bands of rows (:data:`BAND_PIXELS`), with the same values.
    """
    h, w = img.shape[:2]
    flat = img.reshape(h * w, -1)
    out = np.empty_like(img)
    angle = float(angle)
    rows = h if h * w <= CACHED_MAP_PIXELS else max(1, BAND_PIXELS // w)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        band = _rotation_map(h, w, angle) if rows == h else _band_map(h, w, angle, r0, r1)
        out[r0:r1] = _mix(flat, *band).reshape(r1 - r0, w, -1)
    return out


def _mix(flat: np.ndarray, idx: tuple, weights: tuple, outside: np.ndarray) -> np.ndarray:
    out = sum(flat[i].astype(np.float32) * wt[:, None] for i, wt in zip(idx, weights))
    out[outside] = 0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=2)  # ~66 MB for a 1080p picture
def _rotation_map(h: int, w: int, angle: float) -> tuple[tuple, tuple, np.ndarray]:
    """The whole picture's map (one per frame size of a video), see :func:`_band_map`."""
    return _band_map(h, w, angle, 0, h)


def _band_map(h: int, w: int, angle: float, r0: int, r1: int) -> tuple[tuple, tuple, np.ndarray]:
    """Flat source indices and weights of the four neighbours of every output pixel of rows
    ``[r0, r1)``, and where the source position lies outside the picture."""
    t = math.radians(angle)
    cos, sin = math.cos(t), math.sin(t)
    j, i = np.mgrid[r0:r1, 0:w].astype(np.float64)
    u, v = i - (w - 1) / 2, j - (h - 1) / 2
    x = cos * u + sin * v + (w - 1) / 2  # the output pixel's source, turning back by -angle
    y = -sin * u + cos * v + (h - 1) / 2
    outside = ((x < -0.5) | (x > w - 0.5) | (y < -0.5) | (y > h - 0.5)).ravel()
    x, y = np.clip(x, 0, w - 1).ravel(), np.clip(y, 0, h - 1).ravel()
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    idx = (y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1)
    weights = ((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy)
    return tuple(a.astype(np.int32) for a in idx), weights, outside


# (transpose, flip rows, flip columns) -> (clockwise turn, then mirrored left-right)
_TURNS = {(False, False, False): (0, False), (False, True, True): (180, False), (False, False, True): (0, True),
          (False, True, False): (180, True), (True, False, True): (90, False), (True, True, False): (270, False),
          (True, False, False): (90, True), (True, True, True): (270, True)}


@dataclass(frozen=True)
class MediaInfo:
    """What probing a file found out (streams chosen, stated durations, display geometry)."""

    path: str
    duration: float  # the longest stated duration of the chosen streams: a hint, never the truth
    has_video: bool
    has_audio: bool
    width: int = 0  # coded picture size
    height: int = 0
    frame_rate: float = 0.0
    audio_rate: int = 0
    audio_channels: int = 0
    video_codec: str = ""
    audio_codec: str = ""
    start_time: float = 0.0
    keyframe_spacing: float | None = None  # median seconds between video keyframes
    video_index: int = -1
    audio_index: int = -1
    video_stated: float = 0.0  # seconds the container states for the chosen video stream
    audio_stated: float = 0.0
    sample_aspect: float = 1.0
    orientation: Orientation = Orientation()
    display_width: int = 0  # the picture as players show it (aspect ratio and display matrix applied)
    display_height: int = 0
    video_note: str = ""  # why there is no usable video stream, when there is none
    audio_note: str = ""

    def facts(self) -> dict:
        """The media facts a cache record keeps."""
        return {"width": self.width, "height": self.height, "display_width": self.display_width,
                "display_height": self.display_height, "rotation": self.orientation.rotation,
                "mirrored": self.orientation.mirrored, "sample_aspect": round(self.sample_aspect, 6),
                "frame_rate": self.frame_rate, "audio_rate": self.audio_rate,
                "audio_channels": self.audio_channels, "video_codec": self.video_codec,
                "audio_codec": self.audio_codec, "video_stream": self.video_index,
                "audio_stream": self.audio_index}


def open_media(path: str) -> av.container.InputContainer:
    with media_errors("cannot open the file"):
        return av.open(path, metadata_errors="ignore")


def _disposition(stream, name: str) -> bool:
    flag = getattr(av.stream.Disposition, name, 0)
    return bool(int(stream.disposition or 0) & int(flag))


def _packet_counts(c, streams) -> dict[int, int]:
    """Packets per stream among the first ``SCAN_PACKETS`` of the file."""
    counts = {s.index: 0 for s in streams}
    try:
        for i, packet in enumerate(c.demux(*streams)):
            if packet.size:
                counts[packet.stream.index] += 1
            if i >= SCAN_PACKETS:
                break
    except av.error.FFmpegError:
        pass
    try:
        c.seek(0)
    except av.error.FFmpegError:
        pass
    return counts


def _undecodable(streams, kind: str) -> str:
    names = sorted({s.codec_context.name if s.codec_context else (getattr(s, "codec_tag", "") or "unknown")
                    for s in streams})
    return f"its {kind} stream uses a codec this FFmpeg cannot decode ({', '.join(names)})" if streams else ""


def choose_video(c, index: int | None):
    """The video stream to decode, or ``(None, why)``."""
    if index is not None:
        return _pick(c, index, "video"), ""
    usable = [s for s in c.streams.video if s.codec_context is not None and not _disposition(s, "attached_pic")]
    if not usable:
        pics = [s for s in c.streams.video if _disposition(s, "attached_pic")]
        return None, ("it has only a cover picture, no video stream" if pics else _undecodable(c.streams.video, "video"))
    if len(usable) > 1:
        counts = _packet_counts(c, usable)
        usable.sort(key=lambda s: (counts[s.index] > 1, (s.codec_context.width or 0) * (s.codec_context.height or 0),
                                   -s.index), reverse=True)
    return usable[0], ""


def choose_audio(c, index: int | None):
    """The audio stream to decode, or ``(None, why)``."""
    if index is not None:
        return _pick(c, index, "audio"), ""
    usable = [s for s in c.streams.audio if s.codec_context is not None]
    if not usable:
        return None, _undecodable(c.streams.audio, "audio")
    default = [s for s in usable if _disposition(s, "default")]
    if default:
        return default[0], ""
    usable.sort(key=lambda s: (s.codec_context.channels or 0, s.codec_context.sample_rate or 0, -s.index), reverse=True)
    return usable[0], ""


def _pick(c, index: int, kind: str):
    have = [s.index for s in getattr(c.streams, kind)]
    if index not in have:
        listed = ", ".join(map(str, have)) or "none"
        raise DecodeError(f"stream {index} is not a {kind} stream of this file (its {kind} streams: {listed})")
    stream = c.streams[index]
    if stream.codec_context is None:
        raise DecodeError(_undecodable([stream], kind))
    return stream


def _stated(stream, container_duration: float) -> float:
    if stream is not None and stream.duration and stream.time_base:
        d = float(stream.duration * stream.time_base)
        if math.isfinite(d) and d > 0:
            return d
    return container_duration


def _video_scan(c, stream) -> tuple[float | None, object | None]:
    """(median keyframe spacing over the first 60 s, first decoded frame), from one pass."""
    times, first = [], None
    tally = StreamTally("video", 0.0)
    tb = float(stream.time_base or 0) or 1.0
    horizon = 60.0 / tb  # 60 s in the stream's own ticks: no Fraction arithmetic per packet
    try:
        for packet in c.demux(stream):
            if first is None:
                try:
                    frames = packet.decode()
                    first = frames[0] if frames else None
                except av.error.FFmpegError:
                    pass
            pts = packet.pts
            if pts is None or packet.size == 0:
                continue
            if packet.is_keyframe:
                times.append(pts * tb)
            if (pts > horizon or len(times) > 64) and first is not None:
                break
    except av.error.FFmpegError:
        pass
    if first is None:  # the scan stopped before a frame came out: decode tolerantly from the start
        try:
            c.seek(0)
            first = next(iter(decoded_frames(c, stream, tally)), None)
        except av.error.FFmpegError:
            first = None
    spacing = float(np.median(np.diff(sorted(times)))) if len(times) >= 2 else None
    return spacing, first


def _matrix(frame) -> np.ndarray | None:
    sd = display_matrix_side_data(frame)
    if sd is None:
        return None
    m = np.frombuffer(bytes(sd), np.int32)
    return m if m.size == 9 else None


def _sample_aspect(stream) -> float:
    for sar in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if sar and isinstance(sar, Fraction) and sar > 0:
            value = float(sar)
            if 0.1 <= value <= 10:
                return value
    return 1.0


def probe(path: str, params: DecodeParams | None = None) -> MediaInfo:
    """Read stream metadata and choose streams; raise :class:`DecodeError` when nothing is usable."""
    params = params or DecodeParams()
    c = open_media(path)
    with c, media_errors("cannot read the file's streams"):
        vs, vnote = choose_video(c, params.video_stream)
        aus, anote = choose_audio(c, params.audio_stream)
        if vs is None and aus is None:
            raise DecodeError(vnote or anote or "the file has no audio or video stream")
        start = c.start_time / 1e6 if c.start_time is not None else 0.0
        container = c.duration / 1e6 if c.duration and c.duration > 0 else 0.0
        stated = [d for d in (container, _stated(vs, 0.0), _stated(aus, 0.0)) if d > 0]
        duration = max(stated) if stated else 0.0
        spacing, first = (None, None)
        width = height = 0
        sar, orient = 1.0, Orientation()
        if vs is not None:
            spacing, first = _video_scan(c, vs)
            width, height = vs.codec_context.width or 0, vs.codec_context.height or 0
            if first is not None:
                width, height = first.width, first.height
                m = _matrix(first)
                orient = Orientation.from_matrix(m) if m is not None else Orientation()
            sar = _sample_aspect(vs)
        if duration <= 0:
            duration = _scan_duration(path, start)
        if not math.isfinite(duration) or duration <= 0:
            raise DecodeError("the file states no duration and no packet carries a timestamp (empty or truncated)")
        dw, dh = max(1, round(width * sar)) if width else 0, height
        if orient.transpose:
            dw, dh = dh, dw
        return MediaInfo(
            path=path, duration=duration, has_video=vs is not None, has_audio=aus is not None,
            width=width, height=height,
            frame_rate=float(vs.average_rate or vs.guessed_rate or 0) if vs is not None else 0.0,
            audio_rate=(aus.codec_context.sample_rate or 0) if aus is not None else 0,
            audio_channels=(aus.codec_context.channels or 0) if aus is not None else 0,
            video_codec=vs.codec_context.name if vs is not None else "",
            audio_codec=aus.codec_context.name if aus is not None else "",
            start_time=start if math.isfinite(start) else 0.0, keyframe_spacing=spacing,
            video_index=vs.index if vs is not None else -1, audio_index=aus.index if aus is not None else -1,
            video_stated=_stated(vs, duration) if vs is not None else 0.0,
            audio_stated=_stated(aus, duration) if aus is not None else 0.0,
            sample_aspect=sar, orientation=orient, display_width=dw, display_height=dh,
            video_note=vnote, audio_note=anote,
        )


def _scan_duration(path: str, start: float) -> float:
    """Duration from the last packet timestamps, for containers that do not state it."""
    end = 0.0
    with open_media(path) as c:
        try:
            for packet in c.demux():
                if packet.pts is not None and packet.stream.time_base:
                    dur = float((packet.duration or 0) * packet.stream.time_base)
                    end = max(end, float(packet.pts * packet.stream.time_base) + dur)
        except av.error.FFmpegError:
            pass
    return end - start
