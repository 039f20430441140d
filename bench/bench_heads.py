"""One training epoch of the AVQA head at MUSIC-AVQA scale, on synthetic arrays in memory.

Scale (defaults): 32,000 training questions over 6,400 videos (about 5 questions per video, as
in MUSIC-AVQA's training split), 60 one-second segments, 512-d audio and 512-d visual segment
features, 512-d question embeddings, 42 answers. The arrays are random; only speed is measured.

Reports seconds per epoch and how that time splits into forward+backward, the optimiser step
and everything else (making batches: gathering each batch's videos from memory, numpy -> torch),
for each torch thread count asked for. Also one epoch of the question-only baseline, and with
``--spatial`` one epoch of the spatial head (:class:`heads.spatial.AvqaSpatialNet`) on the
weight-free widths: 70-d ``priors`` audio (9 stereo level-difference dims) and 118-d ``motion``
visual rows (a 4x4 grid, 7 cell blocks).

    .venv/bin/python bench/bench_heads.py [--threads 1 2] [--questions 32000] [--spatial] [--json out.json]

The machine may be shared: report its load with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from featpipe.heads.batches import AvqaArrays, AvqaBatches, masked_stats
from featpipe.heads.estimators import set_stats
from featpipe.heads.models import AvqaNet, QuestionOnlyNet
from featpipe.heads.qa import BASELINE_DEFAULTS, DEFAULTS
from featpipe.heads.spatial import AvqaSpatialNet
from featpipe.heads.train import fit, seed_everything, torch_threads


def make_data(n_q: int, n_v: int, T: int, d_a: int, d_v: int, d_q: int, n_ans: int, seed: int = 0) -> AvqaArrays:
    rng = np.random.default_rng(seed)
    return AvqaArrays(
        q=rng.standard_normal((n_q, d_q), dtype=np.float32),
        vid=rng.integers(0, n_v, n_q),
        y=rng.integers(0, n_ans, n_q),
        a=rng.standard_normal((n_v, T, d_a), dtype=np.float32),
        v=rng.standard_normal((n_v, T, d_v), dtype=np.float32),
        mask_a=np.ones((n_v, T), bool), mask_v=np.ones((n_v, T), bool))


def one_epoch(model: torch.nn.Module, data: AvqaArrays, hp: dict, use_video: bool) -> dict:
    hist = fit(model, AvqaBatches(data, hp["batch_size"], use_video), None, lr=hp["lr"], max_epochs=1,
               patience=1, seed=0)
    e = hist["epochs"][0]
    return {"seconds": e["seconds"], "fwd_bwd": e["fwd_bwd_seconds"], "step": e["step_seconds"],
            "batches": e["batch_seconds"], "outside_fwd_bwd_share": 1 - e["fwd_bwd_seconds"] / e["seconds"],
            "batches_share": e["batch_seconds"] / e["seconds"]}


def spatial_epoch(args: argparse.Namespace, threads: int) -> dict:
    data = make_data(args.questions, args.videos, args.segments, 70, 118, args.dim, args.answers)
    stats = {"q": masked_stats(data.q), "a": masked_stats(data.a, data.mask_a), "v": masked_stats(data.v, data.mask_v)}
    with torch_threads(threads):
        seed_everything(0)
        head = AvqaSpatialNet(args.dim, args.answers, args.segments, a_dim=70, v_dim=118, grid=4,
                               cells=[16 * k for k in range(7)], ild=list(range(59, 68)),
                               hidden=DEFAULTS["hidden"], pointers=DEFAULTS["pointers"], dropout=DEFAULTS["dropout"])
        set_stats(head, stats)
        return one_epoch(head, data, DEFAULTS, True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=32_000)
    ap.add_argument("--videos", type=int, default=6_400)
    ap.add_argument("--segments", type=int, default=60)
    ap.add_argument("--dim", type=int, default=512, help="audio, visual and question width")
    ap.add_argument("--answers", type=int, default=42)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--spatial", action="store_true", help="also time the spatial head on priors+motion widths")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    data = make_data(args.questions, args.videos, args.segments, args.dim, args.dim, args.dim, args.answers)
    stats = {"q": masked_stats(data.q), "a": masked_stats(data.a, data.mask_a), "v": masked_stats(data.v, data.mask_v)}
    setup = time.perf_counter() - t0
    out = {"scale": vars(args), "setup_seconds": setup, "load_before": os.getloadavg(),
           "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "runs": []}
    print(f"synthetic data + statistics: {setup:.1f} s "
          f"({(data.a.nbytes + data.v.nbytes) / 2**30:.2f} GiB of segment features in memory)")
    for n in args.threads:
        with torch_threads(n):
            seed_everything(0)
            head = AvqaNet(args.dim, args.answers, args.segments, a_dim=args.dim, v_dim=args.dim,
                            hidden=DEFAULTS["hidden"], dropout=DEFAULTS["dropout"])
            set_stats(head, stats)
            r = one_epoch(head, data, DEFAULTS, True)
            seed_everything(0)
            base = QuestionOnlyNet(args.dim, args.answers, hidden=BASELINE_DEFAULTS["hidden"])
            set_stats(base, stats)
            b = one_epoch(base, data, BASELINE_DEFAULTS, False)
        run = {"threads": n, "avqa_head": r, "question_only": b}
        print(f"threads={n}: AVQA head {r['seconds']:.1f} s/epoch (forward+backward {r['fwd_bwd']:.1f} s, "
              f"optimiser {r['step']:.2f} s, batches {r['batches']:.2f} s; outside forward/backward "
              f"{100 * r['outside_fwd_bwd_share']:.1f}%, of which making batches {100 * r['batches_share']:.1f}%); "
              f"question-only {b['seconds']:.2f} s/epoch")
        if args.spatial:
            run["spatial_head"] = sp = spatial_epoch(args, n)
            print(f"threads={n}: spatial head (priors 70-d + motion 118-d) {sp['seconds']:.1f} s/epoch "
                  f"(forward+backward {sp['fwd_bwd']:.1f} s, optimiser {sp['step']:.2f} s, "
                  f"batches {sp['batches']:.2f} s)")
        out["runs"].append(run)
    out["load_after"] = os.getloadavg()
    print(f"load average before {out['load_before'][0]:.2f}, after {out['load_after'][0]:.2f} "
          f"on {out['cores']} cores (a shared machine slows every number)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
