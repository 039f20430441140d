"""Audio encoders per 60 s video on the CPU (random weights at real size), and how much context the
frame-level rule needs.

Cost: writes a 60 s clip (48 kHz stereo music-like audio, 16x16 video), decodes it once with
featpipe's decoder into chunks (the baseline), then times each extractor's ``extract`` over those
chunks, best of ``--repeats``, ``--threads`` torch threads (1, as on a Dask worker). Checkpoint
folders in the published layouts with random weights are written to a temporary folder: AST base
(ASTConfig defaults: 12 x 768, 128 mel bins, 1024 frames), MERT-v1-95M and -330M shapes
(featpipe.models.mert.PRESETS), BEATs base (featpipe.models.beats.BASE_CFG), wav2vec2-base (Wav2Vec2Config defaults); VGGish's torch file for
comparison.

Overlap (``--overlap``): rows of MERT-95M (random, or ``--folder`` with real weights) from the
frame-level rule's windows against windows offset by half a hop, for several ``window`` and
``context``: how far a segment's row depends on where the windows start.

    python bench/bench_audio_encoders.py [--seconds 60] [--repeats 1] [--threads 1] [--only ast,mert-95M]
    python bench/bench_audio_encoders.py --overlap [--seconds 40] [--folder /path/MERT-v1-95M]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def music(seconds: float, seed: int = 0) -> np.ndarray:
    """(2, n) float32 at 48 kHz: tones changing every 0.1-0.4 s, some noise, a swelling level."""
    rng = np.random.default_rng(seed)
    n = round(seconds * 48_000)
    t = np.arange(n) / 48_000
    x = np.zeros(n)
    pos = 0
    while pos < n:
        ln = int(rng.uniform(0.1, 0.4) * 48_000)
        sl = slice(pos, min(n, pos + ln))
        for _ in range(3):
            x[sl] += rng.uniform(0.02, 0.15) * np.sin(2 * np.pi * rng.uniform(60, 4000) * t[sl])
        pos += ln
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * t / 7.0)) + 0.01 * rng.standard_normal(n)
    return np.stack([x, 0.8 * x]).astype(np.float32)


def write_clip(path: Path, wave: np.ndarray) -> None:
    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=1)
    vs.width, vs.height, vs.pix_fmt = 16, 16, "yuv420p"
    aus = out.add_stream("aac", rate=48000, layout="stereo")
    for i in range(wave.shape[1] // 48000):
        frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), i % 255, np.uint8), format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, 1)
        for p in vs.encode(frame):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    for i in range(0, wave.shape[1] - 1024 + 1, 1024):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, i : i + 1024]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 48000, i
        for p in aus.encode(frame):
            out.mux(p)
    for p in aus.encode():
        out.mux(p)
    out.close()


def write_checkpoints(folder: Path, which: set[str]) -> dict[str, str]:
    """Random checkpoints in the published layouts; spec -> --set pairs."""
    import torch

    from featpipe.models import mert
    from featpipe.models import vggish as vg

    torch.manual_seed(0)
    specs: dict[str, str] = {}
    if "vggish" in which:
        torch.save(vg.VGGish().state_dict(), folder / vg.MODEL_FILE)
        specs["vggish"] = ""
    if "ast" in which:
        from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

        ASTModel(ASTConfig()).save_pretrained(folder / "ast-base")
        ASTFeatureExtractor().save_pretrained(folder / "ast-base")
        specs[f"ast:{folder / 'ast-base'}"] = ""
    for size in ("95M", "330M"):
        if f"mert-{size}" in which:
            mert.write_random(folder / f"MERT-v1-{size}", mert.hub_config(size))
            specs[f"mert:{folder / f'MERT-v1-{size}'}"] = ""
    if "beats" in which:
        from featpipe.models import beats

        beats.write_random(folder / "BEATs_base_random.pt")
        specs[f"beats:{folder / 'BEATs_base_random.pt'}"] = ""
    if "wav2vec2" in which:
        from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

        Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(folder / "wav2vec2-base")
        Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder / "wav2vec2-base")
        specs[f"hf-audio:{folder / 'wav2vec2-base'}"] = ""
    return specs


def chunks_of(video: Path, needs, seconds: float):
    from featpipe.decode import DecodeParams, count_segments, iter_chunks, probe

    info = probe(str(video))
    params = DecodeParams(fps=1.0, max_seconds=seconds)
    _, valid = count_segments(info.duration, params)
    return list(iter_chunks(info, needs, params, "v", valid)), valid


def cost(args: argparse.Namespace) -> None:
    import torch

    from featpipe.decode import merge_needs
    from featpipe.extractors import ExtractOptions, build

    torch.set_num_threads(args.threads)
    which = set(args.only.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = tmp / "v.mp4"
        write_clip(video, music(args.seconds))
        specs = write_checkpoints(tmp, which)
        exts = {}
        for spec in specs:
            ext = build(spec, ExtractOptions(weights=str(tmp), batch_size=8))
            ext.check()
            ext.load("cpu")
            exts[spec] = ext
        needs = merge_needs([e.needs() for e in exts.values()])
        best_decode, chunks, valid = float("inf"), [], 0
        for _ in range(args.repeats):
            t = time.perf_counter()
            chunks, valid = chunks_of(video, needs, args.seconds)
            best_decode = min(best_decode, time.perf_counter() - t)
        print(
            f"{args.seconds} s video, {valid} segments, torch threads {args.threads}, "
            f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        print(f"{'step':34s} {'seconds':>8s} {'x decode':>9s}")
        print(
            f"{'decode (baseline, context ' + format(needs.audio_context, '.1f') + ' s)':34s} {best_decode:8.2f} {1.0:9.2f}"
        )
        for spec, ext in exts.items():
            best = float("inf")
            for _ in range(args.repeats):
                if hasattr(ext, "_encoded"):
                    ext._encoded.clear()
                t = time.perf_counter()
                for c in chunks:
                    ext.extract(c)
                best = min(best, time.perf_counter() - t)
            label = spec.split(":")[0] + (":" + Path(spec.split(":", 1)[1]).name if ":" in spec else "")
            print(f"{label:34s} {best:8.2f} {best / best_decode:9.2f}")
        print(f"load after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def overlap(args: argparse.Namespace) -> None:
    """Rows from two window grids offset by half a hop, for several (window, context): how much a
    segment's row depends on where windows start."""
    import torch

    from featpipe.extractors import build
    from featpipe.extractors.frames import Window, plan_windows, pool_segments, window_samples
    from featpipe.extractors.rates import resample
    from featpipe.models import mert

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = (
            Path(args.folder) if args.folder else mert.write_random(Path(tmp) / "MERT-v1-95M", mert.hub_config("95M"))
        )
        ext = build(f"mert:{folder}")
        ext.load("cpu")
        g = ext.geometry()
        wave = music(args.seconds, seed=1)
        x, _ = resample(wave.mean(axis=0), 0, g.rate)
        n = round(args.seconds * g.rate)
        x = x[:n]

        def rows(plan: list[Window]) -> np.ndarray:
            centres, parts = [], []
            for w in plan:
                st = ext.encode(x[None, w.start : w.start + w.length])[0]
                c = w.start + g.offset + g.stride * np.arange(st.shape[1])
                keep = (c >= w.keep_lo) & (c < w.keep_hi)
                centres.append(c[keep] / g.rate)
                parts.append(st[:, keep])
            return pool_segments(np.concatenate(centres), np.concatenate(parts, axis=1), 0, args.seconds, 1.0)

        def shifted(window: float, context: float) -> list[Window]:
            length, hop, ctx = window_samples(window, context, g)
            off = hop // 2 // g.stride * g.stride
            last = (n - length) // g.stride * g.stride
            out = [Window(0, length, 0, off)]
            for j in range((n - off) // hop + 1):
                lo = off + j * hop
                out.append(Window(min(max(lo - ctx, 0), last), length, lo, lo + hop))
            return out

        inner = slice(max(3, int(args.seconds * 0.1)), args.seconds - 3)
        print(
            f"{folder.name} ({'given' if args.folder else 'random'} weights), {args.seconds} s of music-like audio; "
            f"rows of interior segments from two window grids offset by half a hop; load {os.getloadavg()[0]:.1f}"
        )
        print(
            f"{'window':>6s} {'context':>7s} {'hop':>5s} {'min cos, all states':>20s} {'min cos, last':>14s} {'median, last':>13s}"
        )
        for window, context in ((5, 0), (5, 1), (10, 0), (10, 1), (10, 2), (10, 3)):
            a = rows(plan_windows(n, 0, n, window, context, g))[inner]
            b = rows(shifted(window, context))[inner]
            fa, fb = a.reshape(len(a), -1), b.reshape(len(b), -1)
            cos = (fa * fb).sum(1) / np.linalg.norm(fa, axis=1) / np.linalg.norm(fb, axis=1)
            la, lb = a[:, -1], b[:, -1]
            cl = (la * lb).sum(1) / np.linalg.norm(la, axis=1) / np.linalg.norm(lb, axis=1)
            print(
                f"{window:6.1f} {context:7.1f} {window - 2 * context:5.1f} {cos.min():20.5f} {cl.min():14.5f} {np.median(cl):13.5f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default="vggish,ast,beats,mert-95M,mert-330M,wav2vec2")
    ap.add_argument("--overlap", action="store_true")
    ap.add_argument("--folder", help="--overlap: a MERT folder with real weights (default: random MERT-95M)")
    args = ap.parse_args()
    overlap(args) if args.overlap else cost(args)


if __name__ == "__main__":
    main()
