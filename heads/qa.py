"""Music AVQA heads: train, evaluate and apply the AVQA head and its question-only baseline.

Inputs per question: the question embedding (cached text encoder, or the weight-free
:class:`heads.questions.BowQuestionEncoder`), the audio segments (every chosen audio feature,
concatenated per segment), the visual segments (likewise) and, when chosen, one patch-token
feature. Answers: the vocabulary of the training file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from featpipe.avqa import Question

from . import checkpoint, restore
from .batches import AvqaArrays
from .data import (FeatureMeta, HeadError, check_features, covered, describe, load_segments, question_embeddings,
                   text_encoders)
from .layout import StreamLayout, mirror_rows, stream_layout
from .estimators import AvqaHead, QuestionOnlyHead, resolve_arch
from .metrics import avqa_table
from .params import check_hparams
from .questions import BowQuestionEncoder, answer_vocabulary, mirror_question

HEAD, BASELINE = "avqa-head", "question-only"
# arch: "spatial" (AvqaSpatialHead: grid cells, pointers) needs audio and a visual feature with grid
# cells and no patch tokens; "temporal" is AvqaHead; "auto" takes spatial where it can.
# mirror: also train on the left-right mirrored copy of every training video and question where
# every feature's mirror is known (heads.layout) and questions use the bag-of-words encoding.
# schedule: "cosine" decays the learning rate to 0 over max_epochs; the best validation epoch is kept.
# The values are the estimators' defaults (heads.estimators); mirror is this module's own.
DEFAULTS = dict(AvqaHead.hyperparameters(), mirror=True)
BASELINE_DEFAULTS = dict(DEFAULTS, hidden=QuestionOnlyHead().hidden)


@dataclass
class Prepared:
    arrays: AvqaArrays
    questions: list[Question]  # those kept, in the order of the arrays
    skipped: int  # questions dropped because their video (or one of its features) is not cached


def question_encoding(cache: Any, train: Sequence[Question], question: str = "auto") -> dict:
    """How questions are embedded: ``{"kind": "text", "encoder": name}`` for a cached text encoder
    (``question`` names it; "auto" takes the first cached one), else the bag-of-words encoding
    fitted on ``train`` (``question`` = "bow", or "auto" with no text encoder cached)."""
    cached = text_encoders(cache)
    if question == "bow" or (question == "auto" and not cached):
        return BowQuestionEncoder.fit(train).to_json()
    if cache is None:
        raise HeadError(f"question encoding {question!r} needs a cache with that text encoder")
    encoder = cached[0] if question == "auto" else question
    return {"kind": "text", "encoder": encoder}


def encode_questions(cache: Any, spec: dict, questions: Sequence[Question]) -> np.ndarray:
    if spec["kind"] == "bow":
        return BowQuestionEncoder.from_json(spec).encode(questions)
    return np.asarray(question_embeddings(cache, spec["encoder"], questions), dtype=np.float32)


def split_roles(metas: Sequence[FeatureMeta]) -> dict[str, list[FeatureMeta]]:
    roles: dict[str, list[FeatureMeta]] = {"audio": [], "visual": [], "tokens": []}
    for m in metas:
        roles[m.role].append(m)
    if len(roles["tokens"]) > 1:
        raise HeadError("the AVQA head takes one patch-token feature at a time: "
                        + ", ".join(m.name for m in roles["tokens"]))
    return roles


def prepare(cache: Any, questions: Sequence[Question], metas: Sequence[FeatureMeta], answers: Sequence[str],
            qspec: dict, length: int | None = None, video: bool = True) -> tuple[Prepared, int]:
    """Load every needed video once and build the in-memory arrays. Returns them and ``T``.

    Questions whose video (or one of its features) is not cached are dropped and counted.
    ``video`` False (question-only head) keeps the same questions but loads no video arrays."""
    names = [m.name for m in metas]
    if metas:
        ok = covered(cache, [q.video_id for q in questions], names)
        kept = [q for q in questions if q.video_id in ok]
    else:  # question-only without features: every question counts, no cache needed
        kept, video = list(questions), False
    if not kept:
        raise HeadError(f"none of the {len(questions)} questions' videos is in the cache with "
                        f"features {', '.join(names)}")
    videos = sorted({q.video_id for q in kept})
    row = {v: i for i, v in enumerate(videos)}
    roles = split_roles(metas)
    if video:
        segs, T = load_segments(cache, videos, metas, length)
    else:
        segs, T, roles = {}, length or 0, {"audio": [], "visual": [], "tokens": []}

    def stack(ms: list[FeatureMeta]) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not ms:
            return None, None
        x = np.concatenate([segs[m.name][0] for m in ms], axis=-1) if len(ms) > 1 else segs[ms[0].name][0]
        mask = np.logical_and.reduce([segs[m.name][1] for m in ms])
        return x, mask

    a, mask_a = stack(roles["audio"])
    v, mask_v = stack(roles["visual"])
    tok, mask_t = stack(roles["tokens"])
    if tok is not None:
        mask_v = mask_t if mask_v is None else mask_v & mask_t
    index = {ans: i for i, ans in enumerate(answers)}
    arrays = AvqaArrays(
        q=encode_questions(cache, qspec, kept),
        vid=np.array([row[q.video_id] for q in kept], dtype=np.int64),
        y=np.array([index.get(q.answer, -1) for q in kept], dtype=np.int64),
        a=a, v=v, tok=tok, mask_a=mask_a, mask_v=mask_v)
    return Prepared(arrays, kept, len(questions) - len(kept)), T


def stream_layout_of(metas: Sequence[FeatureMeta]) -> StreamLayout:
    """Where grid cells and stereo cues sit in the concatenated audio and visual vectors."""
    roles = split_roles(metas)
    lay = stream_layout([m.layout for m in roles["audio"] if m.layout is not None],
                        [m.layout for m in roles["visual"] if m.layout is not None])
    if any(m.layout is None for m in metas) or roles["tokens"]:
        lay.mirror_a = lay.mirror_v = None  # a feature without a known mirror
    return lay


def choose_arch(arch: str, lay: StreamLayout, metas: Sequence[FeatureMeta]) -> str:
    """The architecture for these features (:func:`.estimators.resolve_arch`), before any array is read."""
    roles = split_roles(metas)
    try:
        return resolve_arch(arch, lay.spatial and bool(roles["audio"]) and not roles["tokens"])
    except ValueError as exc:
        raise HeadError(str(exc)) from None


def mirrored(prep: Prepared, lay: StreamLayout, encode, answers: Sequence[str]) -> Prepared:
    """``prep`` plus a left-right mirrored copy of every video (features mirrored as
    :mod:`heads.layout` says) with its mirrored questions (:func:`mirror_question`); the copy's
    questions are appended after the originals and point at the copied videos."""
    d = prep.arrays
    pairs = [(i, m) for i, m in enumerate(map(mirror_question, prep.questions)) if m is not None]
    idx = np.array([i for i, _ in pairs], dtype=np.int64)
    mq = [m for _, m in pairs]
    index = {ans: i for i, ans in enumerate(answers)}
    n_videos = d.a.shape[0] if d.a is not None else d.v.shape[0]

    def both(x, mirror):
        return None if x is None else np.concatenate([x, mirror_rows(x, mirror) if mirror else x])

    arrays = AvqaArrays(
        q=np.concatenate([d.q, encode(mq)]) if mq else d.q,
        vid=np.concatenate([d.vid, d.vid[idx] + n_videos]),
        y=np.concatenate([d.y, np.array([index.get(q.answer, -1) for q in mq], dtype=np.int64)]),
        a=both(d.a, lay.mirror_a), v=both(d.v, lay.mirror_v), tok=None,
        mask_a=both(d.mask_a, None), mask_v=both(d.mask_v, None))
    return Prepared(arrays, list(prep.questions) + mq, prep.skipped)


def train_avqa(cache: Any, train_qs: Sequence[Question], val_qs: Sequence[Question] | None,
               features: Sequence[str], out: str, seed: int = 0, question: str = "auto",
               hparams: dict | None = None, baseline: bool = True, progress: bool = False,
               sources: dict | None = None) -> dict:
    """Train the AVQA head (and, with ``baseline``, the question-only head into ``out/baseline``).

    No ``features`` (``cache`` may then be None): only the question-only head, saved as ``out``
    itself. ``val_qs`` None: 10% of the training videos (chosen with ``seed``) are held out for
    early stopping. Returns ``{method: history}``.
    """
    hp = dict(DEFAULTS, **check_hparams(hparams, DEFAULTS, "the AVQA head"))
    try:
        _estimator(HEAD, hp).validate_params()
    except ValueError as exc:
        raise HeadError(str(exc)) from None
    if features and cache is None:
        raise HeadError("features were asked for but no cache was given")
    metas = describe(cache, features) if features else []
    if val_qs is None:
        vids = sorted({q.video_id for q in train_qs})
        held = set(np.random.default_rng(seed).permutation(vids)[: max(1, len(vids) // 10)])
        val_qs = [q for q in train_qs if q.video_id in held]
        train_qs = [q for q in train_qs if q.video_id not in held]
    answers = answer_vocabulary(train_qs)
    qspec = question_encoding(cache, train_qs, question)
    tr, T = prepare(cache, train_qs, metas, answers, qspec)
    va, _ = prepare(cache, val_qs, metas, answers, qspec, T)
    lay = stream_layout_of(metas)
    hp["arch"] = choose_arch(hp["arch"], lay, metas) if metas else "temporal"
    # mirrored copies need every feature's mirror and questions encoded from their words
    hp["mirror"] = bool(hp["mirror"] and metas and lay.mirrorable and qspec["kind"] == "bow")
    n_train = len(tr.questions)
    if hp["mirror"]:
        tr = mirrored(tr, lay, lambda qs: encode_questions(cache, qspec, qs), answers)
    common = {"task": "avqa", "answers": answers, "question": qspec, "seed": seed,
              "features": [m.to_json() for m in metas], "sources": sources or {},
              "n_train": n_train, "n_train_mirrored": len(tr.questions) - n_train, "n_val": len(va.questions),
              "skipped": {"train": tr.skipped, "val": va.skipped}}
    histories = {}
    # the baseline trains on the same questions (mirrored copies included) as the head
    bhp = dict(BASELINE_DEFAULTS, **{k: v for k, v in (hparams or {}).items() if k != "hidden"})
    bhp.update(arch="temporal", mirror=hp["mirror"])
    if not metas:
        jobs = [(BASELINE, bhp, out)]
    else:
        jobs = [(HEAD, hp, out)] + ([(BASELINE, bhp, f"{out}/baseline")] if baseline else [])
        if not baseline:
            checkpoint.remove(f"{out}/baseline")
    for method, h, path in jobs:
        est = _estimator(method, h, layout=lay.to_json(), seed=seed, verbose=progress)
        est.fit(tr.arrays, tr.arrays.y, va.arrays, va.arrays.y, classes=range(len(answers)), max_len=T)
        meta = dict(common, model=method, hparams=h, dims=est.dims_)
        checkpoint.save(path, dict(meta, history=est.history_), est.state())
        histories[method] = est.history_
    return histories


def _estimator(method: str, hparams: dict, **params: Any) -> AvqaHead | QuestionOnlyHead:
    cls = AvqaHead if method == HEAD else QuestionOnlyHead
    names = cls().get_params()
    return cls(**{k: v for k, v in {**hparams, **params}.items() if k in names})


def load_head(path: str) -> tuple[dict, AvqaHead | QuestionOnlyHead]:
    """The head saved at ``path`` as a fitted estimator (classes: answer indices), and its meta."""
    return restore.avqa(path)  # head.json checked against the weights before anything is built


def run_questions(path: str, cache: Any, questions: Sequence[Question]) -> tuple[dict, Prepared, np.ndarray]:
    """Apply the head at ``path`` to ``questions``; returns its meta, the prepared inputs and logits."""
    meta, head = load_head(path)
    if meta["features"] and cache is None:
        raise HeadError(f"{path} was trained on cached features: give the cache")
    metas = check_features(cache, meta["features"], path) if meta["features"] else []
    use_video = meta["model"] == HEAD
    prep, _ = prepare(cache, questions, metas, meta["answers"], meta["question"], meta["dims"]["max_len"],
                      video=use_video)
    if prep.arrays.q.shape[1] != meta["dims"]["q"]:
        raise HeadError(f"{path} takes {meta['dims']['q']}-dimensional questions; the cache's "
                        f"{meta['question'].get('encoder')!r} embeddings have {prep.arrays.q.shape[1]}")
    return meta, prep, head.decision_function(prep.arrays)


def evaluate_avqa(path: str, cache: Any, test_qs: Sequence[Question]) -> dict:
    """Per-type tables of the head and (when saved with it) its question-only baseline."""
    methods = {load_head(path)[0]["model"]: path}
    if (Path(path) / "baseline" / checkpoint.META).is_file():
        methods[BASELINE] = f"{path}/baseline"
    tables, histories, info = {}, {}, {}
    for method, p in methods.items():
        meta, prep, logits = run_questions(p, cache, test_qs)
        pred = logits.argmax(1)
        qs = prep.questions
        correct = pred == prep.arrays.y
        tables[method] = avqa_table([q.group for q in qs], [q.qtype for q in qs], correct)
        histories[method] = meta.get("history", {})
        info[method] = {"skipped_questions": prep.skipped, "unknown_answers": int((prep.arrays.y < 0).sum()),
                        "features": [f["name"] for f in meta["features"]], "question": meta["question"]["kind"],
                        "best_epoch": meta.get("history", {}).get("best_epoch")}
    return {"task": "avqa", "tables": tables, "histories": histories, "methods": info}


def predict_avqa(path: str, cache: Any, questions: Sequence[Question]) -> list[dict]:
    """One record per question whose video is cached: id, video, predicted answer, its probability."""
    meta, prep, logits = run_questions(path, cache, questions)
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    out = []
    for q, p in zip(prep.questions, probs):
        k = int(p.argmax())
        out.append({"question_id": q.question_id, "video_id": q.video_id, "answer": meta["answers"][k],
                    "probability": round(float(p[k]), 6)})
    return out
