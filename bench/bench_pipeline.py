"""featpipe extract against a careful one-off script, on realistic clips, in one command.

Clips (bench/realistic_clips.py): 60 s, 30 fps, x264 medium with B-frames, a keyframe every 5 s,
stereo AAC 44.1 kHz, at 640x360 (1280x720 with --sizes). Each measurement is a fresh process
timed from start to exit (imports, model build, cluster start-up and shutdown included), and
the two sides alternate, the first of each round switching (script, featpipe | featpipe, script
| ...), so a busy machine moves both and neither always runs first.
The clips are read once before the first measurement, so no side pays a cold page cache.

  script     bench/oneoff_scripts.py: one process, PyAV decoding with its own threads, the
             model with torch threads = all cores, batches of 32, one video after another.
             clip: every frame decoded, the frame on screen at each segment centre through
             open_clip's own transform (`script`: the native frame, featpipe's pixels;
             `script-224`, with --script-224: a frame the decoder scaled to 224 px, cheaper, the
             issue's script). vggish: all audio at 48 kHz, moviepy's 16 kHz (MUSIC-AVQA's WAVs),
             one example per second. openl3: 1 s windows every 0.1 s, averaged per second.
             motion: every frame decoded, 5 a second kept at motion's size, all audio, and the
             features computed by the extractors' own arithmetic on one whole-video chunk.
             ast, beats, mert (not in the default run): PyAV's 48 kHz audio, mono, resampled once
             per video; AST a 10.24 s window centred on each segment (transformers' feature
             extractor and ASTModel), BEATs and MERT the frame-level rule of docs/features.md
             (10 s windows, 2 s context, frames pooled per segment; BEATs's last layer, MERT's 13
             hidden states), each model's own preprocessing. Random weights at real size in the
             published layouts (AST base, BEATs base, MERT-v1-95M), written once under --clips.
  featpipe   `featpipe extract ... --workers W` into a new cache (W x cores/W torch threads:
             the same thread budget).

Round 1 of every suite checks that the script and featpipe computed the same features
(cosine and largest difference over every row of every video; featpipe stores float16).
Each round gives a ratio, script seconds / featpipe seconds of that round's pair (above 1:
featpipe is faster); the verdict is the median over the rounds, printed with its spread (min-max)
and against the goal (--goal, 1.1x), so one pair disturbed by another job does not decide it.
The load average (1 min) is sampled at every start and end of a run; it includes the bench's own
processes (about 2 on 2 cores), so only values well above the core count mean other jobs.

    python bench/bench_pipeline.py                                   # 6 videos, clip + motion + vggish
    python bench/bench_pipeline.py --videos 24                       # the issue's criterion
    python bench/bench_pipeline.py --videos 24 --sizes 1280x720 --suites clip motion
    python bench/bench_pipeline.py --videos 4 --suites openl3        # ~100 CPU-s per video
    python bench/bench_pipeline.py --suites ast beats mert           # CPU: 2 videos of 10 s (see below)
    python bench/bench_pipeline.py --suites ast beats mert --videos 24 --seconds 60 --device cuda  # the issue's size
    python bench/bench_pipeline.py --profile --videos 6              # featpipe's time line, per phase

The audio encoders are slow on a CPU (docs/performance.md, "Audio encoders per 60 s video": AST
about 8 CPU-minutes per 60 s video, 60 windows of 10.24 s), so when every suite asked for is one of
them and the device is the CPU, --videos and --seconds default to 2 and 10 (the models keep their
real size); the issue's criterion (24 videos of 60 s) is for a GPU: add --device cuda.
    python bench/bench_pipeline.py --stages --videos 3 --unique 3    # per-stage CPU costs (GPU plan)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# name -> (featpipe extract arguments ({vggish}, {openl3}, ...: the random weight files), script variants)
SUITES = {
    "clip": (["--visual", "clip:ViT-B-32/random"], ["script", "script-224"]),
    "motion": (["--visual", "motion", "--audio", "priors"], ["script"]),
    "vggish": (["--audio", "vggish", "--weights", "vggish={vggish}"], ["script"]),
    "openl3": (["--audio", "openl3", "--weights", "openl3={openl3}"], ["script"]),
    "ast": (["--audio", "ast:{ast}"], ["script"]),
    "beats": (["--audio", "beats:{beats}"], ["script"]),
    "mert": (["--audio", "mert:{mert}"], ["script"]),
}
DEFAULT_SUITES = ["clip", "motion", "vggish"]
ENCODER_SUITES = {"ast", "beats", "mert"}  # minutes per video on a CPU: smaller defaults there
ENCODER_CPU_DEFAULTS = {"videos": 2, "seconds": 10.0}


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


# -- featpipe's own time line ------------------------------------------------------------------------
def profile(folder: str, args: list[str], t0: float, warm_load: bool = True) -> None:
    """One `featpipe extract` in this (fresh) process, timed from ``t0`` (``time.time()`` before the
    parent started it): imports, plan ready, each video done, the run's end, the process's end.
    ``warm_load=False``: the fork server only imports, the workers build the models (as before)."""
    from featpipe import cli  # the CLI module; imports featpipe
    from featpipe.run import plan as pipeline

    if not warm_load:
        warm = pipeline.warm_workers
        pipeline.warm_workers = lambda specs, workers, enabled=True, options=None: warm(specs, workers, enabled)

    marks: list[tuple[str, float]] = [("interpreter + imports of cli, featpipe", time.time())]
    orig = pipeline.run_extract

    def timed_run(cfg, on_progress=None, on_start=None):
        def start(total, todo, dash):
            marks.append((f"plan ready, workers checked ({todo} videos)", time.time()))
            if on_start:
                on_start(total, todo, dash)

        def progress(kind, result):
            marks.append((f"video {kind}", time.time()))
            if on_progress:
                on_progress(kind, result)
        try:
            return orig(cfg, progress, start)
        finally:
            marks.append(("run_extract returned (cluster closed)", time.time()))

    def mark(mod, name: str, what: str, cm: bool = False) -> None:
        fn = getattr(mod, name)

        def wrapped(*args, **kw):
            if cm:
                return _entered(fn(*args, **kw), what)
            marks.append((f"{what} starts", time.time()))
            try:
                return fn(*args, **kw)
            finally:
                marks.append((f"{what} done", time.time()))
        setattr(mod, name, wrapped)

    def _entered(ctx, what):
        class Ctx:
            def __enter__(self):
                marks.append((f"{what} starts", time.time()))
                try:
                    return ctx.__enter__()
                finally:
                    marks.append((f"{what} entered", time.time()))

            def __exit__(self, *exc):
                marks.append((f"{what}: closing", time.time()))
                return ctx.__exit__(*exc)
        return Ctx()

    from featpipe.run import dispatch

    pipeline.run_extract = timed_run
    mark(pipeline, "build_extractors", "client: build + check extractors")
    mark(pipeline, "warm_workers", "fork server start", cm=True)
    mark(dispatch, "connect", "cluster start", cm=True)
    mark(dispatch, "check_workers", "worker check")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            cli.main(["extract", folder, "-o", f"{tmp}/c.h5", "--quiet", *args], standalone_mode=False)
        except SystemExit as exc:  # extract exits with its status
            if exc.code:
                raise
        lines = Path(f"{tmp}/c.h5.report.jsonl").read_text().splitlines()
        inside = [json.loads(x)["seconds"] for x in lines if json.loads(x)["status"] == "done"]
    marks.append(("cache folder removed", time.time()))
    prev = t0
    for what, t in marks:
        print(f"  {t - t0:7.2f} s  (+{t - prev:5.2f})  {what}", flush=True)
        prev = t
    done = [t for what, t in marks if what.startswith("video")]
    if len(done) > 2:
        per = (done[-1] - done[0]) / (len(done) - 1)
        workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 2
        print(f"  first video done {done[0] - t0:.1f} s after start; then {per:.2f} s per video", flush=True)
        ready = next(t for what, t in marks if what.startswith("plan ready"))
        capacity = workers * (done[-1] - ready)
        print(f"  on the workers (process_video, from the report): mean {sum(inside) / len(inside):.2f} s per video; "
              f"busy {sum(inside) / capacity:.0%} of {workers} workers x {done[-1] - ready:.1f} s from plan ready to the "
              f"last video; the rest, {(capacity - sum(inside)) / len(inside):.2f} s per video, is dispatch, transfer, "
              "commit and the tail", flush=True)


# -- the benchmark -------------------------------------------------------------------------------
def timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - t


def agreement(cache_path: str, script_out: Path) -> str:
    """Worst row agreement between the script's features (``script_out/<feature>/<video>.npy``) and
    featpipe's cache, over every row of every video of every feature the script saved."""
    import numpy as np

    from featpipe.cache import open_cache

    cos, diff, rows, names = 1.0, 0.0, 0, []
    with open_cache(cache_path) as cache:
        for saved in sorted(p for p in script_out.iterdir() if p.is_dir()):
            name = next(f for f in cache.features if f == saved.name or f.startswith(saved.name))
            names.append(name)
            for vid in cache.videos:
                fp = np.asarray(cache.get(vid, name, np.float32).data, np.float64)
                sc = np.load(saved / f"{vid}.npy").astype(np.float64)
                n = min(len(fp), len(sc))
                a, b = fp[:n].reshape(n, -1), sc[:n].reshape(n, -1)  # a row may be (layers, D)
                c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
                cos = min(cos, float(c.min()))
                diff = max(diff, float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)))
                rows += n
    # float16 storage: 3e-4 measured; a 50 ms shift of VGGish's examples gives 0.985 and 0.2
    verdict = "same features" if cos >= 0.9999 and diff <= 2e-3 else "DIFFERENT FEATURES: the ratio compares unlike work"
    return f"{verdict} ({', '.join(names)}: {rows} rows, min cosine {cos:.6f}, max |diff| / max |value| {diff:.1e})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, help="videos per run (default 6; 2 for audio encoder suites on the CPU)")
    ap.add_argument("--seconds", type=float,
                    help="length of each clip (default 60; 10 for audio encoder suites on the CPU)")
    ap.add_argument("--sizes", nargs="+", default=["640x360"])
    ap.add_argument("--suites", nargs="+", default=DEFAULT_SUITES, choices=sorted(SUITES))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (odd: the median is a round)")
    ap.add_argument("--goal", type=float, default=1.1, help="the ratio featpipe should reach (median)")
    ap.add_argument("--clips", type=Path, default=Path(tempfile.gettempdir()) / "featpipe-bench-clips",
                    help="where clip sets (and the random weight files) are made once and reused")
    ap.add_argument("--script-224", action="store_true", help="CLIP: also time the script on 224 px decoder frames")
    ap.add_argument("--unique", type=int, default=6, help="distinct clips encoded per size (the rest are copies)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="for the model, on both sides")
    ap.add_argument("--stages", action="store_true", help="print per-stage CPU seconds per video and stop")
    ap.add_argument("--profile", action="store_true", help="print featpipe's time line for each suite and stop")
    ap.add_argument("--cold-load", action="store_true",
                    help="with --profile: also profile (alternating) with workers building the models themselves")
    ap.add_argument("--script", help=argparse.SUPPRESS)  # run as the one-off script (a child process)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)  # where the script saves its features
    ap.add_argument("--weights", help=argparse.SUPPRESS)  # the script's weight file
    ap.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    light = a.device == "cpu" and set(a.suites) <= ENCODER_SUITES
    for key, value in ENCODER_CPU_DEFAULTS.items():
        if getattr(a, key) is None:
            setattr(a, key, value if light else {"videos": 6, "seconds": 60.0}[key])
    threads = len(os.sched_getaffinity(0))
    if a.script in ("profile", "profile-cold"):  # before anything is imported here: the time line starts at 0
        profile(a.files[0], a.files[2:], float(a.files[1]), a.script == "profile")
        return
    if a.script:  # importing only what the script itself needs: its start-up is timed too
        from oneoff_scripts import run

        run(a.script, a.files, threads, a.device, a.weights, a.out)
        return
    from oneoff_scripts import random_weights

    weights = {k: str(v) for k, v in random_weights(a.clips / "weights", a.suites).items()}
    from realistic_clips import clip_set

    env = dict(os.environ, FEATPIPE_NO_DOWNLOAD="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    featpipe = [sys.executable, "-c", "import sys; from featpipe.cli import main; sys.argv[0] = 'featpipe'; main()"]
    print(f"{threads} cores; {a.workers} featpipe workers; {a.rounds} rounds, interleaved; {a.videos} videos of "
          f"{a.seconds:g} s; ratio = script s / featpipe s per round, median and spread", flush=True)
    table = []
    for size in a.sizes:
        w, h = (int(v) for v in size.split("x"))
        files = [str(p) for p in clip_set(a.clips, a.videos, w, h, a.unique, a.seconds)]
        for f in files:  # a warm page cache for every measurement, the first included
            Path(f).read_bytes()
        folder = str(Path(files[0]).parent)
        if a.stages:
            import torch

            torch.set_num_threads(1)
            print(f"\n{size}: CPU seconds per 60 s video (process time, mean over the clips; "
                  f"load average {os.getloadavg()[0]:.1f})")
            for k, v in stages(files[:a.unique]).items():
                print(f"  {k:48s} {v:6.3f}")
            continue
        for suite in a.suites:
            args, variants = SUITES[suite]
            args = [x.format(**weights) for x in args]
            if a.profile:
                for r in range(a.rounds if a.cold_load else 1):
                    for kind in ("profile", "profile-cold") if a.cold_load else ("profile",):
                        print(f"\n{size}, {a.videos} videos, {suite}, {kind}: featpipe's time line "
                              f"(load {os.getloadavg()[0]:.1f})", flush=True)
                        subprocess.run([sys.executable, __file__, "--script", kind, "--", folder, repr(time.time()),
                                        "--workers", str(a.workers), "--device", a.device, *args], env=env, check=True)
                continue
            variants = [v for v in variants if v != "script-224" or a.script_224]
            runs: dict[str, list[float]] = {v: [] for v in [*variants, "featpipe"]}
            loads: list[float] = []
            with tempfile.TemporaryDirectory() as keep:
                for r in range(a.rounds):
                    for v in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                        loads.append(os.getloadavg()[0])
                        first = r == 0
                        if v == "featpipe":
                            cache = f"{keep}/c.h5" if first else f"{keep}/c{r}.h5"
                            runs[v].append(timed([*featpipe, "extract", folder, "-o", cache, "--workers",
                                                  str(a.workers), "--quiet", "--device", a.device, *args], env))
                        else:
                            out = Path(keep, v) if first and v == variants[0] else None
                            if out:
                                out.mkdir()
                            runs[v].append(timed([sys.executable, __file__, "--script", f"{suite}:{v}", "--device",
                                                  a.device, *(["--weights", weights[suite]] if suite in weights else []),
                                                  *(["--out", str(out)] if out else []), *files], env))
                        loads.append(os.getloadavg()[0])
                        print(f"  ({suite} {v}: {runs[v][-1]:.1f} s, load {loads[-1]:.1f})", flush=True)
                check = agreement(f"{keep}/c.h5", Path(keep, variants[0]))
            fps = runs["featpipe"]
            load = f"{min(loads):.1f}-{max(loads):.1f}"
            print(f"\n{size}, {a.videos} videos, {suite} ({' '.join(args)}); load average {load}")
            print(f"  script vs featpipe features: {check}")
            mark = "" if check.startswith("same") else " (DIFFERENT FEATURES)"
            print(f"  {'run':12s} {'seconds per round':>28s} {'s/video':>8s} {'ratio: median (min-max)':>24s}")
            for v, ts in runs.items():
                per = " ".join(f"{t:6.1f}" for t in ts)
                ratios = [t / f for t, f in zip(ts, fps)]
                med = statistics.median(ratios)
                spread = f"{med:.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
                print(f"  {v:12s} {per:>28s} {statistics.median(ts) / a.videos:8.2f} {spread:>24s}", flush=True)
                if v != "featpipe":
                    verdict = "meets" if med >= a.goal else "below"
                    print(f"  {v}: median ratio {med:.2f}x {verdict} the goal {a.goal:.2f}x "
                          f"(worst round {min(ratios):.2f}x, best {max(ratios):.2f}x)")
                    table.append(f"| {suite}{'' if v == 'script' else ' (' + v + ')'}{mark} | {size} | {a.videos} | "
                                 f"{statistics.median(ts):.1f} | {statistics.median(fps):.1f} | **{med:.2f}x** | "
                                 f"{min(ratios):.2f}-{max(ratios):.2f} | {load} |")
    if table:
        print(f"\nMarkdown (median seconds per run over {a.rounds} interleaved rounds; ratio = script / featpipe "
              f"per round, median and min-max; {a.workers} workers):\n")
        print("| suite | size | videos | script s | featpipe s | ratio (median) | ratio min-max | load average |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        print("\n".join(table))


if __name__ == "__main__":
    main()
