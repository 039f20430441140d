"""CPU cost of ToMe-14 (TSPM's ViT-L/16-384, random weights) per frame and per 60-s video.

Measured in one command, on the same random 640x360 frames, with the same model:
  baseline   timm's own ``forward_features`` (no merging: 577 tokens through all 24 blocks)
  tome       featpipe's ``tome_tokens`` with r = 25 in the first 23 blocks (577 -> 14 tokens)
  preprocess TSPM's PIL bicubic resize to 438 + centre crop 384 + normalise (featpipe.extractors.tome)
A 60-s MUSIC-AVQA video is 60 segment frames, so its cost is 60 x (preprocess + tome) per frame.
Ratios are baseline seconds / tome seconds (higher is faster).

    python bench/bench_tome.py [--frames 4] [--batch 2] [--threads 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_large_patch16_384")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import timm

    from featpipe.extractors.tome import preprocess_pil
    from featpipe.models.tome import merge_schedule, tome_tokens

    torch.manual_seed(0)
    vit = timm.create_model(args.model, pretrained=False, num_classes=0).eval()
    frames = np.random.default_rng(0).integers(0, 256, (args.frames, 360, 640, 3), dtype=np.uint8)
    schedule = merge_schedule(25, 23, len(vit.blocks))

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best / args.frames

    x = torch.from_numpy(preprocess_pil(frames, 384, (0.5,) * 3, (0.5,) * 3))
    pre = timed(lambda: preprocess_pil(frames, 384, (0.5,) * 3, (0.5,) * 3))
    with torch.inference_mode():
        batches = [x[i:i + args.batch] for i in range(0, len(x), args.batch)]
        base = timed(lambda: [vit.forward_features(b) for b in batches])
        tome = timed(lambda: [tome_tokens(vit, b, schedule) for b in batches])
        shape = tuple(tome_tokens(vit, batches[0], schedule).shape)
    load = os.getloadavg()[0]
    print(f"{args.model}, random weights, {args.frames} frames of 640x360, batch {args.batch}, "
          f"{args.threads} torch threads, best of {args.repeats}, load average {load:.1f}; tome output {shape}")
    print("| step | s per frame | s per 60-s video | ratio vs baseline |")
    print("| --- | --- | --- | --- |")
    print(f"| baseline: timm forward_features (577 tokens, no merging) | {base:.2f} | {60 * base:.0f} | 1.00 |")
    print(f"| ToMe-14 forward (r=25 in 23 blocks) | {tome:.2f} | {60 * tome:.0f} | **{base / tome:.2f}** |")
    print(f"| TSPM preprocessing (PIL bicubic 438 + crop 384) | {pre:.3f} | {60 * pre:.1f} | |")
    print(f"| ToMe-14 per video (preprocess + forward) | {pre + tome:.2f} | {60 * (pre + tome):.0f} | |")


if __name__ == "__main__":
    main()
