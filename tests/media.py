"""Small test clips written with PyAV (H.264 + AAC in .mp4), with known content.

The picture's mean grey level encodes the time (so tests can tell which frame was sampled) and
the audio is a sine whose amplitude differs per channel (so tests can check channels survive).
Real-world variants (rotation, non-square pixels, B-frames, a late video start, audio and video gaps,
cover pictures, several audio streams) are options of :func:`write_clip`; damaged copies come
from :func:`truncate` and :func:`flip_bits`.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_clip(path: str | Path, seconds: float = 3.0, fps: int = 10, size: tuple[int, int] = (64, 48),
               channels: int = 2, rate: int = 44100, video: bool = True, audio: bool = True,
               keyint: int | None = None, freq: float = 440.0, audio_seconds: float | None = None,
               sample_fmt: str = "fltp", codec: str = "aac", vcodec: str = "libx264", pix_fmt: str = "yuv420p",
               vfr: bool = False, preset: str = "ultrafast", rotation: int | None = None, hflip: bool = False,
               sar: Fraction | None = None, pattern: str = "grey", video_start: float = 0.0,
               audio_gap: tuple[float, float] | None = None, second_audio: bool = False, cover: bool = False,
               options: dict | None = None, video_gap: tuple[float, float] | None = None) -> Path:
    """Write a clip; frame i is a flat grey of level ``round(255 * t / seconds)`` at t = i / fps.

    ``vfr`` drops every third frame, so frame durations vary (variable frame rate).
    ``preset="medium"`` gives x264 B-frames. ``rotation`` (counter-clockwise degrees, as PyAV's
    ``frame.rotation`` reads it back) and ``hflip`` write a display matrix; ``sar`` the sample
    aspect ratio. ``pattern="halves"`` paints the left half red and the right half blue;
    ``pattern="ramp"`` makes red grow to the right and green downwards (blue: the time level).
    ``video_start`` delays the first video frame; ``audio_gap=(a, b)`` leaves out the audio
    frames starting in ``[a, b)`` (their timestamps jump), ``video_gap`` likewise the video frames
    (a hole in the video: no frame for ``b - a`` seconds); ``second_audio`` adds a mono 880 Hz
    stream marked default after the first (which is then not default); ``cover`` adds a
    320x320 attached picture. ``options`` go to the muxer (e.g. ``{"movflags": "faststart"}``).
    """
    path = Path(path)
    out = av.open(str(path), "w", options=options or {})
    vs = as_ = as2 = cov = None
    if cover:
        cov = out.add_stream("mjpeg", rate=1)
        cov.width, cov.height, cov.pix_fmt = 320, 320, "yuvj420p"
        cov.disposition = av.stream.Disposition.attached_pic
    if video:
        vs = out.add_stream(vcodec, rate=fps)
        vs.width, vs.height = size
        vs.pix_fmt = pix_fmt
        if vfr:
            vs.time_base = Fraction(1, fps)
        k = keyint or fps
        if vcodec == "libx264":
            vs.options = {"x264-params": f"keyint={k}:min-keyint={k}:scenecut=0", "preset": preset}
        if rotation is not None or hflip:
            vs.set_display_rotation(rotation or 0, hflip=hflip)
        if sar is not None:
            vs.codec_context.sample_aspect_ratio = sar
    if audio:
        layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
        as_ = out.add_stream(codec, rate=rate, layout=layout)
        if sample_fmt != "fltp":
            as_.format = sample_fmt
        if second_audio:
            as2 = out.add_stream(codec, rate=rate, layout="mono")
            as_.disposition = 0
            as2.disposition = av.stream.Disposition.default
    if cov is not None:
        frame = av.VideoFrame.from_ndarray(np.full((320, 320, 3), 200, np.uint8), format="rgb24")
        frame.pts, frame.time_base = 0, Fraction(1, 1)
        for p in [*cov.encode(frame), *cov.encode()]:
            out.mux(p)
    if vs is not None:
        offset = int(round(video_start * fps))
        for i in range(int(round(seconds * fps))):
            if (vfr and i % 3 == 2) or (video_gap is not None and video_gap[0] <= i / fps < video_gap[1]):
                continue
            level = int(round(255 * (i / fps) / seconds))
            img = np.full((size[1], size[0], 3), level, np.uint8)
            if pattern == "halves":
                img[:, : size[0] // 2] = (255, 0, 0)
                img[:, size[0] // 2:] = (0, 0, 255)
            elif pattern == "ramp":  # red grows to the right, green downwards: every turn and mirror differs
                img[..., 0] = np.linspace(0, 255, size[0])[None, :].round().astype(np.uint8)
                img[..., 1] = np.linspace(0, 255, size[1])[:, None].round().astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i + offset
            frame.time_base = Fraction(1, fps)
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    if as2 is not None:
        _write_tone(out, as2, seconds, rate, 1, 880.0, audio_gap)
    if as_ is not None:
        _write_tone(out, as_, audio_seconds if audio_seconds is not None else seconds, rate, channels, freq,
                    audio_gap, codec)
    out.close()
    return path


def _write_tone(out, as_, seconds: float, rate: int, channels: int, freq: float,
                gap: tuple[float, float] | None, codec: str = "aac") -> None:
    """A sine, louder on the first channel, in frames of the encoder's size; frames in ``gap`` left out."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    sig = np.sin(2 * np.pi * freq * t).astype(np.float32)
    gains = np.linspace(0.8, 0.2, channels).astype(np.float32)[:, None]
    data = gains * sig[None, :]
    fs = as_.codec_context.frame_size or 1024
    fmt = as_.codec_context.format.name if as_.codec_context.format else "fltp"
    for start in range(0, n, fs):
        if gap is not None and gap[0] <= start / rate < gap[1]:
            continue
        block = data[:, start:start + fs]
        if block.shape[1] < fs and codec == "aac":
            block = np.pad(block, ((0, 0), (0, fs - block.shape[1])))
        if fmt == "fltp":
            arr = np.ascontiguousarray(block)
        elif fmt == "s16":
            arr = (block.T.reshape(1, -1) * 32767).astype(np.int16)
        elif fmt == "u8":
            arr = (block.T.reshape(1, -1) * 127 + 128).astype(np.uint8)
        else:
            arr = np.ascontiguousarray(block.T.reshape(1, -1))
        frame = av.AudioFrame.from_ndarray(arr, format=fmt, layout=as_.layout.name)
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for p in as_.encode(frame):
            out.mux(p)
    for p in as_.encode():
        out.mux(p)


