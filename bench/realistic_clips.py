"""Realistic clips for the pipeline benchmark: what MUSIC-AVQA videos look like to a decoder.

60 s, 30 fps, x264 ``medium`` (B-frames), a keyframe every 5 s, yuv420p, stereo AAC at 44.1 kHz,
at 640x360 or 1280x720. The picture is a textured background panned slowly with moving blobs
(so motion search and B-frames do real work, at a bitrate near real clips'), the sound a few
partials with noise. ``unique`` clips are encoded and the rest of the set are copies of them
(the decoder's cost does not depend on which clip it is; encoding 24 x 60 s on 2 cores would
take longer than the benchmark).
"""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

FPS, SECONDS, RATE, KEYINT = 30, 60.0, 44_100, 150


def _frames(w: int, h: int, seconds: float, seed: int):
    rng = np.random.default_rng(seed)
    big = rng.random((h // 8 + 2, (w + w // 2) // 8 + 2, 3)).astype(np.float32)
    big = np.kron(big, np.ones((8, 8, 1), np.float32))  # 8-px blocks, then blurred
    for axis in (0, 1):
        big = (big + np.roll(big, 3, axis) + np.roll(big, -3, axis)) / 3
    tex = (60 + 120 * big).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(int(seconds * FPS)):
        t = i / FPS
        x0 = int((w // 4) * (1 + np.sin(t / 7)))  # a slow pan
        img = tex[:h, x0:x0 + w].copy()
        for k in range(3):  # players moving
            cx = w * (0.25 + 0.25 * k) + 40 * np.sin(t * (1.3 + k))
            cy = h * 0.55 + 25 * np.cos(t * (0.9 + k))
            m = (xx - cx) ** 2 + (yy - cy) ** 2 < (h * 0.12) ** 2
            img[m] = (200 - 60 * k, 80 + 50 * k, 120)
        yield img


def write_clip(path: Path, w: int, h: int, seed: int, seconds: float = SECONDS) -> None:
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    left = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 330 * t * (1 + 0.001 * np.sin(t)))
    audio = np.stack([left, np.roll(left, 441)]) + 0.02 * rng.standard_normal((2, t.size))
    audio = audio.astype(np.float32)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), mode="w") as out:
        vs = out.add_stream("libx264", rate=FPS, options={
            "preset": "medium", "crf": "23", "x264-params": f"keyint={KEYINT}:min-keyint={KEYINT}:scenecut=0"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.time_base = Fraction(1, FPS)
        as_ = out.add_stream("aac", rate=RATE, layout="stereo")
        for i, img in enumerate(_frames(w, h, seconds, seed)):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            out.mux(vs.encode(vf))
        out.mux(vs.encode())
        size = as_.codec_context.frame_size or 1024
        for start in range(0, audio.shape[1] - size + 1, size):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, start:start + size]), format="fltp",
                                            layout="stereo")
            af.sample_rate, af.time_base, af.pts = RATE, Fraction(1, RATE), start
            out.mux(as_.encode(af))
        out.mux(as_.encode())
    tmp.rename(path)


def clip_set(root: Path, n: int, w: int, h: int, unique: int = 6, seconds: float = SECONDS) -> list[Path]:
    """``n`` clips of ``w``x``h`` and ``seconds`` under ``root/<w>x<h>-<n>[-<seconds>s]/`` (made once, then reused)."""
    tag = "" if seconds == SECONDS else f"-{seconds:g}s"
    folder = root / f"{w}x{h}-{n}{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    src = root / f"{w}x{h}-unique{tag}"
    src.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        orig = src / f"u{i % unique:02d}.mp4"
        if not orig.exists():
            write_clip(orig, w, h, seed=i % unique, seconds=seconds)
        dst = folder / f"v{i:03d}.mp4"
        if not dst.exists():
            shutil.copyfile(orig, dst)
        files.append(dst)
    return files
