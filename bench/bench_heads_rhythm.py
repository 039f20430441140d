"""Does the AVQA head gain from the rhythm features and the beat timeline? Measured on `featpipe synth`.

For each synthetic set (one per seed, made beforehand with ``featpipe synth DIR --videos N
--seconds S --seed K``) this extracts, timing each run:

1. ``fixed``: ``--audio priors --audio rhythm --visual motion`` at 1 fps (MUSIC-AVQA's timeline);
2. ``beats``: the same with ``--fps 4 --timeline beats`` (one decode on a 4 fps grid, every feature
   pooled into beat segments);

and trains, with the same seed, the AVQA head on (1) without rhythm (``rhythm=False``), on (1)
with rhythm, on (2) with rhythm, and the question-only baseline; each evaluated on the set's test split. Prints the
per-type accuracies (n per type), the mean over the sets, and the extraction seconds per video.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_heads_rhythm.py /tmp/s1 /tmp/s2 /tmp/s3 --work /tmp/hr \\
        [--videos 120 [--skip 120]] [--json out.json]

The machine may be shared: the seconds are wall-clock, ratios within one set are what to read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from featpipe.run.config import ExtractConfig
from featpipe.decode import DecodeParams
from featpipe.heads.api import run_avqa_experiment
from featpipe.heads.metrics import TABLE_KEYS
from featpipe.run.plan import run_extract
from featpipe.run.beat_timeline import Timeline

KEYS = ("Audio/Comparative", "Audio-Visual/Comparative", "Audio-Visual/Temporal", "Audio", "Audio-Visual", "All")


def extract(videos: Path, cache: Path, audio: tuple[str, ...], visual: tuple[str, ...], fps: float,
            timeline: Timeline = Timeline()) -> float:
    t0 = time.perf_counter()
    s = run_extract(ExtractConfig(inputs=[str(videos)], cache=cache, audio=audio, visual=visual, workers=2,
                                  params=DecodeParams(fps=fps), timeline=timeline))
    if s.failed:
        raise RuntimeError(f"{len(s.failed)} videos failed: {s.failed[:2]}")
    return time.perf_counter() - t0


def one_set(data: Path, work: Path, seed: int, limit: int | None, skip: int = 0) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    paths = sorted((data / "videos").glob("*.mp4"))[skip:]  # consecutive ids: every split keeps its share
    paths = paths[:limit]
    videos = work / "videos.txt"
    videos.write_text("".join(f"{p}\n" for p in paths))
    n = len(paths)
    fixed, beats = work / "fixed.h5", work / "beats.h5"
    for p in (fixed, beats):
        p.unlink(missing_ok=True)
    cost = {"fixed": extract(videos, fixed, ("priors", "rhythm"), ("motion",), 1.0),
            "beats": extract(videos, beats, ("priors", "rhythm"), ("motion",), 4.0, Timeline("beats"))}
    split = [data / f"avqa-{s}.json" for s in ("train", "val", "test")]
    runs = {}
    for label, cache, rhythm in (("fixed", fixed, False), ("fixed+rhythm", fixed, True),
                                 ("beats+rhythm", beats, True)):
        t0 = time.perf_counter()
        r = run_avqa_experiment(cache, *split, work / label, seed=seed, echo=None, rhythm=rhythm)
        runs[label] = {"tables": r["tables"], "seconds": time.perf_counter() - t0}
    return {"videos": n, "cost_s_per_video": {k: v / n for k, v in cost.items()}, "runs": runs}


def pooling_cost(data: Path, n: int, repeats: int = 3) -> dict:
    """Seconds per video of ``process_video`` (priors + rhythm + motion at 4 fps, one process) on the
    fixed grid and with the beat timeline's pooling step after it: best of ``repeats``, interleaved."""
    from featpipe.contracts import ExtractOptions
    from featpipe.run.extract_video import VideoJob, process_video

    paths = sorted((data / "videos").glob("*.mp4"))[:n]
    opts = ExtractOptions(extra=(("beat_times", "1"),))
    best = {"seconds": float("inf"), "beats": float("inf")}
    for _ in range(repeats):
        for kind, tl in (("seconds", Timeline()), ("beats", Timeline("beats"))):
            t0 = time.perf_counter()
            for p in paths:
                r = process_video(VideoJob(p.stem, str(p), ("priors", "rhythm", "motion"), opts,
                                           DecodeParams(fps=4.0), timeline=tl))
                assert r.ok, r.reason
            best[kind] = min(best[kind], (time.perf_counter() - t0) / len(paths))
    return best


def rows(results: list[dict]) -> dict[str, dict[str, tuple[float, int]]]:
    """method -> key -> (mean accuracy over the sets, total n)."""
    out: dict[str, dict[str, tuple[float, int]]] = {}
    methods = [("question-only", "fixed", "question-only")] + [(lab, lab, "avqa-head")
                                                             for lab in ("fixed", "fixed+rhythm", "beats+rhythm")]
    for name, run, head in methods:
        out[name] = {}
        for k in TABLE_KEYS:
            cells = [r["runs"][run]["tables"][head][k] for r in results]
            accs = [c["accuracy"] for c in cells if c["accuracy"] is not None]
            out[name][k] = (float(np.mean(accs)) if accs else float("nan"), sum(c["n"] for c in cells))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", type=Path, help="featpipe synth folders (one seed each)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--videos", type=int, default=None, help="use N videos of each set (by id)")
    ap.add_argument("--skip", type=int, default=0, help="after skipping the first M (a disjoint subset)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--pooling", type=int, default=0, metavar="N",
                    help="only time the pooling step on the first N videos of the first set")
    ap.add_argument("--collect", action="store_true",
                    help="the arguments are earlier runs' set folders (their result.json): only print the table")
    a = ap.parse_args()
    if a.collect:
        report([json.loads((d / "result.json").read_text()) for d in a.sets], a.json)
        return
    if a.pooling:
        cost = pooling_cost(a.sets[0], a.pooling)
        print(f"process_video s/video at 4 fps: fixed {cost['seconds']:.3f}, beat timeline {cost['beats']:.3f} "
              f"(ratio {cost['beats'] / cost['seconds']:.3f})")
        return
    results = []
    for i, data in enumerate(a.sets):
        results.append(one_set(data, a.work / f"set{i}", a.seed, a.videos, a.skip))
        (a.work / f"set{i}" / "result.json").write_text(json.dumps(results[-1], indent=1))
        print(f"{data}: {results[-1]['videos']} videos, s/video {results[-1]['cost_s_per_video']}", flush=True)
    report(results, a.json)


def report(results: list[dict], out: Path | None) -> None:
    """Print the per-type table (mean over the sets, total n) and the extraction cost; write JSON."""
    table = rows(results)
    print(f"{'method':15s} " + " ".join(f"{k.replace('Audio-Visual', 'AV'):>16s}" for k in KEYS))
    for name, cells in table.items():
        print(f"{name:15s} " + " ".join(f"{100 * cells[k][0]:10.1f} n={cells[k][1]:<4d}" for k in KEYS))
    cost = {k: float(np.mean([r["cost_s_per_video"][k] for r in results])) for k in results[0]["cost_s_per_video"]}
    print("extraction s/video (2 workers):", {k: round(v, 3) for k, v in cost.items()})
    if out:
        out.write_text(json.dumps({"results": results, "cost": cost, "table": table}, indent=1))


if __name__ == "__main__":
    main()
