"""Extraction throughput on a named clip set, against a plain PyAV decode of the same files.

The clip set is `featpipe synth --videos N --seed 0 --seconds S` (224x128, 15 fps, stereo AAC).
Measured in one command, on the same files:
  baseline   decode every video frame to RGB and all audio with PyAV, sequentially, in this process
             (what one-off scripts do before running any model)
  process    featpipe.video.process_video for `priors` + `motion`, sequentially, in this process
  extract    featpipe's full pipeline (run_extract: LocalCluster with --workers, cache commits)
Ratios are baseline seconds / featpipe seconds (higher is faster).

    python bench/bench_extract.py [--videos 20] [--seconds 10] [--workers 2] [--set DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av

from featpipe.decode import DecodeParams
from featpipe.extractors.base import ExtractOptions
from featpipe.pipeline import ExtractConfig, run_extract
from featpipe.synth import make_dataset
from featpipe.video import VideoJob, process_video


def plain_decode(path: Path) -> None:
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            frame.to_ndarray(format="rgb24")
    with av.open(str(path)) as c:
        for frame in c.decode(audio=0):
            frame.to_ndarray()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--set", type=Path, default=None, help="reuse a synth folder")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = a.set or Path(tmp) / "set"
        if not (root / "videos").is_dir():
            make_dataset(root, a.videos, seed=0, seconds=a.seconds)
        files = sorted((root / "videos").glob("*.mp4"))
        n = len(files)
        t = time.perf_counter()
        for f in files:
            plain_decode(f)
        base = time.perf_counter() - t
        t = time.perf_counter()
        for f in files:
            r = process_video(VideoJob(f.stem, str(f), ("priors", "motion"), ExtractOptions(), DecodeParams()))
            assert r.ok, r.reason
        proc = time.perf_counter() - t
        t = time.perf_counter()
        summary = run_extract(ExtractConfig(inputs=[str(root / "videos")], cache=Path(tmp) / "c.h5",
                                            visual=("motion",), audio=("priors",), workers=a.workers))
        full = time.perf_counter() - t
        assert summary.ok and len(summary.done) == n
    print(f"clip set: featpipe synth --videos {n} --seed 0 --seconds {a.seconds:g} (224x128, 15 fps, stereo AAC)")
    print(f"{'run':52s} {'seconds':>8s} {'videos/s':>9s} {'ratio':>6s}")
    print(f"{'baseline: PyAV decode of every frame + audio':52s} {base:8.2f} {n / base:9.2f} {1.0:6.2f}")
    print(f"{'process_video priors+motion, 1 process':52s} {proc:8.2f} {n / proc:9.2f} {base / proc:6.2f}")
    print(f"{f'featpipe extract priors+motion, {a.workers} workers (incl. start)':52s} {full:8.2f} "
          f"{n / full:9.2f} {base / full:6.2f}")


if __name__ == "__main__":
    main()
