"""A `featpipe study` at MUSIC-AVQA scale on synthetic arrays: 5 arms x 5 seeds by default.

Scale (``--scale 1``): 9,288 videos x 60 one-second segments; 31,927 training, 4,568 validation and
9,129 test questions (MUSIC-AVQA's split sizes; videos split 70 / 10 / 20 %); features of the real
widths written through featpipe's CacheWriter (float16): ``vggish`` 128-d and ``clap`` 512-d audio,
``clip`` 768-d visual, and with ``--layers L`` a layer-wise ``mert`` ``(L, 768)`` audio feature.
Questions are the 33 real templates (tests/data/music-avqa-33-templates.json) with random videos
and answers: only speed is measured. Arms (default): vggish, clap, clip, vggish+clip, clap+clip.

Reports the wall time of the whole study (``run_study``: reading every feature once, the runs on
a LocalCluster, the report) and how it splits: the time to read the features once, the runs'
own seconds, and what reading per run would have cost (read time x runs), and the memory of the
whole process tree during the study (this process and the LocalCluster's workers, sampled every
0.2 s): the peak of the summed RSS and of the summed PSS (proportional set size: a page shared by
several processes, e.g. a memory-mapped file, is counted once in all).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_study.py --work /tmp/bs [--scale 0.05] [--seeds 5]
        [--epochs 30] [--workers 2] [--layers 0] [--json out.json]

The machine may be shared: the script prints ``uptime``'s load with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from featpipe.avqa import Question, write_questions
from featpipe.cache import CacheWriter
from featpipe.extractors.base import OutputSpec

ROOT = Path(__file__).resolve().parents[1]
FULL = {"videos": 9288, "train": 31927, "val": 4568, "test": 9129}
TIMELINE = {"fps": 1.0, "seg_len": 1.0, "max_seconds": None, "pad": "repeat"}
ARMS = ["vggish=vggish", "clap=clap", "clip=clip", "vggish+clip=vggish,clip", "clap+clip=clap,clip"]


def _prov(spec: str) -> dict:
    return {
        "spec": spec,
        "weights": "bench",
        "featpipe": "bench",
        "decode": {"fps": 1.0, "pad": "repeat", "pyav": "bench", "chunk_segments": 16},
    }


def make_set(work: Path, scale: float, layers: int, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    n_v = max(30, round(FULL["videos"] * scale))
    vids = [f"{i:08d}" for i in range(n_v)]
    cut = {
        "train": vids[: int(0.7 * n_v)],
        "val": vids[int(0.7 * n_v) : int(0.8 * n_v)],
        "test": vids[int(0.8 * n_v) :],
    }
    templates = json.loads((ROOT / "tests/data/music-avqa-33-templates.json").read_text())
    answers = sorted({t["anser"] for t in templates})
    files, qid = {}, 1
    for split, vs in cut.items():
        qs = []
        for _ in range(max(10, round(FULL[split] * scale))):
            t = templates[rng.integers(len(templates))]
            g, ty = json.loads(t["type"])
            values = tuple(json.loads(t["templ_values"]))
            text = t["question_content"]
            qs.append(
                Question(qid, vs[rng.integers(len(vs))], text, text, values, g, ty, answers[rng.integers(len(answers))])
            )
            qid += 1
        files[split] = work / f"avqa-{split}.json"
        write_questions(files[split], qs)
    specs = [
        OutputSpec("vggish", (128,), "audio"),
        OutputSpec("clap", (512,), "audio"),
        OutputSpec("clip", (768,), "visual"),
    ]
    if layers:
        specs.append(OutputSpec("mert", (layers, 768), "audio", attrs={"layers": list(range(layers))}))
    files["cache"] = work / "cache.h5"
    with CacheWriter(files["cache"], TIMELINE) as w:
        for s in specs:
            w.ensure_feature(s, _prov(s.name))
        w.start()
        for i, v in enumerate(vids):
            w.commit(
                {"video_id": v, "source": {"size": i, "mtime": 0.0}},
                {s.name: rng.standard_normal((60, *s.shape), dtype=np.float32) for s in specs},
            )
    return files


class TreeMemory:
    """Peak summed RSS and PSS (MiB) of this process and its descendants, sampled in a thread:
    RSS every ``every`` s, PSS every ``pss_every``-th sample. PSS walks each process's page tables
    (about 17 ms of kernel time per worker holding the memory-mapped features): sampled every
    0.2 s it took half a core from the study it measured."""

    def __init__(self, every: float = 1.0, pss_every: int = 5) -> None:
        self.pss_every = pss_every
        self.every, self.peak_rss, self.peak_pss = every, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import psutil

        me = psutil.Process()
        n = 0
        while not self._stop.is_set():
            rss = pss = 0
            full = n % self.pss_every == 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    info = proc.memory_full_info() if full else proc.memory_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
            self.peak_rss = max(self.peak_rss, rss / 2**20)
            if full:
                self.peak_pss = max(self.peak_pss, pss / 2**20)
            n += 1
            self._stop.wait(self.every)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of MUSIC-AVQA's videos and questions")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--layers", type=int, default=0, help="add a layer-wise mert arm with this many layers")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from featpipe import open_cache
    from featpipe.heads.arms import load_inputs, parse_arms, resolve
    from featpipe.heads.study import run_study

    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    files = make_set(args.work, args.scale, args.layers)
    t_make = time.perf_counter() - t0
    arms = ARMS + (["mert=mert"] if args.layers else [])
    with open_cache(files["cache"]) as cache:  # what reading every feature once costs
        t1 = time.perf_counter()
        metas = resolve(cache, parse_arms(arms, None)[0])
        load_inputs(cache, metas, files["train"], files["val"], {"test": files["test"]})
        t_read = time.perf_counter() - t1
    out = args.work / "study"
    shutil.rmtree(out, ignore_errors=True)
    t2 = time.perf_counter()
    with TreeMemory() as mem:
        run_study(
            str(files["cache"]),
            str(files["train"]),
            str(files["val"]),
            [str(files["test"])],
            arms,
            str(out),
            seeds=args.seeds,
            hparams={"max_epochs": args.epochs, "patience": args.epochs},
            workers=args.workers,
            progress=False,
            echo=None,
        )
    t_study = time.perf_counter() - t2
    s = json.loads((out / "study.json").read_text())
    run_s = [r["seconds"] for runs in s["runs"].values() for r in runs]
    result = {
        "scale": args.scale,
        "videos": len({q["video_id"] for f in ("train", "val", "test") for q in json.loads(files[f].read_text())}),
        "arms": len(arms) + 1,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "workers": args.workers,
        "make_set_s": round(t_make, 1),
        "read_features_once_s": round(t_read, 2),
        "study_wall_s": round(t_study, 1),
        "runs": len(run_s),
        "run_s_mean": round(float(np.mean(run_s)), 2),
        "run_s_sum": round(float(np.sum(run_s)), 1),
        "reading_per_run_would_add_s": round(t_read * (len(run_s) - 1), 1),
        "layers": args.layers,
        "peak_rss_mib": round(mem.peak_rss),
        "peak_pss_mib": round(mem.peak_pss),
        "load": os.getloadavg(),
        "cores": os.cpu_count(),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
