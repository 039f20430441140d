"""Bulk-read speed of the cache against numpy reading the same bytes, in interleaved rounds.

Writes N videos x T segments x D float16 through the real CacheWriter, then runs R rounds; in
each round every pair below runs once, baseline and featpipe back to back (the order flips every
round), warm page cache, one process. Each pair's ratio (baseline seconds / featpipe seconds,
higher is better, 1.0 = numpy's speed) is taken per round; the report gives the median ratio
and its spread (min-max over the rounds), so a busy machine moves both sides of every ratio, and
the median ratio of the process's CPU seconds (copies out of the page cache are CPU work; time
spent waiting for the core or the disk is not), which a shared machine moves less.

  cache.load(feature, dtype=None)   vs np.load(one .npy holding the same bytes): the ceiling
  cache.batch(ids, feature)         vs np.load(one .npy).astype(float32)
  cache.batch, numpy's cast         the same with torch hidden (a script that never imports torch)
  cache.batch                       vs np.load + torch's float16 -> float32 cast (the cast's ceiling)
  cache.load                        vs np.load(one .npy per video), the field's usual layout
  CacheBatches + DataLoader epoch   vs a DataLoader over one .npy per video (the usual Dataset),
                                    with 0 and 2 loader workers (--loader)

    python bench/bench_read.py [--videos 2000] [--segments 60] [--dim 512] [--rounds 9] [--loader]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from featpipe.cache import CacheWriter, open_cache
from featpipe.cache.dataset import CacheBatches
from featpipe.extractors.base import OutputSpec


@contextlib.contextmanager
def torch_hidden():
    """Run as a script that never imported torch would (the reader then casts with numpy)."""
    saved = sys.modules["torch"]
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.modules["torch"] = saved


def timed(fn) -> tuple[float, float]:
    """Wall and CPU seconds of this process (reads from the page cache are CPU work: copies)."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


class NpyVideos(torch.utils.data.Dataset):
    """The field's usual loader: one .npy per video, float32 tensors, default collate."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.load(self.files[i]).astype(np.float32))


def epoch(loader) -> int:
    n = 0
    for item in loader:
        x = item["f"] if isinstance(item, dict) else item
        n += x.shape[0]
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=2000)
    ap.add_argument("--segments", type=int, default=60)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--loader", action="store_true", help="also time DataLoader epochs (0 and 2 workers)")
    ap.add_argument("--batch-size", type=int, default=64, help="DataLoader batch (videos)")
    ap.add_argument("--torch-threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.torch_threads)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((a.videos, a.segments, a.dim)).astype(np.float16)
    load_before = os.getloadavg()
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
        one = tmp / "all.npy"
        assert np.array_equal(np.concatenate(cache.load("f", ids, dtype=None)).reshape(data.shape), data)
        assert np.array_equal(cache.batch(ids, "f")[0], data.astype(np.float32))

        def batch_numpy():
            with torch_hidden():
                cache.batch(ids, "f")

        def np_torch_cast():
            x = np.load(one)
            out = np.empty(x.shape, np.float32)
            torch.from_numpy(out).copy_(torch.from_numpy(x))

        pairs = {  # name: (baseline, featpipe)
            "cache.load(f, dtype=None) vs np.load(one .npy)": (lambda: np.load(one), lambda: cache.load("f", ids, dtype=None)),
            "cache.batch -> float32 vs np.load + astype": (lambda: np.load(one).astype(np.float32), lambda: cache.batch(ids, "f")),
            "cache.batch, numpy cast (no torch) vs np.load + astype": (lambda: np.load(one).astype(np.float32), batch_numpy),
            "cache.batch vs np.load + torch cast": (np_torch_cast, lambda: cache.batch(ids, "f")),
            "cache.load vs np.load per video .npy": (lambda: [np.load(f) for f in files], lambda: cache.load("f", ids, dtype=None)),
        }
        if a.loader:
            dl = torch.utils.data.DataLoader
            for workers in (0, 2):
                batches = CacheBatches(tmp / "c.h5", ["f"], batch_size=a.batch_size, length=a.segments)
                pairs[f"CacheBatches epoch vs per-video .npy Dataset, {workers} workers"] = (
                    lambda w=workers: epoch(dl(NpyVideos(files), batch_size=a.batch_size, shuffle=True, num_workers=w)),
                    lambda w=workers, b=batches: epoch(dl(b, batch_size=None, shuffle=True, num_workers=w)))
        for base, feat in pairs.values():  # warm-up: page cache, imports, first allocations
            base(), feat()
        times: dict[str, list[tuple[tuple[float, float], tuple[float, float]]]] = {k: [] for k in pairs}
        for r in range(a.rounds):
            for name, (base, feat) in pairs.items():
                if r % 2:
                    f_s, b_s = timed(feat), timed(base)
                else:
                    b_s, f_s = timed(base), timed(feat)
                times[name].append((b_s, f_s))
        t = time.perf_counter()
        for _ in range(5):
            open_cache(tmp / "c.h5").close()
        open_s = (time.perf_counter() - t) / 5
        cache.close()
    load_after = os.getloadavg()
    mb = data.nbytes / 2**20
    print(f"{a.videos} videos x {a.segments} x {a.dim} float16 = {mb:.0f} MiB; written through CacheWriter in "
          f"{write_s:.2f} s ({a.videos / write_s:.0f} commits/s, {mb / write_s:.0f} MiB/s); open_cache {open_s * 1e3:.1f} ms")
    print(f"{a.rounds} interleaved rounds; load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after, "
          f"{os.cpu_count()} cores; torch threads {a.torch_threads}")
    print()
    print("| pair | baseline s (median) | featpipe s (median) | ratio, median | ratio, min-max | ratio of CPU s, median |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, ts in times.items():
        ratios = [b[0] / f[0] for b, f in ts]
        cpu = [b[1] / f[1] for b, f in ts if f[1] > 0 and b[1] > 0]
        loader = name.startswith("CacheBatches")  # the workers' CPU is in other processes
        print(f"| {name} | {statistics.median(b[0] for b, _ in ts):.3f} | {statistics.median(f[0] for _, f in ts):.3f} | "
              f"**{statistics.median(ratios):.2f}x** | {min(ratios):.2f}-{max(ratios):.2f} | "
              f"{'-' if loader or not cpu else f'{statistics.median(cpu):.2f}x'} |")
    if a.loader:
        print(f"\nDataLoader epochs: {a.videos} videos, batch {a.batch_size}; featpipe videos/s (median): " + ", ".join(
            f"{k.rsplit(', ', 1)[1]}: {a.videos / statistics.median(f[0] for _, f in ts):.0f}"
            for k, ts in times.items() if k.startswith("CacheBatches")))


if __name__ == "__main__":
    main()
