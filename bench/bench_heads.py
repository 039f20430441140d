"""The AVQA head and the question-only baseline at MUSIC-AVQA scale, on synthetic arrays.

Scale (defaults): 31,927 training questions (MUSIC-AVQA's train split) over the training
videos, 60 one-second segments, VGGish 128-d audio and CLIP ViT-L/14 768-d visual segment rows
(float32 in memory), 512-d question embeddings, 42 answers. MUSIC-AVQA has 9,288 videos; its
split is by video, about 70% of them training, so the questions fall on ``--train-videos``
(default 6,502) videos, each the rows of its video (``--videos``, 9,288, sets only the count
of the arrays' rows the training never reads: they are not allocated). With ``--tokens
14x1024`` the head also attends over ToMe-14 patch tokens (float16, 14 x 1024 per segment):
at full scale those are 11 GiB for the training videos, so they run on ``--token-scale`` of
the questions and videos (default 0.1) and the seconds are also given scaled back up (cost is
linear in the videos).

Everything goes through the estimators' ``fit`` (training statistics, then the epochs), the
path ``featpipe train-head`` and ``featpipe study`` take. ``--compare TREE`` runs the same
measurements with another checkout's code (e.g. main before a change) in the same command,
interleaved with this tree's (``--rounds``), and reports the ratio of their seconds: median and
spread. The process's CPU seconds are reported too: with one torch thread they are the seconds
of one free core, which a shared machine moves less than wall time. The load average is
printed with every number.

    python bench/bench_heads.py                                   # 30 epochs, both heads
    python bench/bench_heads.py --epochs 2 --compare ../featpipe-baseline --rounds 2
    python bench/bench_heads.py --tokens 14x1024 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_data(n_q: int, n_v: int, T: int, d_a: int, d_v: int, d_q: int, n_ans: int,
              tokens: tuple[int, int] | None, seed: int = 0):
    from featpipe.heads.batches import AvqaArrays

    rng = np.random.default_rng(seed)
    tok = None
    if tokens:
        p, d = tokens
        tok = np.empty((n_v, T, p, d), np.float16)
        for i in range(0, n_v, 64):  # in blocks: never a float32 copy of all tokens
            tok[i:i + 64] = rng.standard_normal((min(64, n_v - i), T, p, d), dtype=np.float32)
    return AvqaArrays(
        q=rng.standard_normal((n_q, d_q), dtype=np.float32), vid=rng.integers(0, n_v, n_q),
        y=rng.integers(0, n_ans, n_q), a=rng.standard_normal((n_v, T, d_a), dtype=np.float32),
        v=rng.standard_normal((n_v, T, d_v), dtype=np.float32), tok=tok,
        mask_a=np.ones((n_v, T), bool), mask_v=np.ones((n_v, T), bool))


def measure(args: argparse.Namespace) -> dict:
    """One tree's measurements, in this process (``--worker``)."""
    import torch

    from featpipe.heads.estimators import AvqaHead, QuestionOnlyHead

    torch.set_num_threads(args.threads)
    scale = args.token_scale if args.tokens else 1.0
    tokens = tuple(int(x) for x in args.tokens.lower().split("x")) if args.tokens else None
    n_q, n_v = round(args.questions * scale), round(args.train_videos * scale)
    t0 = time.perf_counter()
    data = make_data(n_q, n_v, args.segments, args.audio_dim, args.visual_dim, args.q_dim, args.answers, tokens)
    out = {"setup_s": time.perf_counter() - t0, "questions": n_q, "videos": n_v, "load": [os.getloadavg()[0]]}
    t = time.perf_counter()  # once per process: torch.optim's first use imports torch._dynamo
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    out["first_optimiser_s"] = time.perf_counter() - t
    for name, head in (("avqa", AvqaHead(arch="temporal", max_epochs=args.epochs, patience=args.epochs)),
                       ("question_only", QuestionOnlyHead(max_epochs=args.epochs, patience=args.epochs))):
        if name not in args.heads or (name == "question_only" and args.tokens):
            continue
        t, cpu = time.perf_counter(), time.process_time()
        head.fit(data, data.y)
        total, cpu = time.perf_counter() - t, time.process_time() - cpu
        ep = head.history_["epochs"]
        out[name] = {"fit_s": total, "fit_cpu_s": cpu, "epochs_s": sum(e["seconds"] for e in ep),
                     "stats_and_setup_s": total - sum(e["seconds"] for e in ep),
                     "fwd_bwd_s": sum(e["fwd_bwd_seconds"] for e in ep), "step_s": sum(e["step_seconds"] for e in ep),
                     "batches_s": sum(e["batch_seconds"] for e in ep)}
        out["load"].append(os.getloadavg()[0])
    return out


