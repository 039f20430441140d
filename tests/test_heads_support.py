"""Tiny caches with planted signals for the heads' tests (written with featpipe's CacheWriter,
read back by the heads only through featpipe.open_cache), and checks of those fixtures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from featpipe import open_cache
from featpipe.avqa import Question, write_questions
from featpipe.cache import CacheWriter
from featpipe.extractors.base import OutputSpec

TIMELINE = {"fps": 1.0, "seg_len": 1.0, "max_seconds": None, "pad": "repeat"}
COUNT_WORDS = ("one", "two", "three", "four")
T = 6


def prov(spec: str, weights: str = "none", **extra) -> dict:
    return {"spec": spec, "weights": weights, "featpipe": "0.1.0",
            "decode": {"fps": 1.0, "pad": "repeat", "pyav": "18.1", "chunk_segments": 16}, **extra}


def write_cache(path: Path, specs: list[tuple[OutputSpec, dict]], arrays: dict[str, dict[str, np.ndarray]],
                texts: dict[str, tuple[list[dict], np.ndarray]] | None = None) -> Path:
    """``arrays[video_id][feature]`` rows; ``texts[encoder] = (items, embeddings)``."""
    with CacheWriter(path, TIMELINE) as w:
        for spec, p in specs:
            w.ensure_feature(spec, p)
        for enc, (items, emb) in (texts or {}).items():
            w.ensure_text_table(enc, emb.shape[1], {"spec": enc, "weights": "sha256:test"})
        w.start()
        for i, (vid, feats) in enumerate(arrays.items()):
            w.commit({"video_id": vid, "source": {"size": i, "mtime": 0.0}}, feats)
        for enc, (items, emb) in (texts or {}).items():
            w.add_texts(enc, items, emb)
    return path


def decorrelate(truth: list[str], choices: tuple[str, ...], rng: np.random.Generator) -> list[str]:
    """Labels that carry no information about ``truth``: within each true value the items (in
    random order) get the ``choices`` in turn, so every true value sees every label about equally
    often. (A plain shuffle of 60 labels can keep a chance correlation a head then learns.)"""
    out = list(truth)
    for value in sorted(set(truth)):
        idx = [i for i, t in enumerate(truth) if t == value]
        start = int(rng.integers(len(choices)))
        for k, i in enumerate(rng.permutation(idx)):
            out[i] = choices[(start + k) % len(choices)]
    return out


def planted_avqa(tmp: Path, n_videos: int = 100, seed: int = 0, shuffle: bool = False, tokens: bool = False,
                 text: bool = False, weights: str = "none", name: str = "c") -> dict:
    """A cache and train/val/test question files where answers need the video.

    Each video has an audio vector (8-d) and a visual vector (6-d), drawn from isotropic normals
    and repeated with noise in every audio / visual segment (with ``tokens``: the visual vector
    sits in one of the four patches). Audio Counting questions ask for the quadrant of the audio
    vector along two random directions (4 answers), Visual Location ones for its sign along one
    random direction of the visual vector. The answers depend on a few directions of isotropic
    features, so a head fitted to noise does not land on them by chance (with clustered or
    low-dimensional features it can, and "shuffled labels" tests then pass or fail by luck).
    ``shuffle`` replaces the train and val answers by ones independent of the video (see
    :func:`decorrelate`)."""
    rng = np.random.default_rng(seed)
    za, zv = rng.normal(size=(n_videos, 8)), rng.normal(size=(n_videos, 6))
    pa = za @ np.linalg.qr(rng.normal(size=(8, 8)))[0][:, :2]
    c = (pa[:, 0] < 0) * 1 + (pa[:, 1] < 0) * 2
    d = (zv @ rng.normal(size=6) > 0).astype(int)
    arrays, questions = {}, []
    for i in range(n_videos):
        vid = f"{i:08d}"
        feats = {"aud": za[i] + 0.5 * rng.normal(size=(T, 8))}
        if tokens:
            tok = 0.5 * rng.normal(size=(T, 4, 6))
            tok[:, 1] = zv[i] + 0.5 * rng.normal(size=(T, 6))
            feats["vis-tokens"] = tok
        else:
            feats["vis"] = zv[i] + 0.5 * rng.normal(size=(T, 6))
        arrays[vid] = feats
        obj = ("violin", "piano")[i % 2]
        questions.append(Question(2 * i, vid, "How many sounding <Object> are in the video?",
                                  f"How many sounding {obj} are in the video?", (obj,), "Audio", "Counting",
                                  COUNT_WORDS[c[i]]))
        questions.append(Question(2 * i + 1, vid, "Where is the <Object>?", f"Where is the {obj}?", (obj,),
                                  "Visual", "Location", ("left", "right")[d[i]]))
    specs = [(OutputSpec("aud", (8,), "audio"), prov("aud", weights))]
    specs.append((OutputSpec("vis-tokens", (4, 6), "visual"), prov("vis")) if tokens
                 else (OutputSpec("vis", (6,), "visual"), prov("vis")))
    n_tr, n_va = int(0.6 * n_videos) * 2, int(0.2 * n_videos) * 2
    split = {"train": questions[:n_tr], "val": questions[n_tr:n_tr + n_va], "test": questions[n_tr + n_va:]}
    if shuffle:
        for key in ("train", "val"):
            qs = split[key]
            for qtype, choices in (("Counting", COUNT_WORDS), ("Location", ("left", "right"))):
                idx = [j for j, q in enumerate(qs) if q.qtype == qtype]
                new = decorrelate([qs[j].answer for j in idx], choices, rng)
                for j, ans in zip(idx, new):
                    qs[j] = dataclasses.replace(qs[j], answer=ans)
    texts = None
    if text:
        temb = {t: rng.normal(size=16) for t in sorted({q.text for q in questions})}
        items = [{"text": t, "ids": [q.question_id for q in questions if q.text == t]} for t in temb]
        texts = {"toy-text": (items, np.stack(list(temb.values())))}
    out = {"cache": write_cache(tmp / f"{name}.h5", specs, arrays, texts)}
    for key, qs in split.items():
        out[key] = tmp / f"{name}-{key}.json"
        write_questions(out[key], qs)
    return out


def planted_clips(tmp: Path, n_videos: int = 120, seed: int = 0, shuffle: bool = False, name: str = "k") -> dict:
    """A cache and train/val/test CSVs of 4 classes: the quadrant of a video's isotropic 13-d
    vector along two random directions; its first 8 dimensions are the ``aud`` feature, the last
    5 ``vis`` (so the classes need both), repeated with noise in every segment."""
    rng = np.random.default_rng(seed)
    n_tr, n_va = int(0.6 * n_videos), int(0.2 * n_videos)
    z = rng.normal(size=(n_videos, 13))
    p = z @ np.linalg.qr(rng.normal(size=(13, 13)))[0][:, :2]
    y = (p[:, 0] < 0) * 1 + (p[:, 1] < 0) * 2
    arrays = {f"{i:08d}": {"aud": z[i, :8] + 0.5 * rng.normal(size=(T, 8)),
                           "vis": z[i, 8:] + 0.5 * rng.normal(size=(T, 5))} for i in range(n_videos)}
    specs = [(OutputSpec("aud", (8,), "audio"), prov("aud")), (OutputSpec("vis", (5,), "visual"), prov("vis"))]
    out = {"cache": write_cache(tmp / f"{name}.h5", specs, arrays)}
    labels = [f"class{k}" for k in y]
    for key, lo, hi in (("train", 0, n_tr), ("val", n_tr, n_tr + n_va), ("test", n_tr + n_va, n_videos)):
        part = labels[lo:hi]
        if shuffle and key != "test":
            part = decorrelate(part, tuple(f"class{k}" for k in range(4)), rng)
        out[key] = tmp / f"{name}-{key}.csv"
        out[key].write_text("video_id,label\n" + "".join(f"{i:08d},{lab}\n" for i, lab in zip(range(lo, hi), part)))
    return out


def test_decorrelated_labels_carry_no_information():
    rng = np.random.default_rng(0)
    truth = list(rng.choice(["a", "b", "c", "d"], 400))
    new = decorrelate(truth, ("a", "b", "c", "d"), rng)
    for value in "abcd":
        got = [n for t, n in zip(truth, new) if t == value]
        counts = [got.count(x) for x in "abcd"]
        assert max(counts) - min(counts) <= 1


def test_planted_cache_reads_back(tmp_path):
    from featpipe.heads.data import default_features, describe

    files = planted_avqa(tmp_path, n_videos=10, tokens=True, text=True)
    with open_cache(files["cache"]) as cache:
        assert cache.features == ["aud", "vis-tokens"]
        assert len(cache.videos) == 10
        assert [m.role for m in describe(cache, ["aud", "vis-tokens"])] == ["audio", "tokens"]
        assert default_features(cache, tokens=False) == ["aud"]
        assert default_features(cache, tokens=True) == ["aud", "vis-tokens"]
        x, mask = cache.batch(cache.videos, "vis-tokens")
        assert x.shape == (10, T, 4, 6) and mask.all()
        assert cache.text_encoders == ["toy-text"]
        assert cache.text_embeddings("toy-text", question_ids=[0, 1]).shape == (2, 16)
