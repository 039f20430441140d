"""Picture: a background and one sprite per visible instrument, animated only while it sounds.

Every kind has its own shape and colours (so kinds are told apart by eye); a playing
instrument bounces on each note, shivers, brightens and shows a yellow halo, and a silent one
(or one outside its sounding interval) stands still. So "is it sounding" needs the picture
*and* the sound only where the questions want both.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .scene import POSITION_X, Scene, Source

HALO = np.array([255.0, 236.0, 90.0])


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """u in [-1, 1] left to right, v in [-1, 1] top to bottom, over an (h, w) box."""
    v, u = np.mgrid[0:h, 0:w].astype(float)
    return 2 * (u + 0.5) / w - 1, 2 * (v + 0.5) / h - 1


def _ellipse(u, v, cu, cv, ru, rv):
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


def _rect(u, v, u0, u1, v0, v1):
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def _layers(kind: str, u: np.ndarray, v: np.ndarray) -> list[tuple[np.ndarray, tuple[int, int, int]]]:
    """(mask, colour) layers, painted in order, of one kind's sprite."""
    if kind == "piano":
        keys = _rect(u, v, -0.95, 0.95, 0.05, 0.35)
        black = keys & (v < 0.22) & (np.mod((u + 1) * 7, 1.0) < 0.45)
        return [(_rect(u, v, -0.95, 0.95, -0.55, 0.05), (40, 28, 22)),
                (keys, (245, 245, 240)), (black, (15, 15, 15)),
                (_rect(u, v, -0.9, -0.75, 0.35, 0.95) | _rect(u, v, 0.75, 0.9, 0.35, 0.95), (40, 28, 22))]
    if kind == "xylophone":
        cols = [(230, 40, 40), (240, 140, 30), (235, 215, 40), (60, 180, 70), (40, 110, 220), (150, 60, 200)]
        out = [(_rect(u, v, -0.95, 0.95, 0.55, 0.68), (90, 60, 40))]
        for i, c in enumerate(cols):
            u0 = -0.92 + i * 0.31
            half = 0.55 - i * 0.06
            out.append((_rect(u, v, u0, u0 + 0.24, 0.15 - half, 0.15 + half), c))
        return out
    if kind == "acoustic_guitar":
        body = _ellipse(u, v, 0, 0.5, 0.75, 0.42) | _ellipse(u, v, 0, 0.05, 0.55, 0.3)
        return [(_rect(u, v, -0.1, 0.1, -0.95, 0.1), (110, 70, 35)), (body, (222, 170, 90)),
                (_ellipse(u, v, 0, 0.3, 0.2, 0.11), (30, 20, 15)),
                (_rect(u, v, -0.25, 0.25, 0.62, 0.68), (60, 35, 20))]
    if kind == "violin":
        body = _ellipse(u, v, 0, 0.55, 0.45, 0.25) | _ellipse(u, v, 0, 0.15, 0.35, 0.2)
        return [(_rect(u, v, -0.07, 0.07, -0.6, 0.2), (35, 25, 20)), (body, (205, 85, 30)),
                (_ellipse(u, v, 0, -0.65, 0.12, 0.08), (35, 25, 20)),
                (_rect(u, v, -0.02, 0.02, -0.5, 0.75), (230, 230, 210))]
    if kind == "cello":
        body = _ellipse(u, v, 0, 0.4, 0.8, 0.38) | _ellipse(u, v, 0, -0.15, 0.62, 0.3)
        return [(_rect(u, v, -0.08, 0.08, -0.98, 0.0), (40, 20, 15)), (body, (115, 35, 30)),
                (_rect(u, v, -0.03, 0.03, 0.75, 0.98), (160, 160, 160)),
                (_rect(u, v, -0.2, -0.15, 0.1, 0.45) | _rect(u, v, 0.15, 0.2, 0.1, 0.45), (25, 10, 8))]
    if kind == "flute":
        holes = _rect(u, v, -0.5, 0.7, -0.06, 0.06) & (np.mod((u + 0.5) * 5, 1.0) < 0.3)
        return [(_rect(u, v, -0.98, 0.98, -0.16, 0.16), (200, 205, 215)), (holes, (60, 60, 70)),
                (_rect(u, v, -0.85, -0.7, -0.25, 0.25), (150, 155, 170))]
    if kind == "trumpet":
        bell = (u > 0.3) & (np.abs(v + 0.05) <= 0.08 + (u - 0.3) * 0.55) & (u < 0.98)
        return [(_rect(u, v, -0.95, 0.35, -0.12, 0.02), (215, 170, 40)), (bell, (235, 190, 50)),
                (_rect(u, v, -0.45, -0.05, 0.02, 0.2), (190, 150, 35)),
                (_rect(u, v, -0.4, -0.35, -0.3, -0.12) | _rect(u, v, -0.25, -0.2, -0.3, -0.12)
                 | _rect(u, v, -0.1, -0.05, -0.3, -0.12), (170, 130, 30))]
    if kind == "drum":
        return [(_rect(u, v, -0.8, 0.8, -0.1, 0.75) | _ellipse(u, v, 0, 0.75, 0.8, 0.15), (40, 70, 190)),
                (_rect(u, v, -0.8, 0.8, -0.1, 0.0) | _rect(u, v, -0.8, 0.8, 0.65, 0.75), (200, 30, 40)),
                (_ellipse(u, v, 0, -0.1, 0.8, 0.15), (235, 230, 215))]
    raise ValueError(f"unknown instrument kind {kind!r}")


