"""Small test clips written with PyAV (H.264 + AAC in .mp4), with known content.

The picture's mean grey level encodes the time (so tests can tell which frame was sampled) and
the audio is a sine whose amplitude differs per channel (so tests can check channels survive).
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
               vfr: bool = False) -> Path:
    """Write a clip; frame i is a flat grey of level ``round(255 * t / seconds)`` at t = i / fps.

    ``vfr`` drops every third frame, so frame durations vary (variable frame rate).
    """
    path = Path(path)
    out = av.open(str(path), "w")
    vs = as_ = None
    if video:
        vs = out.add_stream(vcodec, rate=fps)
        vs.width, vs.height = size
        vs.pix_fmt = pix_fmt
        if vfr:
            vs.time_base = Fraction(1, fps)
        k = keyint or fps
        if vcodec == "libx264":
            vs.options = {"x264-params": f"keyint={k}:min-keyint={k}:scenecut=0", "preset": "ultrafast"}
    if audio:
        layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
        as_ = out.add_stream(codec, rate=rate, layout=layout)
        if sample_fmt != "fltp":
            as_.format = sample_fmt
    if vs is not None:
        for i in range(int(round(seconds * fps))):
            if vfr and i % 3 == 2:
                continue
            level = int(round(255 * (i / fps) / seconds))
            img = np.full((size[1], size[0], 3), level, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    if as_ is not None:
        n = int(round((audio_seconds if audio_seconds is not None else seconds) * rate))
        t = np.arange(n) / rate
        sig = np.sin(2 * np.pi * freq * t).astype(np.float32)
        gains = np.linspace(0.8, 0.2, channels).astype(np.float32)[:, None]
        data = gains * sig[None, :]
        fs = as_.codec_context.frame_size or 1024
        fmt = as_.codec_context.format.name if as_.codec_context.format else "fltp"
        for start in range(0, n, fs):
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
    out.close()
    return path