def run_tree(tree: Path, argv: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", *argv], env=env,
                         capture_output=True, text=True, check=False)
    if res.returncode:
        raise SystemExit(f"{tree}: the measurement failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=31_927)
    ap.add_argument("--videos", type=int, default=9_288, help="MUSIC-AVQA's videos (reported; not allocated)")
    ap.add_argument("--train-videos", type=int, default=6_502, help="videos the training questions fall on")
    ap.add_argument("--segments", type=int, default=60)
    ap.add_argument("--audio-dim", type=int, default=128)
    ap.add_argument("--visual-dim", type=int, default=768)
    ap.add_argument("--q-dim", type=int, default=512)
    ap.add_argument("--answers", type=int, default=42)
    ap.add_argument("--tokens", default=None, help="patch tokens per segment, PxD (ToMe-14: 14x1024)")
    ap.add_argument("--token-scale", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--heads", nargs="+", default=["avqa", "question_only"], choices=["avqa", "question_only"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the heads' default is 1)")
    ap.add_argument("--compare", type=Path, default=None, help="another checkout to time in the same command")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(measure(args)))
        return
    argv = [a for a in sys.argv[1:] if a not in ("--compare", str(args.compare))]
    argv = [a for i, a in enumerate(argv) if not (a == "--rounds" or (i and argv[i - 1] == "--rounds"))]
    here = Path(__file__).resolve().parents[1]
    trees = [("this tree", here)] + ([("compare", args.compare.resolve())] if args.compare else [])
    results: dict[str, list[dict]] = {name: [] for name, _ in trees}
    for r in range(args.rounds):
        for name, tree in (trees if r % 2 == 0 else trees[::-1]):
            res = run_tree(tree, argv)
            results[name].append(res)
            print(f"round {r + 1}, {name}: " + json.dumps(res), flush=True)
    mine = results["this tree"]
    scale = (1 / args.token_scale) if args.tokens else 1.0
    print(f"\n{mine[0]['questions']} questions over {mine[0]['videos']} videos, {args.segments} segments, audio "
          f"{args.audio_dim}, visual {args.visual_dim}" + (f", tokens {args.tokens} (float16)" if args.tokens else "")
          + f", question {args.q_dim}; {args.epochs} epochs, {args.threads} torch thread(s), {os.cpu_count()} cores")
    print("| head | fit s (median) | fit CPU s | of which statistics + setup | per epoch | forward+backward | optimiser "
          "| batches |" + (" x full scale |" if args.tokens else "")
          + (" ratio vs compare, seconds (median, min-max) | ratio, CPU s |" if args.compare else ""))
    print("| --- " * (8 + bool(args.tokens) + 2 * bool(args.compare)) + "|")
    for head in ("avqa", "question_only"):
        if head not in mine[0]:
            continue
        fits = [m[head]["fit_s"] for m in mine]
        med = statistics.median(fits)
        row = [head, f"{med:.1f}", f"{statistics.median(m[head]['fit_cpu_s'] for m in mine):.1f}",
               f"{statistics.median(m[head]['stats_and_setup_s'] for m in mine):.1f}",
               f"{statistics.median(m[head]['epochs_s'] for m in mine) / args.epochs:.2f}",
               f"{statistics.median(m[head]['fwd_bwd_s'] for m in mine):.1f}",
               f"{statistics.median(m[head]['step_s'] for m in mine):.1f}",
               f"{statistics.median(m[head]['batches_s'] for m in mine):.1f}"]
        if args.tokens:
            row.append(f"{med * scale:.0f}")
        if args.compare:
            ratios = [c[head]["fit_s"] / m[head]["fit_s"] for c, m in zip(results["compare"], mine)]
            row.append(f"**{statistics.median(ratios):.2f}x** ({min(ratios):.2f}-{max(ratios):.2f})")
            cpu = [c[head]["fit_cpu_s"] / m[head]["fit_cpu_s"] for c, m in zip(results["compare"], mine)]
            row.append(f"{statistics.median(cpu):.2f}x ({min(cpu):.2f}-{max(cpu):.2f})")
        print("| " + " | ".join(row) + " |")
    print(f"not in the fits: synthetic data {statistics.median(m['setup_s'] for m in mine):.1f} s; the process's "
          f"first torch optimiser (imports torch._dynamo) {statistics.median(m['first_optimiser_s'] for m in mine):.1f} s")
    loads = [x for rs in results.values() for m in rs for x in m["load"]]
    print(f"load average (1 min) over the runs: {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
