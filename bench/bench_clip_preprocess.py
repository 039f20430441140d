"""CLIP preprocessing: open_clip's PIL transform (what featpipe runs) against a uint8 tensor resize.

Measured in one command on the same textured frames, per frame, one thread:
  pil      featpipe.models.clip_towers.preprocess_frames with open_clip's transform (the reference)
  tensor   torchvision.transforms.v2's antialiased resize on a uint8 tensor + crop + normalise (the
           candidate fast path), with how far its resized pixels are from PIL's
Ratios are tensor seconds / pil seconds (above 1: PIL is faster).

    python bench/bench_clip_preprocess.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from featpipe.models.clip_towers import frame_transform, preprocess_frames

CFG = {"size": (224, 224), "mode": "RGB", "mean": (0.48145466, 0.4578275, 0.40821073),
       "std": (0.26862954, 0.26130258, 0.27577711), "interpolation": "bicubic", "resize_mode": "shortest",
       "fill_color": 0}


def textured(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 127 + 60 * np.sin(xx / 7.0)[..., None] + 50 * np.cos(yy / 5.0)[..., None] + rng.normal(0, 20, (h, w, 3))
    return img.clip(0, 255).astype(np.uint8)


def tensor_resize(frame: np.ndarray, interp: InterpolationMode) -> torch.Tensor:
    x = torch.from_numpy(frame).permute(2, 0, 1)
    return TF.center_crop(TF.resize(x, 224, interpolation=interp, antialias=True), [224, 224])


MEAN, STD = torch.tensor(CFG["mean"]).view(3, 1, 1), torch.tensor(CFG["std"]).view(3, 1, 1)


def tensor_path(frame: np.ndarray, interp: InterpolationMode) -> torch.Tensor:
    return (tensor_resize(frame, interp).float().div_(255) - MEAN) / STD


def timed(fn, repeat: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| frame | interpolation | pil ms | tensor ms | ratio | max level diff | pixels differing |")
    print("|---|---|---|---|---|---|---|")
    for h, w in ((360, 640), (1080, 1920)):
        frame = textured(h, w)
        for name, mode in (("bicubic", InterpolationMode.BICUBIC), ("bilinear", InterpolationMode.BILINEAR)):
            tf = frame_transform({**CFG, "interpolation": name})
            pil = timed(lambda: preprocess_frames(frame[None], tf), args.repeat)
            ten = timed(lambda: tensor_path(frame, mode), args.repeat)
            ref = np.asarray(TF.center_crop(TF.resize(Image.fromarray(frame), 224, interpolation=mode), [224, 224]))
            got = tensor_resize(frame, mode).permute(1, 2, 0).numpy()
            d = np.abs(ref.astype(int) - got.astype(int))
            print(f"| {w}x{h} | {name} | {pil * 1e3:.1f} | {ten * 1e3:.1f} | {ten / pil:.2f} | {d.max()} | "
                  f"{(d > 0).mean():.1%} |")


if __name__ == "__main__":
    main()
