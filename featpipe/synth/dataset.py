"""``make_dataset``: scenes -> balanced questions -> JSON files and .mp4 videos on disk.

Layout of ``out_dir``::

    videos/<video_id>.mp4              H.264 + AAC, 48 kHz stereo, keyframe every second
    avqa-train.json, avqa-val.json, avqa-test.json   MUSIC-AVQA format, split by video
    scenes/<video_id>.json             ground truth (Scene.to_json, plus "rhythm": beats and tempo)
    balance.txt                        the balance table (format_report, without timings)

Everything is a function of ``seed`` alone (numpy generators seeded with ``[seed, index]``),
so the same seed gives the same JSON bytes and the same audio samples.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..avqa import write_questions
from .balance import ask
from .beats import rhythm_truth
from .picture import render_frames
from .report import SynthReport, answer_counts, chance_levels, format_report, question_only_baseline
from .scene import Scene, sample_scene
from .sound import SAMPLE_RATE, render_audio
from .writer import write_mp4

SPLITS = ("train", "val", "test")


class SynthError(ValueError):
    """Bad arguments to the generator (message is one line)."""


def split_videos(n: int, seed: int, fractions: tuple[float, float] = (0.7, 0.15)) -> dict[str, list[int]]:
    """Scene indices per split (sorted), drawn with ``seed``; val and test get >= 1 when n >= 3."""
    perm = np.random.default_rng([seed, 7_000_001]).permutation(n)
    n_val = max(1 if n >= 3 else 0, round(fractions[1] * n))
    n_test = max(1 if n >= 3 else 0, n - round(fractions[0] * n) - n_val)
    n_train = n - n_val - n_test
    parts = (perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:])
    return {s: sorted(int(i) for i in p) for s, p in zip(SPLITS, parts)}


def write_video(scene: Scene, path: str | Path, fps: int = 15, size: tuple[int, int] = (224, 128)) -> None:
    """Render ``scene`` (picture at ``size`` = (width, height), 48 kHz sound) to an .mp4."""
    width, height = size
    write_mp4(path, render_frames(scene, fps, height, width), render_audio(scene), fps, SAMPLE_RATE)


def scene_file(scene: Scene) -> dict:
    """What ``scenes/<video_id>.json`` holds: ``Scene.to_json()`` plus the derived ``"rhythm"`` truth.

    ``Scene.from_json`` reads it back and ignores ``"rhythm"`` (it is recomputed from the notes).
    """
    return {**scene.to_json(), "rhythm": rhythm_truth(scene)}


def _write_video_job(args: tuple) -> None:
    scene_json, path, fps, size = args
    write_video(Scene.from_json(scene_json), path, fps, size)


MAX_SECONDS = 3600.0
"""The longest synthetic video (an hour; longer ones only cost time and disk)."""


def make_dataset(out_dir: str | Path, videos: int, seed: int, seconds: float = 10.0, *, fps: int = 15,
                 size: tuple[int, int] = (224, 128), workers: int = 1,
                 write_videos: bool = True) -> SynthReport:
    """Generate a synthetic MUSIC-AVQA dataset of ``videos`` videos of ``seconds`` each.

    ``workers`` > 1 renders videos in that many processes (same output). ``write_videos=False``
    writes only the JSON files (questions and scenes), e.g. to inspect the balance quickly.
    """
    if videos < 1:
        raise SynthError(f"videos must be >= 1, got {videos}")
    if not (2.0 <= seconds <= MAX_SECONDS):  # so NaN fails too (it passes every "<"), and inf
        raise SynthError(f"seconds must be >= 2 (instruments need room to enter and leave) and <= "
                         f"{MAX_SECONDS:g}, got {seconds}")
    if size[0] % 2 or size[1] % 2 or min(size) < 32:
        raise SynthError(f"size must be even and at least 32x32 (H.264 4:2:0), got {size[0]}x{size[1]}")
    out = Path(out_dir)
    t0 = time.perf_counter()
    scenes = [sample_scene(seed, i, seconds) for i in range(videos)]
    splits = split_videos(videos, seed)
    questions, next_id = {}, 1
    for k, split in enumerate(SPLITS):
        questions[split] = ask([scenes[i] for i in splits[split]], np.random.default_rng([seed, 8_000_000 + k]),
                               first_id=next_id)
        next_id += len(questions[split])
    t2 = time.perf_counter()

    (out / "scenes").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_questions(out / f"avqa-{split}.json", questions[split])
    for sc in scenes:
        (out / "scenes" / f"{sc.video_id}.json").write_text(json.dumps(scene_file(sc), indent=1))
    every = [q for s in SPLITS for q in questions[s]]
    report = SynthReport(
        out_dir=str(out), videos={s: len(splits[s]) for s in SPLITS},
        questions={s: len(questions[s]) for s in SPLITS}, answers=answer_counts(every),
        baseline=question_only_baseline(questions["train"], questions["test"]),
        chance=chance_levels(questions["test"]))
    (out / "balance.txt").write_text(format_report(report) + "\n")

    t3 = time.perf_counter()
    if write_videos:
        (out / "videos").mkdir(exist_ok=True)
        jobs = [(sc.to_json(), str(out / "videos" / f"{sc.video_id}.mp4"), fps, size) for sc in scenes]
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                list(pool.map(_write_video_job, jobs, chunksize=4))
        else:
            for job in jobs:
                _write_video_job(job)
    t4 = time.perf_counter()
    return replace(report, seconds={"scenes+questions": t2 - t0, "json": t3 - t2, "videos": t4 - t3,
                                    "total": t4 - t0})
