"""`rhythm`: cost per 60 s of media against `priors` in the same command, and beat/tempo accuracy
on random `featpipe synth` scenes (the scene files' "rhythm" truth, mir_eval).

Speed: one synthetic 60 s stereo scene cut into the chunks the decoder hands over (16 segments,
each extractor's own audio context); CPU time of `priors.compute` and `rhythm.compute` over all
chunks, best of --repeats, and `process_video` on the same scene as an .mp4 with priors alone and
priors + rhythm (one decode serves both: the difference is rhythm's analysis).

Accuracy: scenes `sample_scene(seed, i, seconds)` for i < --videos, rendered straight to audio (no
AAC), beat F-measure (+-70 ms, all beats, no 5 s trim) against the pulse beats, and the median local
tempo of the pulse's segments within 4 % of the pulse tempo (strict) or of either of its two
metrical levels (`tempi_bpm`, mir_eval's tempo detection). Then, on 3 x --videos scenes of seed
+ 1: the onset rate against the note onsets, and the side cue on scenes with a sounding instrument
on the left and one on the right whose rates are 1.5x apart (synth's 'more rhythmic' rule).

    python bench/bench_rhythm.py [--seconds 60] [--repeats 3] [--videos 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import mir_eval
import numpy as np

from featpipe.decode import DecodeParams
from featpipe.extractors import AUDIO_RATE, Chunk, ExtractOptions, build
from featpipe.extractors.rhythm import COL
from featpipe.synth.beats import ATTACK_KINDS, rhythm_truth
from featpipe.synth.facts import more_rhythmic
from featpipe.synth.dataset import write_video
from featpipe.synth.scene import sample_scene
from featpipe.synth.sound import render_audio
from featpipe.run.extract_video import VideoJob, process_video


def chunks(x: np.ndarray, seconds: float, ctx: float, size: int = 16) -> list[Chunk]:
    """The decoder's chunks of ``x``: ``size`` one-second segments, ``ctx`` s of audio each side."""
    n = int(round(seconds))
    out = []
    for first in range(0, n, size):
        count = min(size, n - first)
        a0, a1 = round((first - ctx) * AUDIO_RATE), round((first + count + ctx) * AUDIO_RATE)
        audio = np.zeros((x.shape[0], a1 - a0), np.float32)
        lo, hi = max(a0, 0), min(a1, x.shape[1])
        audio[:, lo - a0:hi - a0] = x[:, lo:hi]
        out.append(Chunk("v", first, count, 1.0, seconds, audio=audio, audio_context=ctx))
    return out


