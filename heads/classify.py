"""Clip classification heads from a CSV of ``video_id,label`` rows.

Three models on any combination of cached features:

- ``linear``: scikit-learn ``LogisticRegression`` on the standardised, concatenated mean over
  valid segments of each feature; C picked on the validation set from ``C_grid``. Stored as
  arrays (``coef``, ``intercept``, ``classes``, ``mean``, ``std``); the loaded probe computes its
  probabilities from them (:class:`.estimators.LinearProbe`); no pickle.
- ``mlp``: HEAR-style MLP on the same pooled vectors (hidden 1024, batch norm, dropout, Adam,
  early stopping on validation accuracy).
- ``attention``: temporal attention pooling over the segment sequence.

``fusion`` ("concat" or "gated") says how several features are combined in the torch heads;
patch-token features are averaged over their patches first. The models are the estimators
:class:`.estimators.LinearProbe`, :class:`.estimators.MLPHead` and :class:`.estimators.AttentionHead`;
this module reads the label files and the cache and saves them as head directories.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import checkpoint, restore
from .batches import masked_mean
from .data import HeadError, check_features, covered, describe, load_segments
from .estimators import AttentionHead, LinearProbe, MLPHead
from .metrics import classification_metrics
from .params import check_hparams

ESTIMATORS = {"linear": LinearProbe, "mlp": MLPHead, "attention": AttentionHead}
MODELS = tuple(ESTIMATORS)
DEFAULTS = {model: cls.hyperparameters() for model, cls in ESTIMATORS.items()}
KNOWN = {k: v for hp in DEFAULTS.values() for k, v in hp.items()}  # any classifier's hyperparameters


def read_labels(path: str | Path) -> list[tuple[str, str]]:
    """``(video_id, label)`` rows of a CSV; a first row ``video_id,label`` is a header."""
    rows = []
    try:
        with open(path, newline="") as fh:
            for i, row in enumerate(csv.reader(fh)):
                if not row or (i == 0 and [c.strip() for c in row[:2]] == ["video_id", "label"]):
                    continue
                if len(row) < 2:
                    raise HeadError(f"{path}: line {i + 1} is not 'video_id,label'")
                rows.append((row[0].strip(), row[1].strip()))
    except OSError as exc:
        raise HeadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not rows:
        raise HeadError(f"{path}: no video_id,label rows")
    return rows


def read_videos(path: str | Path) -> list[str]:
    """Video ids from a CSV whose first column is the id (header ``video_id`` allowed) or a
    plain list, one per line."""
    ids = []
    with open(path, newline="") as fh:
        for i, row in enumerate(csv.reader(fh)):
            if row and not (i == 0 and row[0].strip() == "video_id"):
                ids.append(row[0].strip())
    return ids


def _inputs(cache: Any, ids: Sequence[str], metas, kind: str, length: int | None):
    """Per-feature pooled vectors (linear, mlp) or sequences + shared mask (attention)."""
    segs, T = load_segments(cache, ids, metas, length)
    feats, masks = [], []
    for m in metas:
        x, mask = segs[m.name]
        if m.role == "tokens":
            x = np.asarray(x, dtype=np.float32).mean(axis=2)  # (N, T, P, D) -> (N, T, D)
        feats.append(x)
        masks.append(mask)
    mask = np.logical_and.reduce(masks)
    if kind != "attention":
        feats = [masked_mean(x, mask) for x in feats]
    return feats, mask, T


def _kept(cache: Any, rows: Sequence[tuple[str, str]], names: Sequence[str]) -> list[tuple[str, str]]:
    ok = covered(cache, [v for v, _ in rows], names)
    kept = [r for r in rows if r[0] in ok]
    if not kept:
        raise HeadError(f"none of the {len(rows)} videos is in the cache with features {', '.join(names)}")
    return kept


def train_classifier(cache: Any, train_rows, val_rows, features: Sequence[str], out: str, model: str = "mlp",
                     seed: int = 0, hparams: dict | None = None, progress: bool = False,
                     sources: dict | None = None) -> dict:
    """Train one clip classifier and save it to ``out``. Returns its history."""
    if model not in MODELS:
        raise HeadError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    hp = dict(DEFAULTS[model], **check_hparams(hparams, KNOWN, "a classifier", DEFAULTS[model]))
    try:
        ESTIMATORS[model](**hp).validate_params()
    except ValueError as exc:
        raise HeadError(str(exc)) from None
    metas = describe(cache, features)
    names = [m.name for m in metas]
    train_rows, val_rows = _kept(cache, train_rows, names), _kept(cache, val_rows, names)
    labels = sorted({lab for _, lab in train_rows})
    if len(labels) < 2:
        raise HeadError("the training file has fewer than two labels")
    index = {lab: i for i, lab in enumerate(labels)}
    ytr = np.array([index[lab] for _, lab in train_rows])
    yva = np.array([index.get(lab, -1) for _, lab in val_rows])
    Ftr, mtr, T = _inputs(cache, [v for v, _ in train_rows], metas, model, None)
    Fva, mva, _ = _inputs(cache, [v for v, _ in val_rows], metas, model, T)
    meta = {"task": "classify", "model": model, "labels": labels, "hparams": hp, "seed": seed,
            "features": [m.to_json() for m in metas], "sources": sources or {},
            "dims": {"features": [f.shape[-1] for f in Ftr], "max_len": T},
            "n_train": len(train_rows), "n_val": len(val_rows),
            "ignored_hparams": sorted(set(hparams or {}) - set(hp))}
    if model != "linear" and len(train_rows) < 2:
        raise HeadError("need at least two training videos")
    est = ESTIMATORS[model](**hp, seed=seed, **({} if model == "linear" else {"verbose": progress}))
    seq = {"mask": mtr, "mask_val": mva} if model == "attention" else {}
    est.fit(Ftr, ytr, Fva, yva, classes=range(len(labels)), **seq)
    if model == "linear":
        hist = {"epochs": [], "best_epoch": 0, "stopped_early": False, "C": est.C_, "val_acc": est.val_accuracy_}
    else:
        hist = est.history_
    tensors = est.state()
    checkpoint.save(out, dict(meta, history=hist), tensors)
    return hist


def scores(path: str, cache: Any, video_ids: Sequence[str]) -> tuple[dict, list[str], np.ndarray]:
    """Class probabilities ``(N, C)`` of the cached videos among ``video_ids`` (kept order)."""
    meta, head = restore.classifier(path)  # head.json checked against the weights before anything is built
    metas = check_features(cache, meta["features"], path)
    ok = covered(cache, video_ids, [m.name for m in metas])
    ids = [v for v in video_ids if v in ok]
    if not ids:
        raise HeadError(f"none of the {len(video_ids)} videos is in the cache with the head's features")
    feats, mask, _ = _inputs(cache, ids, metas, meta["model"], meta["dims"]["max_len"])
    probs = head.predict_proba(feats, mask=mask) if meta["model"] == "attention" else head.predict_proba(feats)
    return meta, ids, probs


def evaluate_classifier(path: str, cache: Any, rows: Sequence[tuple[str, str]]) -> dict:
    meta, ids, probs = scores(path, cache, [v for v, _ in rows])
    truth = dict(rows)
    index = {lab: i for i, lab in enumerate(meta["labels"])}
    y = np.array([index.get(truth[v], -1) for v in ids])
    result = classification_metrics(meta["labels"], y, probs.argmax(1))
    return {"task": "classify", "model": meta["model"], "metrics": result, "history": meta.get("history", {}),
            "skipped_videos": len(rows) - len(ids), "features": [f["name"] for f in meta["features"]]}


def predict_classifier(path: str, cache: Any, video_ids: Sequence[str]) -> list[dict]:
    meta, ids, probs = scores(path, cache, video_ids)
    return [{"video_id": v, "label": meta["labels"][int(p.argmax())], "probability": round(float(p.max()), 6)}
            for v, p in zip(ids, probs)]
