"""Clip classification heads from a CSV of ``video_id,label`` rows.

Three models on any combination of cached features:

- ``linear``: scikit-learn ``LogisticRegression`` on the standardised, concatenated mean over
  valid segments of each feature; C picked on the validation set from :data:`C_GRID`. Stored
  as arrays (``coef_``, ``intercept_``, ``classes_``) and rebuilt on load; no pickle.
- ``mlp``: HEAR-style MLP on the same pooled vectors (hidden 1024, batch norm, dropout, Adam,
  early stopping on validation accuracy).
- ``attention``: temporal attention pooling over the segment sequence.

``fusion`` ("concat" or "gated") says how several features are combined in the torch heads;
patch-token features are averaged over their patches first.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import checkpoint
from .batches import ClipBatches, masked_mean, masked_stats
from .data import HeadError, check_features, covered, describe, load_segments
from .metrics import classification_metrics
from .models import AttentionHead, MLPHead
from .train import fit, predict_logits, seed_everything

MODELS = ("linear", "mlp", "attention")
C_GRID = (0.01, 0.1, 1.0, 10.0)
DEFAULTS = {
    "mlp": {"hidden": 1024, "layers": 1, "dropout": 0.1, "lr": 1e-3, "weight_decay": 0.0, "batch_size": 1024,
            "max_epochs": 500, "patience": 20, "fusion": "concat"},
    "attention": {"hidden": 256, "heads": 4, "dropout": 0.1, "lr": 1e-3, "weight_decay": 0.0, "batch_size": 64,
                  "max_epochs": 200, "patience": 20, "fusion": "concat"},
    "linear": {"C_grid": list(C_GRID), "max_iter": 2000},
}


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


def build_model(meta: dict) -> torch.nn.Module:
    hp, dims, n = meta["hparams"], meta["dims"], len(meta["labels"])
    if meta["model"] == "mlp":
        return MLPHead(dims["features"], n, hidden=hp["hidden"], layers=hp["layers"], dropout=hp["dropout"],
                       fusion=hp["fusion"])
    return AttentionHead(dims["features"], n, dims["max_len"], hidden=hp["hidden"], heads=hp["heads"],
                         dropout=hp["dropout"], fusion=hp["fusion"])


def _fit_linear(Xtr, ytr, Xva, yva, hp: dict, seed: int):
    from sklearn.linear_model import LogisticRegression

    best = None
    for C in hp["C_grid"]:
        clf = LogisticRegression(C=C, max_iter=hp["max_iter"], random_state=seed).fit(Xtr, ytr)
        acc = float((clf.predict(Xva) == yva).mean()) if len(yva) else 0.0
        if best is None or acc > best[0]:
            best = (acc, C, clf)
    return best


def linear_model(tensors: dict[str, torch.Tensor]):
    """Rebuild the stored ``LogisticRegression`` from its arrays."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression()
    clf.coef_ = tensors["coef"].numpy().astype(np.float64)
    clf.intercept_ = tensors["intercept"].numpy().astype(np.float64)
    clf.classes_ = tensors["classes"].numpy()
    clf.n_features_in_ = clf.coef_.shape[1]
    return clf


def train_classifier(cache: Any, train_rows, val_rows, features: Sequence[str], out: str, model: str = "mlp",
                     seed: int = 0, hparams: dict | None = None, progress: bool = False,
                     sources: dict | None = None) -> dict:
    """Train one clip classifier and save it to ``out``. Returns its history."""
    if model not in MODELS:
        raise HeadError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    hp = dict(DEFAULTS[model], **(hparams or {}))
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
            "n_train": len(train_rows), "n_val": len(val_rows)}
    if model == "linear":
        Xtr, Xva = np.concatenate(Ftr, 1), np.concatenate(Fva, 1)
        mean, std = masked_stats(Xtr)
        std = np.where(std < 1e-6, 1.0, std).astype(np.float32)
        acc, C, clf = _fit_linear((Xtr - mean) / std, ytr, (Xva - mean) / std, yva, hp, seed)
        hist = {"epochs": [], "best_epoch": 0, "stopped_early": False, "C": C, "val_acc": acc}
        tensors = {"coef": clf.coef_, "intercept": clf.intercept_, "classes": clf.classes_.astype(np.int64),
                   "mean": mean, "std": std}
    else:
        if len(train_rows) < 2:
            raise HeadError("need at least two training videos")
        seed_everything(seed)
        net = build_model(meta)
        for s, f, mk in zip(net.std, Ftr, [mtr] * len(Ftr)):
            mean, std = masked_stats(f, mk if model == "attention" else None)
            s.mean.copy_(torch.from_numpy(mean))
            s.std.copy_(torch.from_numpy(np.where(std < 1e-6, 1.0, std).astype(np.float32)))
        seq = model == "attention"
        hist = fit(net, ClipBatches(Ftr, ytr, hp["batch_size"], mtr if seq else None),
                   ClipBatches(Fva, yva, hp["batch_size"], mva if seq else None), lr=hp["lr"],
                   weight_decay=hp["weight_decay"], max_epochs=hp["max_epochs"], patience=hp["patience"],
                   seed=seed, progress=progress, desc=model)
        tensors = net.state_dict()
    checkpoint.save(out, dict(meta, history=hist), tensors)
    return hist


def scores(path: str, cache: Any, video_ids: Sequence[str]) -> tuple[dict, list[str], np.ndarray]:
    """Class probabilities ``(N, C)`` of the cached videos among ``video_ids`` (kept order)."""
    meta, tensors = checkpoint.load(path)
    if meta.get("task") != "classify":
        raise HeadError(f"{path} is a {meta.get('task')!r} head, not a classifier")
    metas = check_features(cache, meta["features"], path)
    ok = covered(cache, video_ids, [m.name for m in metas])
    ids = [v for v in video_ids if v in ok]
    if not ids:
        raise HeadError(f"none of the {len(video_ids)} videos is in the cache with the head's features")
    feats, mask, _ = _inputs(cache, ids, metas, meta["model"], meta["dims"]["max_len"])
    if meta["model"] == "linear":
        X = (np.concatenate(feats, 1) - tensors["mean"].numpy()) / tensors["std"].numpy()
        probs = linear_model(tensors).predict_proba(X)
    else:
        net = build_model(meta)
        net.load_state_dict(tensors)
        bs = meta["hparams"]["batch_size"]
        batches = ClipBatches(feats, np.zeros(len(ids), np.int64), bs, mask if meta["model"] == "attention" else None)
        probs = torch.softmax(torch.from_numpy(predict_logits(net, batches.eval(), len(ids))), 1).numpy()
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