@lru_cache(maxsize=64)
def sprite(kind: str, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb float (h, w, 3), mask (h, w), halo ring mask (h, w)) of one kind at one size."""
    u, v = _grid(h, w)
    rgb, mask = np.zeros((h, w, 3)), np.zeros((h, w), bool)
    for m, c in _layers(kind, u, v):
        rgb[m] = c
        mask |= m
    grown = mask.copy()
    for dy, dx in ((-2, 0), (2, 0), (0, -2), (0, 2), (-1, -1), (1, 1), (-1, 1), (1, -1)):
        grown |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return rgb, mask, grown & ~mask


def background(scene: Scene, height: int, width: int) -> np.ndarray:
    """Indoor (wall, window, wooden floor) or outdoor (sky, sun, grass) backdrop, uint8 (h, w, 3)."""
    p = np.array(scene.palette, float)
    img = np.zeros((height, width, 3))
    floor = int(0.72 * height)
    v, u = np.mgrid[0:height, 0:width].astype(float)
    if scene.background == "indoor":
        img[:] = np.array([196, 176, 146]) + p[:3] - 20
        win = _rect(u, v, 0.38 * width, 0.62 * width, 0.1 * height, 0.4 * height)
        img[win] = (120, 150, 175)
        img[_rect(u, v, 0.495 * width, 0.505 * width, 0.1 * height, 0.4 * height)] = (90, 70, 50)
        img[floor:] = np.array([120, 78, 46]) + p[3:] / 2
        img[floor:][(np.mod(v[floor:], 6) < 1)] = (90, 58, 34)  # planks
    else:
        frac = v[:floor] / floor
        img[:floor] = (1 - frac[..., None]) * np.array([90, 150, 225]) + frac[..., None] * np.array([190, 220, 245])
        img[_ellipse(u, v, 0.9 * width, 0.15 * height, 0.07 * height, 0.07 * height)] = (255, 230, 90)
        img[_ellipse(u, v, 0.25 * width, 0.18 * height, 0.12 * width, 0.06 * height)] = (245, 245, 250)
        img[floor:] = np.array([70, 150, 60]) + p[3:] / 2 - 10
        img[floor:][(np.mod(u[floor:] + 3 * v[floor:], 7) < 1)] = (50, 120, 45)  # grass texture
    return np.clip(img, 0, 255).astype(np.uint8)


def _size(kind: str, height: int, width: int) -> tuple[int, int]:
    h = int(height * (0.78 if kind == "cello" else 0.5 if kind == "violin" else 0.62))
    w = int(width * 0.24)
    if kind in ("flute", "trumpet"):
        h = int(height * 0.3)
    return h, w


def _activity(src: Source, t: float) -> tuple[float, float]:
    """(is sounding at t, pulse that jumps to 1 at each note onset and decays in ~0.1 s)."""
    if not src.sounding or not (src.start <= t < src.end):
        return 0.0, 0.0
    last = max((n.onset for n in src.notes if n.onset <= t), default=src.start)
    return 1.0, float(np.exp(-(t - last) / 0.1))


def render_frame(scene: Scene, t: float, bg: np.ndarray) -> np.ndarray:
    """The frame at time ``t`` (uint8, same shape as ``bg``)."""
    img = bg.astype(float)
    height, width = bg.shape[:2]
    for src in scene.sources:
        if not src.visible:
            continue
        h, w = _size(src.kind, height, width)
        rgb, mask, halo = sprite(src.kind, h, w)
        on, pulse = _activity(src, t)
        # Playing: shiver sideways, bounce up on each note, brighten, glow.
        dx = int(round(on * 1.5 * np.sin(2 * np.pi * 7.0 * t)))
        dy = -int(round(4 * pulse))
        x0 = int(POSITION_X[src.position] * width) - w // 2 + dx
        y0 = int(0.92 * height) - h + dy
        ys, xs = slice(max(0, y0), min(height, y0 + h)), slice(max(0, x0), min(width, x0 + w))
        sy, sx = slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0)
        region = img[ys, xs]
        m, r = mask[sy, sx], halo[sy, sx]
        region[m] = np.minimum(255.0, rgb[sy, sx][m] * (1 + 0.3 * pulse) + 20 * on)
        if on:
            alpha = 0.55 + 0.45 * pulse
            region[r] = (1 - alpha) * region[r] + alpha * HALO
    return img.astype(np.uint8)


def render_frames(scene: Scene, fps: float, height: int, width: int):
    """Yield the video's frames, frame i showing time i / fps."""
    bg = background(scene, height, width)
    for i in range(int(round(scene.seconds * fps))):
        yield render_frame(scene, i / fps, bg)
