"""Write frames and audio as an H.264 + AAC .mp4 with PyAV (keyframe every second)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], audio: np.ndarray, fps: int,
              sample_rate: int, crf: int = 23) -> None:
    """Encode ``frames`` (uint8 (h, w, 3), even h and w) and ``audio`` ((2, n) float) to ``path``.

    Keyframes are placed every ``fps`` frames (one per second, scene cuts off) so decoders that
    seek per second land on a keyframe. A partial file is removed if encoding fails.
    """
    path = Path(path)
    audio = np.ascontiguousarray(np.clip(audio, -1.0, 1.0), dtype=np.float32)
    try:
        with av.open(str(path), mode="w") as out:
            vs = out.add_stream("libx264", rate=fps, options={
                "crf": str(crf), "preset": "veryfast",
                "x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0"})
            vs.pix_fmt = "yuv420p"
            vs.codec_context.time_base = Fraction(1, fps)
            vs.codec_context.thread_count = 1  # deterministic bitstream, and workers share cores
            as_ = out.add_stream("aac", rate=sample_rate, layout="stereo")
            as_.codec_context.time_base = Fraction(1, sample_rate)
            first = True
            for i, img in enumerate(frames):
                if first:
                    vs.height, vs.width = img.shape[:2]
                    first = False
                vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                vf.pts = i
                out.mux(vs.encode(vf))
            out.mux(vs.encode())
            size = as_.codec_context.frame_size or 1024
            for start in range(0, audio.shape[1], size):
                chunk = audio[:, start:start + size]
                if chunk.shape[1] < size:  # the encoder wants full frames; pad the last with silence
                    chunk = np.pad(chunk, ((0, 0), (0, size - chunk.shape[1])))
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="stereo")
                af.sample_rate = sample_rate
                af.time_base = Fraction(1, sample_rate)
                af.pts = start
                out.mux(as_.encode(af))
            out.mux(as_.encode())
    except Exception:
        path.unlink(missing_ok=True)
        raise