def cpu_best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def speed(seconds: float, repeats: int) -> None:
    sc = sample_scene(0, 3, seconds)
    x = render_audio(sc)
    pri, rhy = build("priors"), build("rhythm")
    rhy.load("cpu")
    cp, cr = chunks(x, seconds, pri.needs().audio_context), chunks(x, seconds, rhy.needs().audio_context)
    rhy.compute(cr[0])  # numba compiles librosa's beat tracker once per process
    tp = cpu_best(lambda: [pri.compute(c) for c in cp], repeats)
    tr = cpu_best(lambda: [rhy.compute(c) for c in cr], repeats)
    mono = [Chunk(c.video_id, c.first, c.count, 1.0, seconds, audio=c.audio[:1], audio_context=c.audio_context)
            for c in cr]
    tm = cpu_best(lambda: [rhy.compute(c) for c in mono], repeats)
    print(f"{seconds:g} s stereo scene, 16-segment chunks, CPU s (best of {repeats}):")
    print(f"  priors {tp:.3f}   rhythm {tr:.3f} (mono {tm:.3f})   rhythm / priors = {tr / tp:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{sc.video_id}.mp4"
        write_video(sc, path, fps=15, size=(224, 128))
        walls = {}
        for specs in (("priors",), ("priors", "rhythm")):
            job = VideoJob(sc.video_id, str(path), specs, ExtractOptions(), DecodeParams())
            process_video(job)  # warm: extractor cache, numba
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                r = process_video(job)
                best = min(best, time.perf_counter() - t)
                assert r.ok, r.reason
            walls[specs] = best
        a, b = walls[("priors",)], walls[("priors", "rhythm")]
        print(f"  process_video (one shared decode, prefetched in a thread), wall s: priors {a:.3f}, "
              f"priors+rhythm {b:.3f}")


def accuracy(videos: int, seed: int, seconds: float) -> None:
    ex = build("rhythm")
    ex.load("cpu")
    rows = []
    for i in range(videos):
        sc = sample_scene(seed, i, seconds)
        truth = rhythm_truth(sc)["pulse"]
        if truth is None:
            continue
        feats, beats = [], []
        for c in chunks(render_audio(sc), seconds, ex.needs().audio_context):
            f, b = ex.analyse(c)
            feats.append(f)
            beats += b
        f, est = np.concatenate(feats), np.concatenate(beats)
        s = sc.sources[truth["source"]]
        segs = [k for k in range(len(f)) if s.start <= k and k + 1 <= s.end]
        if not segs:
            continue
        med = float(np.median(f[segs, 3]))
        strict = abs(med - truth["tempo_bpm"]) <= 0.04 * truth["tempo_bpm"]
        _, level, _ = mir_eval.tempo.detection(np.array(truth["tempi_bpm"]), 0.5, np.array([med, med]), tol=0.04)
        fm = mir_eval.beat.f_measure(np.array(truth["beats"]), est, 0.07)
        rows.append((s.kind in ATTACK_KINDS, fm, strict, level))
    arr = np.array(rows, dtype=float)
    print(f"accuracy on sample_scene({seed}, 0..{videos - 1}, {seconds:g} s), {len(arr)} scenes with a pulse:")
    for name, sel in (("all", np.ones(len(arr), bool)), ("pulse struck/plucked", arr[:, 0] == 1),
                      ("pulse bowed/blown", arr[:, 0] == 0)):
        a = arr[sel]
        if len(a):
            print(f"  {name:22s} n={len(a):3d}  beat F mean {a[:, 1].mean():.3f} (median {np.median(a[:, 1]):.3f}, "
                  f">=0.9: {np.mean(a[:, 1] >= 0.9):.0%})  tempo within 4 %: {a[:, 2].mean():.0%} "
                  f"(either metrical level: {a[:, 3].mean():.0%})")


def onsets_and_sides(videos: int, seed: int, seconds: float) -> None:
    """Onset rate against the notes, and whether the side with more onsets is the more rhythmic one."""
    ex = build("rhythm")
    ex.load("cpu")
    err, corr, sides = [], [], []
    for i in range(videos):
        sc = sample_scene(seed, i, seconds)
        f = np.concatenate([ex.compute(c) for c in chunks(render_audio(sc), seconds, ex.needs().audio_context)])
        notes = np.unique(np.round([n.onset for s in sc.sources if s.sounding for n in s.notes], 2))
        truth = np.histogram(notes, bins=np.arange(len(f) + 1))[0]
        err.append(np.abs(f[:, COL["onset_rate"]] - truth).mean())
        if truth.std() > 0 and f[:, COL["onset_rate"]].std() > 0:
            corr.append(np.corrcoef(f[:, COL["onset_rate"]], truth)[0, 1])
        left = [s for s in sc.sources if s.position == "left" and s.sounding]
        right = [s for s in sc.sources if s.position == "right" and s.sounding]
        if left and right and more_rhythmic(left[0], right[0]) is not None:
            a, b = left[0], right[0]
            both = [k for k in range(len(f)) if max(a.start, b.start) <= k and k + 1 <= min(a.end, b.end)]
            if both:
                d = f[both, COL["onset_rate_left"]].mean() - f[both, COL["onset_rate_right"]].mean()
                sides.append(0.5 if d == 0 else float((d > 0) == more_rhythmic(a, b)))
    sides_ = np.array(sides)
    print(f"onsets on sample_scene({seed}, 0..{videos - 1}, {seconds:g} s): onset_rate vs note onsets per "
          f"segment: mean abs error {np.mean(err):.2f}/s, correlation {np.mean(corr):.2f}")
    print(f"  'which side is more rhythmic' (left vs right sounding instrument, rates >= 1.5x apart, "
          f"{len(sides_)} scenes): onset_rate_left/right right {np.mean(sides_ == 1):.0%}, "
          f"tied {np.mean(sides_ == 0.5):.0%}, wrong {np.mean(sides_ == 0):.0%}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--accuracy-seconds", type=float, default=10.0)
    a = ap.parse_args()
    speed(a.seconds, a.repeats)
    if a.videos:
        accuracy(a.videos, a.seed, a.accuracy_seconds)
        onsets_and_sides(3 * a.videos, a.seed + 1, a.accuracy_seconds)


if __name__ == "__main__":
    main()