def truncate(src: str | Path, dst: str | Path, fraction: float) -> Path:
    """A copy of ``src`` cut after ``fraction`` of its bytes (a download that stopped)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def flip_bits(src: str | Path, dst: str | Path, flips: int, seed: int = 0, skip: float = 0.05) -> Path:
    """A copy of ``src`` with ``flips`` random bits flipped, none in its first ``skip`` share (the header)."""
    data = bytearray(Path(src).read_bytes())
    rng = np.random.default_rng(seed)
    for _ in range(flips):
        pos = int(rng.integers(int(len(data) * skip), len(data)))
        data[pos] ^= 1 << int(rng.integers(0, 8))
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def corrupt_packet(src: str | Path, dst: str | Path, kind: str, after: float) -> float:
    """A copy of ``src`` whose first ``kind`` packet (a non-key one for video) after ``after`` s is garbage.

    Returns the packet's time. The first bytes of the packet are left alone (in Matroska the
    position points at the block header, in MP4 they are the NAL size), the rest becomes 0xFF.
    """
    with av.open(str(src)) as c:
        skip = 8 if "matroska" in c.format.name else 4
        packet = next(p for p in c.demux(getattr(c.streams, kind)[0])
                      if p.size and p.pts is not None and float(p.pts * p.time_base) > after
                      and (kind == "audio" or not p.is_keyframe))
        pos, size, t = packet.pos, packet.size, float(packet.pts * packet.time_base)
    data = bytearray(Path(src).read_bytes())
    data[pos + skip:pos + size] = b"\xff" * (size - skip)
    Path(dst).write_bytes(bytes(data))
    return t


def write_pcm_frames(path: str | Path, starts: list[float], length: float = 0.5, freq: float = 200.0,
                     rate: int = 48000) -> Path:
    """Mono PCM audio frames of ``length`` s stamped at ``starts`` (seconds), each the sine at its true time.

    Frames that start before the previous one ends overlap it; later ones leave a gap.
    """
    out = av.open(str(path), "w")
    stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
    n = int(round(length * rate))
    for s0 in starts:
        t = s0 + np.arange(n) / rate
        x = (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(x, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, int(round(s0 * rate)), Fraction(1, rate)
        for p in stream.encode(frame):
            out.mux(p)
    for p in stream.encode():
        out.mux(p)
    out.close()
    return Path(path)
