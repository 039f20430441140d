"""`featpipe export` throughput against np.save writing the same files.

Writes N videos x 60 segments x D float16 through the real CacheWriter (default: MUSIC-AVQA's
9,288 videos of CLIP ViT-L/14@336 frames, (60, 768)), then, in the same process:
  baseline   np.save of a (60, D) float32 array to N files in one folder (the write ceiling)
  export     featpipe's export (generic layout, --length 60) into an empty folder: read, fit,
             float32, sha256, atomic write
  rerun      the same export again: every file found unchanged (what a resume after kill -9 does)
interleaved --repeats times, and prints the best files/s, MiB/s and ratios against the baseline,
plus the process's peak RSS.

    python bench/bench_export.py [--videos 9288] [--dim 768] [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from featpipe.cache import CacheWriter
from featpipe.extractors.base import OutputSpec
from featpipe.interop import export, generic_layout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=9288)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="work folder to use (default: a temporary one)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(dir=a.keep))
    try:
        rng = np.random.default_rng(0)
        block = rng.standard_normal((64, 60, a.dim)).astype(np.float16)
        t = time.perf_counter()
        with CacheWriter(tmp / "c.h5", {"fps": 1.0, "seg_len": 1.0, "max_seconds": 60.0, "pad": "repeat"}) as w:
            w.ensure_feature(OutputSpec("f", (a.dim,), "visual"), {"spec": "f", "weights": "none"})
            w.start()
            for i in range(a.videos):
                w.commit({"video_id": f"{i:08d}", "source": {"size": i, "mtime": 0}}, {"f": block[i % 64]})
        print(f"cache: {a.videos} videos x (60, {a.dim}) float16 written in {time.perf_counter() - t:.1f} s")
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        lay = generic_layout({"f": "frames"}, {}, 60)
        arr = block[0].astype(np.float32)
        t_base, t_exp, t_rerun = [], [], []
        for r in range(a.repeats):  # interleaved, fresh folders: a busy disk slows both sides alike
            base = tmp / "baseline"
            base.mkdir()
            t = time.perf_counter()
            for i in range(a.videos):
                np.save(base / f"{i:08d}.npy", arr)
            t_base.append(time.perf_counter() - t)
            shutil.rmtree(base)
            shutil.rmtree(tmp / "out", ignore_errors=True)
            t = time.perf_counter()
            s1 = export(tmp / "c.h5", lay, tmp / "out")
            t_exp.append(time.perf_counter() - t)
            t = time.perf_counter()
            s2 = export(tmp / "c.h5", lay, tmp / "out")
            t_rerun.append(time.perf_counter() - t)
            assert s1.written == a.videos and s2.unchanged == a.videos, (s1, s2)
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print("seconds per run:", {"baseline": [round(x, 2) for x in t_base], "export": [round(x, 2) for x in t_exp],
                                   "rerun": [round(x, 2) for x in t_rerun]})
        t_base, t_exp, t_rerun = min(t_base), min(t_exp), min(t_rerun)
        mib = a.videos * 60 * a.dim * 4 / 2**20
        print(f"best of {a.repeats}:")
        print(f"{'run':<44} {'seconds':>8} {'files/s':>9} {'MiB/s':>7} {'ratio':>6}")
        for name, sec in (("np.save, one file per video (baseline)", t_base),
                          ("featpipe export (read, fit, float32, atomic)", t_exp),
                          ("featpipe export again (all unchanged)", t_rerun)):
            print(f"{name:<44} {sec:8.2f} {a.videos / sec:9.0f} {mib / sec:7.0f} {t_base / sec:6.2f}")
        print(f"peak RSS: {rss0 / 1024:.0f} MiB before export, {rss1 / 1024:.0f} MiB after "
              f"({mib:.0f} MiB exported)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
