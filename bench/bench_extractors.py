"""Per-extractor CPU cost on one 60 s video, random weights, against decoding it in the same command.

Writes a 60 s 640x360 30 fps H.264 + 48 kHz stereo AAC clip, decodes it once with featpipe's
decoder into chunks (native frames at the segment centres, audio with 0.51 s context; the
baseline), then times each extractor's ``extract`` over those chunks (best of ``--repeats``,
``--threads`` torch threads, 1 by default as on a Dask worker). Weight files in the official
layouts with random values are written to a temporary folder. With ``--memory`` it also runs
``process_video`` for ``resnet18-14x14`` in a fresh process and reports its peak RSS.

    python bench/bench_extractors.py [--seconds 60] [--repeats 3] [--threads 1] [--memory]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SPECS = ("priors", "vggish", "vggish --set resample=fir", "resnet18-14x14", "r2plus1d-18")


def write_video(path: Path, seconds: int) -> None:
    rng = np.random.default_rng(0)
    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=30)
    vs.width, vs.height, vs.pix_fmt = 640, 360, "yuv420p"
    vs.options = {"preset": "ultrafast", "x264-params": "keyint=150:min-keyint=150:scenecut=0"}
    aus = out.add_stream("aac", rate=48000, layout="stereo")
    base = rng.integers(0, 255, (360, 640, 3), np.uint8)
    for i in range(seconds * 30):
        frame = av.VideoFrame.from_ndarray(np.roll(base, i * 3, axis=1), format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, 30)
        for p in vs.encode(frame):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    t = np.arange(seconds * 48000) / 48000
    sig = (0.2 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.normal(size=len(t))).astype(np.float32)
    pcm = np.stack([sig, 0.7 * sig])
    for i in range(0, pcm.shape[1] - 1024 + 1, 1024):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i:i + 1024]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 48000, i
        for p in aus.encode(frame):
            out.mux(p)
    for p in aus.encode():
        out.mux(p)
    out.close()


def write_weights(folder: Path) -> None:
    import torch

    from featpipe.extractors import r2plus1d_18 as r21
    from featpipe.extractors import resnet18_14x14 as r
    from featpipe.models import vggish as vg

    torch.manual_seed(0)
    torch.save(vg.VGGish().state_dict(), folder / vg.MODEL_FILE)
    torch.save(r.build_network().state_dict(), folder / r.WEIGHTS_FILE)
    torch.save(r21.build_network().state_dict(), folder / r21.WEIGHTS_FILE)


def spec_options(spec: str, folder: Path):
    from featpipe.extractors import ExtractOptions

    name, _, extra = spec.partition(" --set ")
    pairs = tuple(tuple(e.split("=", 1)) for e in extra.split(",") if e)
    return name, ExtractOptions(weights=str(folder), batch_size=32, extra=pairs)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss(video: str, folder: str, q) -> None:
    """Run process_video for resnet18-14x14 twice (the first loads the model), sampling RSS."""
    import threading

    from featpipe.decode import DecodeParams
    from featpipe.run.extract_video import VideoJob, process_video

    name, opts = spec_options("resnet18-14x14", Path(folder))
    job = VideoJob("v", video, (name,), opts, DecodeParams(fps=1.0, max_seconds=60))
    process_video(job)
    base, peak, done = rss_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib())
            time.sleep(0.005)

    th = threading.Thread(target=sample)
    th.start()
    res = process_video(job)
    done.set()
    th.join()
    q.put((res.ok, res.reason, base, peak[0], sum(a.nbytes for a in res.arrays.values()) / 2**20))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--memory", action="store_true")
    args = ap.parse_args()
    import torch

    from featpipe.decode import DecodeParams, count_segments, iter_chunks, merge_needs, probe
    from featpipe.extractors import build

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = tmp / "v.mp4"
        write_video(video, args.seconds)
        write_weights(tmp)
        exts = {}
        for spec in SPECS:
            name, opts = spec_options(spec, tmp)
            ext = build(name, opts)
            ext.check()
            ext.load("cpu")
            exts[spec] = ext
        info = probe(str(video))
        params = DecodeParams(fps=1.0, max_seconds=args.seconds, chunk_segments=32)
        needs = merge_needs([e.needs() for e in exts.values()])
        _, valid = count_segments(info.duration, params)
        best_decode, chunks = float("inf"), []
        for _ in range(args.repeats):
            t = time.perf_counter()
            chunks = list(iter_chunks(info, needs, params, "v", valid))
            best_decode = min(best_decode, time.perf_counter() - t)
        load = os.getloadavg()[0]
        print(f"{args.seconds} s video, {valid} segments, torch threads {args.threads}, load {load:.1f}")
        print(f"{'step':28s} {'seconds':>8s} {'x decode':>9s}")
        print(f"{'decode (baseline)':28s} {best_decode:8.2f} {1.0:9.2f}")
        for spec, ext in exts.items():
            best = float("inf")
            for _ in range(args.repeats):
                t = time.perf_counter()
                for c in chunks:
                    ext.extract(c)
                best = min(best, time.perf_counter() - t)
            print(f"{spec:28s} {best:8.2f} {best / best_decode:9.2f}")
        if args.memory:
            q = mp.get_context("spawn").Queue()
            p = mp.get_context("spawn").Process(target=peak_rss, args=(str(video), str(tmp), q))
            p.start()
            ok, reason, before, after, held = q.get()
            p.join()
            print(f"process_video resnet18-14x14 (model loaded): ok={ok} {reason} RSS {before:.0f} MiB before, "
                  f"peak {after:.0f} MiB (+{after - before:.0f}); its result arrays {held:.1f} MiB")


if __name__ == "__main__":
    main()
