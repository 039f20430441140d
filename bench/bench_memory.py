"""Peak memory of a Dask worker and of the client for 60 s videos: rows streamed vs rows in memory.

For each feature set, two runs of ``featpipe extract``'s library path (:func:`featpipe.run.plan.run_extract`)
on the same videos, each on a fresh one-worker ``LocalCluster`` (one thread, as ``--workers``
gives): with streaming (the default, :mod:`featpipe.run.spool`) and with ``stream=False`` (``--no-stream``,
the baseline: every row of a video in the worker, sent whole to the client). The model is loaded by
a 2 s warm-up video first; then both processes' peak RSS (``VmHWM``) is reset
(``/proc/self/clear_refs``) and the reported number is the peak during the run above the RSS
before it. Every process runs with ``MALLOC_MMAP_THRESHOLD_=131072`` (the script re-executes
itself with it): glibc then maps every buffer over 128 KiB on its own and unmaps it when freed, so
RSS follows the live arrays instead of a heap that keeps freed pages resident for reuse (with
glibc's growing default threshold a client receiving 11.5 MiB results showed no growth at all).
Feature sets, random weights:

* ``resnet18-14x14``: AVST's (512, 14, 14) maps and the pooled 512-d vector, float16 in the cache
  (11.5 MiB per 60 s video stored, 24 MiB float32 while computed);
* ``clip tokens``: a tiny random CLIP tower with ViT-L/14-336's token grid and width (577 tokens
  of 768 values: ``--tokens`` on ``clip:ViT-L-14-336``, TSPM/QA-TIGER's frame model, stores this
  shape; 51 MiB per video stored), so the cost is the rows, not the network.

    python bench/bench_memory.py [--seconds 60] [--videos 2] [--batch-size 32] [--only resnet|tokens]

``--batch-size`` (featpipe's default 32) sets the chunk: a chunk holds at least a batch of frames,
so a streaming worker holds a batch's activations and a chunk's rows. ``--scaling`` instead runs
:func:`featpipe.run.extract_video.process_video` in this process on 40 s and 60 s videos (the token set),
streamed and in memory: the streamed peak must not grow with the video.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MMAP_THRESHOLD = 128 * 1024
WIDE_CLIP = {  # ViT-L/14-336's token grid (24 x 24 + CLS) and embedding width, one narrow layer
    "embed_dim": 768,
    "vision_cfg": {"image_size": 336, "layers": 1, "width": 64, "patch_size": 14, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}


def _status() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB."""
    d = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(d["VmRSS"].split()[0]) / 1024, int(d["VmHWM"].split()[0]) / 1024


