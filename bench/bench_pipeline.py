"""featpipe extract against a careful one-off script, on realistic clips, in one command.

Clips (bench/realistic_clips.py): 60 s, 30 fps, x264 medium with B-frames, a keyframe every 5 s,
stereo AAC 44.1 kHz, at 640x360 (and 1280x720 with --sizes). Each measurement is a fresh process
timed from start to exit (imports, model build and start-up included), and the two sides run
interleaved (script, featpipe, script, featpipe, ...) so a busy machine moves both:

  script     one process, PyAV decoding every frame with its own threads, keeping the frame on
             screen at each segment centre, the model with torch threads = all cores; for CLIP it
             runs open_clip's own transform (`script`: on the native frame, the pixels featpipe
             feeds; `script-224`: on a frame the decoder already scaled to 224 px, cheaper, what
             the issue's script did). For `motion`+`priors` it only decodes every frame and all
             audio and converts what the features read (their arithmetic, ~0.3 s per video, is left
             out: the baseline is flattered).
  featpipe   `featpipe extract ... --workers W` into a new cache.

Ratios are script seconds / featpipe seconds (above 1: featpipe is faster), from the sum over
rounds. The load average is printed beside each row: on a shared machine only ratios mean much.

    python bench/bench_pipeline.py                       # quick: 6 videos, CLIP + motion/priors
    python bench/bench_pipeline.py --videos 24 --suites clip --script-224
    python bench/bench_pipeline.py --sizes 640x360 1280x720 --videos 4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SUITES = {  # name -> (featpipe extract arguments, script variants)
    "clip": (["--visual", "clip:ViT-B-32/random"], ["script", "script-224"]),
    "motion": (["--visual", "motion", "--audio", "priors"], ["script"]),
}


# -- the one-off script ---------------------------------------------------------------------------
def centre_frames(path: str, short: int | None) -> list:
    """Decode every frame (PyAV's threads); the frame on screen at each second's centre, as PIL images."""
    import av

    out, targets = [], None
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        n = int(float(c.duration / 1e6) if c.duration else float(s.duration * s.time_base))
        targets = [k + 0.5 for k in range(n)]
        prev, i = None, 0
        for f in c.decode(s):
            while i < n and f.time > targets[i] and prev is not None:
                out.append(_image(prev, short))
                i += 1
            prev = f
        while i < n and prev is not None:
            out.append(_image(prev, short))
            i += 1
    return out


def _image(frame, short: int | None):
    if short is None:
        return frame.to_image()
    w, h = frame.width, frame.height
    s = short / min(w, h)
    return frame.reformat(width=round(w * s), height=round(h * s), format="rgb24").to_image()


def script_clip(files: list[str], threads: int, short: int | None, device: str = "cpu") -> None:
    import open_clip
    import torch

    torch.set_num_threads(threads)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", device=device,
                                                                 precision="fp16" if device == "cuda" else "fp32")
    model.eval()  # random weights
    dtype = torch.float16 if device == "cuda" else torch.float32
    with torch.inference_mode():
        for f in files:
            x = torch.stack([preprocess(im) for im in centre_frames(f, short)])
            model.encode_image(x.to(device, dtype)).float().cpu().numpy()


def script_motion(files: list[str], threads: int) -> None:
    import av

    for f in files:
        with av.open(f) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            for k, frame in enumerate(c.decode(s)):
                if k % 6 == 3:  # 5 frames a second at 30 fps, at the size motion reads
                    frame.reformat(width=114, height=64, format="rgb24").to_ndarray()
        with av.open(f) as c:
            res = av.AudioResampler(format="fltp", layout="stereo", rate=48_000)
            for frame in c.decode(audio=0):
                for r in res.resample(frame):
                    r.to_ndarray()


# -- per-stage CPU costs (for the GPU plan in docs/performance.md) ---------------------------------
def stages(files: list[str]) -> dict[str, float]:
    """CPU seconds (this process, one decoder thread) per video of each CPU stage of a GPU run."""
    import av
    import open_clip

    pre336 = open_clip.image_transform(336, is_train=False)  # ViT-L/14@336's: bicubic, shortest side, crop
    cost = {"decode every frame (1 thread)": 0.0, "60 centre frames -> RGB (native)": 0.0,
            "open_clip transform @336 on 60 native frames": 0.0, "audio decode + resample to 48 kHz": 0.0}
    for f in files:
        t = time.process_time()
        keep = []
        with av.open(f) as c:
            s = c.streams.video[0]
            s.thread_count = 1
            for k, frame in enumerate(c.decode(s)):
                if k % 30 == 15:
                    keep.append(frame)
        cost["decode every frame (1 thread)"] += time.process_time() - t
        t = time.process_time()
        images = [fr.to_image() for fr in keep]
        cost["60 centre frames -> RGB (native)"] += time.process_time() - t
        t = time.process_time()
        for im in images:
            pre336(im)
        cost["open_clip transform @336 on 60 native frames"] += time.process_time() - t
        t = time.process_time()
        with av.open(f) as c:
            res = av.AudioResampler(format="fltp", layout="stereo", rate=48_000)
            for frame in c.decode(audio=0):
                res.resample(frame)
        cost["audio decode + resample to 48 kHz"] += time.process_time() - t
    return {k: v / len(files) for k, v in cost.items()}


# -- the benchmark -------------------------------------------------------------------------------
def timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--sizes", nargs="+", default=["640x360"])
    ap.add_argument("--suites", nargs="+", default=["clip", "motion"], choices=sorted(SUITES))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clips", type=Path, default=Path(tempfile.gettempdir()) / "featpipe-bench-clips",
                    help="where clip sets are made once and reused")
    ap.add_argument("--script-224", action="store_true", help="CLIP: also time the script on 224 px decoder frames")
    ap.add_argument("--unique", type=int, default=6, help="distinct clips encoded per size (the rest are copies)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="for the model, on both sides")
    ap.add_argument("--stages", action="store_true", help="print per-stage CPU seconds per video and stop")
    ap.add_argument("--script", help=argparse.SUPPRESS)  # run as the one-off script (a child process)
    ap.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    threads = len(os.sched_getaffinity(0))
    if a.script:
        if a.script == "motion:script":
            script_motion(a.files, threads)
        else:
            script_clip(a.files, threads, 224 if a.script.endswith("-224") else None, a.device)
        return
    from realistic_clips import clip_set

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    featpipe = [sys.executable, "-c", "import sys; from featpipe.cli import main; sys.argv[0] = 'featpipe'; main()"]
    print(f"{threads} cores; {a.workers} featpipe workers; {a.rounds} rounds, interleaved; "
          "ratio = script s / featpipe s (sum over rounds)", flush=True)
    for size in a.sizes:
        w, h = (int(v) for v in size.split("x"))
        files = [str(p) for p in clip_set(a.clips, a.videos, w, h, a.unique)]
        if a.stages:
            import torch

            torch.set_num_threads(1)
            print(f"\n{size}: CPU seconds per 60 s video (process time, mean over the clips; "
                  f"load average {os.getloadavg()[0]:.1f})")
            for k, v in stages(files[:a.unique]).items():
                print(f"  {k:48s} {v:6.3f}")
            continue
        folder = str(Path(files[0]).parent)
        for suite in a.suites:
            args, variants = SUITES[suite]
            variants = [v for v in variants if v != "script-224" or a.script_224]
            runs: dict[str, list[float]] = {v: [] for v in [*variants, "featpipe"]}
            loads: list[float] = []
            for _ in range(a.rounds):
                for v in runs:
                    loads.append(os.getloadavg()[0])
                    if v == "featpipe":
                        with tempfile.TemporaryDirectory() as tmp:
                            cmd = [*featpipe, "extract", folder, "-o", f"{tmp}/c.h5", "--workers", str(a.workers),
                                   "--quiet", "--device", a.device, *args]
                            runs[v].append(timed(cmd, env))
                    else:
                        runs[v].append(timed([sys.executable, __file__, "--script", f"{suite}:{v}", "--device",
                                              a.device, *files], env))
                    print(f"  ({suite} {v}: {runs[v][-1]:.1f} s, load {os.getloadavg()[0]:.1f})", flush=True)
            loads.append(os.getloadavg()[0])
            fp = sum(runs["featpipe"])
            print(f"\n{size}, {a.videos} videos, {suite} ({' '.join(args)}); load average "
                  f"{min(loads):.1f} to {max(loads):.1f}")
            print(f"  {'run':12s} {'seconds per round':>28s} {'s/video':>8s} {'ratio':>6s}")
            for v, ts in runs.items():
                per = " ".join(f"{t:6.1f}" for t in ts)
                print(f"  {v:12s} {per:>28s} {sum(ts) / len(ts) / a.videos:8.2f} {sum(ts) / fp:6.2f}", flush=True)

if __name__ == "__main__":
    main()
