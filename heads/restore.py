"""Rebuilding a saved head, checked: a head directory is input like any other, not trusted.

``head.json`` is checked field by field (types, sizes, and that its answers, labels, features and
``dims`` agree with each other); then the network it describes is built on torch's ``meta``
device (shapes only, no memory) and every parameter and buffer shape must equal the one in
``weights.safetensors``' header. Only then are the weights read and the network built, so a
``head.json`` asking for ten million hidden units costs nothing, and a truncated answer list
cannot score 0 % in silence. Every failure is one :class:`HeadError` line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import checkpoint
from .data import HeadError
from .estimators import AttentionHead, AvqaHead, LinearProbe, MLPHead, QuestionOnlyHead
from .questions import BowQuestionEncoder

AVQA_MODELS = {"avqa-head": AvqaHead, "question-only": QuestionOnlyHead}
CLASSIFY_MODELS = {"linear": LinearProbe, "mlp": MLPHead, "attention": AttentionHead}
ROLES = ("audio", "visual", "tokens")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(v: Any, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _strings(v: Any, least: int = 1) -> bool:
    return isinstance(v, list) and len(v) >= least and all(isinstance(x, str) for x in v)


class _Meta:
    """``head.json`` with checks that name the field and the head."""

    def __init__(self, path: str, meta: dict) -> None:
        self.path, self.meta = path, meta

    def fail(self, text: str) -> HeadError:
        return HeadError(f"{self.path}: {checkpoint.META} {text}")

    def get(self, key: str, ok: Callable[[Any], bool], what: str, where: dict | None = None, name: str = "") -> Any:
        src = self.meta if where is None else where
        value = src.get(key) if isinstance(src, dict) else None
        if not ok(value):
            raise self.fail(f"{name or key} must be {what}, not {_short(value)}")
        return value


def _features(m: _Meta) -> list[dict]:
    feats = m.get("features", lambda v: isinstance(v, list), "a list")
    for i, f in enumerate(feats):
        where = f"features[{i}]"
        if not isinstance(f, dict):
            raise m.fail(f"{where} must be an object, not {_short(f)}")
        m.get("name", lambda v: isinstance(v, str) and bool(v), "a name", f, f"{where}.name")
        m.get("role", lambda v: v in ROLES, "one of " + ", ".join(ROLES), f, f"{where}.role")
        m.get(
            "shape",
            lambda v: isinstance(v, list) and len(v) in (1, 2) and all(_int(x, 1) for x in v),
            "a list of one or two positive integers",
            f,
            f"{where}.shape",
        )
        m.get("provenance", lambda v: isinstance(v, dict), "an object", f, f"{where}.provenance")
        if (f["role"] == "tokens") != (len(f["shape"]) == 2):
            raise m.fail(f"{where}: role {f['role']!r} does not go with rows of shape {f['shape']}")
    return feats


def _history(m: _Meta) -> None:
    hist = m.meta.get("history", {})
    if not isinstance(hist, dict):
        raise m.fail(f"history must be an object, not {_short(hist)}")
    epochs = hist.get("epochs", [])
    ok = isinstance(epochs, list) and all(
        isinstance(e, dict)
        and all(_num(e.get(k)) for k in ("epoch", "train_loss", "train_acc"))
        and all(_num(v) for k, v in e.items() if k.startswith("val_"))
        for e in epochs
    )
    if not ok:
        raise m.fail("history.epochs must be a list of {epoch, train_loss, train_acc, ...} numbers")
    if hist.get("best_epoch") is not None and not _int(hist.get("best_epoch")):
        raise m.fail(f"history.best_epoch must be an integer, not {_short(hist.get('best_epoch'))}")


def _estimator(m: _Meta, cls: type) -> Any:
    hp = m.get("hparams", lambda v: isinstance(v, dict), "an object")
    names = cls().get_params()
    head = cls(**{k: v for k, v in hp.items() if k in names})
    try:
        head.validate_params()
    except ValueError as exc:
        raise m.fail(f"hparams: {exc}") from None
    return head


def _expect_shapes(m: _Meta, shapes: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> None:
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    if missing or extra:
        what = (
            f"lacks {', '.join(missing[:3])}" if missing else f"has tensors the head does not: {', '.join(extra[:3])}"
        )
        raise HeadError(
            f"{m.path}: {checkpoint.WEIGHTS} {what} (the head described in {checkpoint.META} "
            "does not match its weights)"
        )
    for key, shape in expected.items():
        if tuple(shapes[key]) != tuple(shape):
            raise HeadError(
                f"{m.path}: {checkpoint.META} describes {key} of shape {tuple(shape)}, "
                f"{checkpoint.WEIGHTS} holds {tuple(shapes[key])}"
            )


def _torch_head(m: _Meta, head: Any, dims: dict, shapes: dict, classes: int) -> Any:
    """Build the network on the meta device, compare shapes, then build it for real and load."""
    head.dims_, head.classes_ = dims, np.arange(classes)
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in head._net(dims).state_dict().items()}
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        raise m.fail(f"dims do not describe a head ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})") from None
    _expect_shapes(m, shapes, expected)
    tensors = _tensors(m)
    net = head._net(dims)
    net.load_state_dict(tensors)
    head.net_ = net.eval()
    return head


def _tensors(m: _Meta) -> dict[str, torch.Tensor]:
    tensors = checkpoint.load_tensors(m.path)
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise HeadError(f"{m.path}: {checkpoint.WEIGHTS} holds NaN or infinite values in {key}")
    return tensors


def _dims(m: _Meta, keys: dict[str, int]) -> dict:
    dims = m.get("dims", lambda v: isinstance(v, dict), "an object")
    for key, low in keys.items():
        m.get(key, lambda v, low=low: _int(v, low), f"an integer >= {low}", dims, f"dims.{key}")
    return dims


def _widths(feats: list[dict]) -> dict[str, int]:
    out = {"audio": 0, "visual": 0, "tokens": 0, "patches": 0}
    for f in feats:
        out[f["role"]] += f["shape"][-1]
        if f["role"] == "tokens":
            out["patches"] = f["shape"][0]
    return out


def avqa(path: str) -> tuple[dict, AvqaHead | QuestionOnlyHead]:
    """The AVQA head (or question-only baseline) saved at ``path``, checked, and its meta."""
    m = _Meta(str(path), checkpoint.read_meta(path))
    if m.meta.get("task") != "avqa":
        raise HeadError(f"{path} is a {_short(m.meta.get('task'))} head, not an AVQA head")
    model = m.get("model", lambda v: v in AVQA_MODELS, "one of " + ", ".join(AVQA_MODELS))
    answers = m.get("answers", _strings, "a list of answer strings")
    feats = _features(m)
    _history(m)
    qspec = m.get(
        "question", lambda v: isinstance(v, dict) and v.get("kind") in ("bow", "text"), "an object of kind bow or text"
    )
    head = _estimator(m, AVQA_MODELS[model])
    dims = _dims(
        m,
        {"q": 1, "n_answers": 1, "max_len": 0}
        if model == "question-only"
        else {"q": 1, "n_answers": 1, "max_len": 1, "a": 0, "v": 0, "t": 0, "p": 0},
    )
    if dims["n_answers"] != len(answers):
        raise m.fail(f"lists {len(answers)} answers but the head has {dims['n_answers']} outputs")
    if qspec["kind"] == "bow":
        try:
            enc = BowQuestionEncoder.from_json(qspec)
            ok = all(_strings(getattr(enc, k), 0) for k in ("words", "templates", "slots", "named"))
        except (KeyError, TypeError) as exc:
            raise m.fail(f"question: not a bag-of-words encoding ({type(exc).__name__})") from None
        if not ok or enc.dim != dims["q"]:
            raise m.fail(
                f"question: the bag-of-words encoding has {enc.dim if ok else 'malformed'} dimensions, "
                f"the head takes {dims['q']}"
            )
    else:
        m.get("encoder", lambda v: isinstance(v, str) and bool(v), "a text encoder name", qspec, "question.encoder")
    if model == "avqa-head":
        w = _widths(feats)
        got = {"a": w["audio"], "v": w["visual"], "t": w["tokens"], "p": w["patches"]}
        bad = [k for k, v in got.items() if dims[k] != v]
        if bad:
            raise m.fail(f"dims.{bad[0]} is {dims[bad[0]]} but its features give {got[bad[0]]}")
        if "spatial" in dims:
            _spatial(m, dims)
    shapes = checkpoint.weight_shapes(path)
    return m.meta, _torch_head(m, head, dims, shapes, len(answers))


def _spatial(m: _Meta, dims: dict) -> None:
    sp = m.get("spatial", lambda v: isinstance(v, dict), "an object", dims, "dims.spatial")
    grid = m.get("grid", lambda v: _int(v, 1), "a positive integer", sp, "dims.spatial.grid")
    cells = m.get(
        "cells",
        lambda v: isinstance(v, list) and bool(v) and all(_int(c) for c in v),
        "a list of indices",
        sp,
        "dims.spatial.cells",
    )
    ild = m.get(
        "ild", lambda v: isinstance(v, list) and all(_int(c) for c in v), "a list of indices", sp, "dims.spatial.ild"
    )
    m.get("ild_sign", lambda v: v in (-1, 1), "1 or -1", sp, "dims.spatial.ild_sign")
    if max(cells) + grid * grid > dims["v"] or any(i >= dims["a"] for i in ild):
        raise m.fail("dims.spatial points outside the audio or visual vector")


def classifier(path: str) -> tuple[dict, Any]:
    """The clip classifier saved at ``path``, checked, and its meta."""
    m = _Meta(str(path), checkpoint.read_meta(path))
    if m.meta.get("task") != "classify":
        raise HeadError(f"{path} is a {_short(m.meta.get('task'))} head, not a classifier")
    model = m.get("model", lambda v: v in CLASSIFY_MODELS, "one of " + ", ".join(CLASSIFY_MODELS))
    labels = m.get("labels", lambda v: _strings(v, 2), "a list of at least two label strings")
    feats = _features(m)
    if not feats:
        raise m.fail("lists no features")
    _history(m)
    head = _estimator(m, CLASSIFY_MODELS[model])
    dims = m.get("dims", lambda v: isinstance(v, dict), "an object")
    widths = [f["shape"][-1] for f in feats]
    if dims.get("features") != widths:
        raise m.fail(f"dims.features must be the features' widths {widths}, not {_short(dims.get('features'))}")
    if model == "attention":
        m.get("max_len", lambda v: _int(v, 1), "a positive integer", dims, "dims.max_len")
    elif dims.get("max_len") is not None and not _int(dims.get("max_len"), 1):
        raise m.fail(f"dims.max_len must be a positive integer, not {_short(dims.get('max_len'))}")
    shapes = checkpoint.weight_shapes(path)
    if model != "linear":
        return m.meta, _torch_head(m, head, dims, shapes, len(labels))
    d, n = sum(widths), (1 if len(labels) == 2 else len(labels))
    _expect_shapes(m, shapes, {"coef": (n, d), "intercept": (n,), "classes": (len(labels),), "mean": (d,), "std": (d,)})
    return m.meta, LinearProbe.restore(m.meta["hparams"], dims, range(len(labels)), _tensors(m))


def task(path: str | Path) -> str:
    """The task of the head at ``path`` (``avqa`` or ``classify``), from a checked ``head.json``."""
    meta = checkpoint.read_meta(path)
    if meta.get("task") not in ("avqa", "classify"):
        raise HeadError(f"{path}: {checkpoint.META} task must be avqa or classify, not {_short(meta.get('task'))}")
    return meta["task"]