def _reset_peak() -> float:
    """Reset this process's peak RSS to its current RSS; the RSS in MiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status()[0]


def _run(cache: Path, inputs: list[str], visual: tuple[str, ...], options, stream: bool, address: str):
    from featpipe.run.config import ExtractConfig
    from featpipe.decode import DecodeParams
    from featpipe.run.plan import run_extract

    cfg = ExtractConfig(inputs=inputs, cache=cache, visual=visual, params=DecodeParams(max_seconds=60),
                        options=options, scheduler=address, stream=stream)
    summary = run_extract(cfg)
    if summary.failed or summary.streamed is not stream:
        raise SystemExit(f"run failed or did not {'stream' if stream else 'keep rows in memory'}: {summary.failed}")
    return summary


def measure(name: str, visual: tuple[str, ...], options, videos: list[str], warm: str, tmp: Path, stream: bool) -> dict:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        tag = f"{name.split()[0]}-{'stream' if stream else 'memory'}"
        _run(tmp / f"{tag}-warm.h5", [warm], visual, options, stream, cluster.scheduler_address)
        (w_base,) = client.run(_reset_peak).values()
        c_base = _reset_peak()
        summary = _run(tmp / f"{tag}.h5", videos, visual, options, stream, cluster.scheduler_address)
        (w_peak,) = [hwm for _, hwm in client.run(_status).values()]
        c_peak = _status()[1]
    size = sum(p.stat().st_size for p in tmp.glob(f"{tag}.h5"))
    return {"worker": w_peak - w_base, "client": c_peak - c_base, "seconds": summary.seconds,
            "cache_mib": size / 2**20, "worker_base": w_base, "client_base": c_base}


def scaling(tmp: Path, options) -> None:
    """Peak RSS of process_video itself for 40 s and 60 s videos, streamed vs in memory (one process)."""
    from bench_extractors import write_video
    from featpipe.decode import DecodeParams
    from featpipe.run.spool import SpoolFolder, SpoolSink
    from featpipe.run.extract_video import VideoJob, process_video

    import torch

    torch.set_num_threads(1)  # as on a worker
    for s in (2, 40, 60):
        write_video(tmp / f"s{s}.mp4", s)
    folder = SpoolFolder(tmp / "scaling.h5").open()

    def job(s: int) -> VideoJob:
        return VideoJob("v", str(tmp / f"s{s}.mp4"), ("clip:wide-tokens/random",), options, DecodeParams(max_seconds=60))

    process_video(job(2))  # loads the model
    print("| video | in memory | streamed |\n| --- | --- | --- |")
    for s in (40, 60):
        peaks = []
        for stream in (False, True):
            base = _reset_peak()
            r = process_video(job(s), sink=SpoolSink(folder.target("0123456789ab-1")) if stream else None)
            if not r.ok:
                raise SystemExit(r.reason)
            peaks.append(_status()[1] - base)
            del r
        print(f"| {s} s | {peaks[0]:.0f} MiB | {peaks[1]:.0f} MiB |", flush=True)
    folder.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--only", choices=["resnet", "tokens"], default=None)
    ap.add_argument("--scaling", action="store_true", help="process_video on 40 s and 60 s videos, in this process")
    args = ap.parse_args()
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != str(MMAP_THRESHOLD):  # before any buffer exists; workers inherit it
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)})

    import torch

    from bench_extractors import write_video
    from featpipe.contracts import ExtractOptions
    from featpipe.extractors import resnet18_14x14

    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        (tmp / "clipcfg").mkdir()
        (tmp / "clipcfg" / "wide-tokens.json").write_text(json.dumps(WIDE_CLIP))
        os.environ["FEATPIPE_OPENCLIP_CONFIGS"] = str(tmp / "clipcfg")  # before any worker starts
        if args.scaling:
            return scaling(tmp, ExtractOptions(tokens=True, batch_size=args.batch_size))
        torch.manual_seed(0)
        torch.save(resnet18_14x14.build_network().state_dict(), tmp / resnet18_14x14.WEIGHTS_FILE)
        write_video(tmp / "clip.mp4", args.seconds)
        write_video(tmp / "warm.mp4", 2)
        videos = []
        for i in range(args.videos):
            (tmp / "in").mkdir(exist_ok=True)
            shutil.copy(tmp / "clip.mp4", tmp / "in" / f"v{i}.mp4")
            videos.append(str(tmp / "in" / f"v{i}.mp4"))
        cases = {"resnet": ("resnet18-14x14 (512x14x14 + 512)", ("resnet18-14x14",),
                            ExtractOptions(weights=str(tmp), batch_size=args.batch_size)),
                 "tokens": ("clip tokens (577x768)", ("clip:wide-tokens/random",),
                            ExtractOptions(tokens=True, batch_size=args.batch_size))}
        print(f"{args.videos} videos of {args.seconds} s, 640x360; batch {args.batch_size}; one worker, one thread; "
              "peak RSS above the RSS before the run (MiB)")
        print("| feature set | worker, in memory | worker, streamed | ratio | client, in memory | client, streamed "
              "| ratio | cache MiB |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for key, (name, visual, options) in cases.items():
            if args.only and key != args.only:
                continue
            mem = measure(name, visual, options, videos, str(tmp / "warm.mp4"), tmp, stream=False)
            st = measure(name, visual, options, videos, str(tmp / "warm.mp4"), tmp, stream=True)
            print(f"| {name} | {mem['worker']:.0f} | {st['worker']:.0f} | {st['worker'] / max(mem['worker'], 1):.2f} "
                  f"| {mem['client']:.0f} | {st['client']:.0f} | {st['client'] / max(mem['client'], 1):.2f} "
                  f"| {st['cache_mib']:.0f} |", flush=True)
            print(f"  (run seconds: in memory {mem['seconds']:.1f}, streamed {st['seconds']:.1f}; RSS before: "
                  f"worker {mem['worker_base']:.0f} / {st['worker_base']:.0f}, client {mem['client_base']:.0f} / "
                  f"{st['client_base']:.0f})", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
