"""A `featpipe synth` question set with a cache written through featpipe's CacheWriter for the study tests.

The questions (and their exact answers) are `featpipe.synth.make_dataset`'s, without videos; the
features are computed from the ground-truth scenes, so what each carries is known:

- ``noise``: 8 random values per segment, nothing about the scene;
- ``truth``: per segment and instrument kind, whether it is on screen, whether it sounds now, and its
  position (left / middle / right), plus the voiceover: what Counting, Location and Existential
  questions ask;
- ``deep`` (layer-wise, rows (4, 48), attribute ``layers`` [0, 3, 6, 9]): layers 0, 3 and 9 are
  noise, layer 6 holds ``truth`` through a random rotation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from featpipe.cache import CacheWriter
from featpipe.extractors.base import OutputSpec
from featpipe.synth import make_dataset
from featpipe.synth.scene import KINDS, POSITIONS

TIMELINE = {"fps": 1.0, "seg_len": 1.0, "max_seconds": None, "pad": "repeat"}
LAYERS = [0, 3, 6, 9]


def prov(spec: str) -> dict:
    return {
        "spec": spec,
        "weights": "none",
        "featpipe": "0.1.0",
        "decode": {"fps": 1.0, "pad": "repeat", "pyav": "18.1", "chunk_segments": 16},
    }


def truth_rows(scene: dict) -> np.ndarray:
    T = int(round(scene["seconds"]))
    per_kind = len(POSITIONS) + 2
    rows = np.zeros((T, len(KINDS) * per_kind + 1), np.float32)
    for src in scene["sources"]:
        k = KINDS.index(src["kind"]) * per_kind
        for t in range(T):
            rows[t, k] += float(src["position"] is not None)  # on screen
            if src["sounding"] and src["start"] < t + 1 and src["end"] > t:
                rows[t, k + 1] += 1.0
            if src["position"] in POSITIONS:  # an off-screen source has none
                rows[t, k + 2 + POSITIONS.index(src["position"])] = 1.0
    vo = scene.get("voiceover")
    if vo:
        for t in range(T):
            rows[t, -1] = float(vo["start"] < t + 1 and vo["end"] > t)
    return rows


def synth_study_set(folder: Path, videos: int = 150, seed: int = 3, seconds: float = 4.0) -> dict[str, Path]:
    """Question files and ``cache.h5`` (features above) for a synthetic set of ``videos`` videos."""
    folder.mkdir(parents=True, exist_ok=True)
    make_dataset(folder, videos=videos, seed=seed, seconds=seconds, write_videos=False)
    rng = np.random.default_rng(seed)
    scenes = sorted((folder / "scenes").glob("*.json"))
    dim = len(truth_rows(json.loads(scenes[0].read_text()))[0])
    rot = np.linalg.qr(rng.normal(size=(48, 48)))[0][:, :dim]
    specs = [
        OutputSpec("noise", (8,), "audio"),
        OutputSpec("truth", (dim,), "visual"),
        OutputSpec("deep", (len(LAYERS), 48), "audio", attrs={"layers": LAYERS}),
    ]
    with CacheWriter(folder / "cache.h5", TIMELINE) as w:
        for spec in specs:
            w.ensure_feature(spec, prov(spec.name))
        w.start()
        for i, path in enumerate(scenes):
            scene = json.loads(path.read_text())
            truth = truth_rows(scene)
            T = len(truth)
            deep = rng.normal(size=(T, len(LAYERS), 48)).astype(np.float32)
            deep[:, LAYERS.index(6)] = truth @ rot.T + 0.1 * rng.normal(size=(T, 48))
            w.commit(
                {"video_id": scene["video_id"], "source": {"size": i, "mtime": 0.0}},
                {"noise": rng.normal(size=(T, 8)), "truth": truth, "deep": deep},
            )
    return {"cache": folder / "cache.h5", **{s: folder / f"avqa-{s}.json" for s in ("train", "val", "test")}}
