"""Bulk-read speed of the cache against numpy reading the same bytes.

Writes N videos x T segments x D float16 through the real CacheWriter, then times (best of R,
warm page cache, same process):
  cache.load(feature)         every video's rows, as a list of arrays (what heads use)
  cache.batch(ids, feature)   the padded (N, T, D) array
  np.load(one .npy)           the same bytes in one file: the ceiling
  np.load(per-video .npy)     one file per video, the field's usual layout
and prints ratios against the single-.npy baseline (higher is better, 1.0 = numpy speed).

    python bench/bench_read.py [--videos 2000] [--segments 60] [--dim 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from featpipe.cache import CacheWriter, open_cache
from featpipe.extractors.base import OutputSpec


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=2000)
    ap.add_argument("--segments", type=int, default=60)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    data = rng.standard_normal((a.videos, a.segments, a.dim)).astype(np.float16)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        with CacheWriter(tmp / "c.h5", {"fps": 1.0, "seg_len": 1.0}) as w:
            w.ensure_feature(OutputSpec("f", (a.dim,), "visual"), {"spec": "f", "weights": "none"})
            w.start()
            for i in range(a.videos):
                w.commit({"video_id": f"{i:08d}", "source": {}}, {"f": data[i]})
        write_s = time.perf_counter() - t
        np.save(tmp / "all.npy", data)
        (tmp / "per").mkdir()
        for i in range(a.videos):
            np.save(tmp / "per" / f"{i:08d}.npy", data[i])
        files = sorted((tmp / "per").iterdir())
        cache = open_cache(tmp / "c.h5")
        ids = cache.videos
        mb = data.nbytes / 2**20
        baseline = best(lambda: np.load(tmp / "all.npy"), a.repeats)
        rows = {
            "np.load(one .npy)": baseline,
            "cache.load(feature, dtype=None)": best(lambda: cache.load("f", ids, dtype=None), a.repeats),
            "cache.batch(ids, feature) float32": best(lambda: cache.batch(ids, "f"), a.repeats),
            "np.load(one .npy).astype(float32)": best(lambda: np.load(tmp / "all.npy").astype(np.float32), a.repeats),
            "np.load(per-video .npy)": best(lambda: [np.load(f) for f in files], a.repeats),
            "open_cache() (parse records)": best(lambda: open_cache(tmp / "c.h5").close(), a.repeats),
        }
        cache.close()
    print(f"{a.videos} videos x {a.segments} x {a.dim} float16 = {mb:.0f} MiB; "
          f"written through CacheWriter in {write_s:.2f} s ({a.videos / write_s:.0f} commits/s, {mb / write_s:.0f} MiB/s)")
    print(f"{'read':38s} {'seconds':>8s} {'MiB/s':>8s} {'ratio vs one .npy':>18s}")
    for name, s in rows.items():
        print(f"{name:38s} {s:8.3f} {mb / s:8.0f} {baseline / s:18.2f}")


if __name__ == "__main__":
    main()
