"""The heads as scikit-learn-style estimators: validated parameters, plain numpy arrays in and out.

- :class:`AvqaHead`, :class:`QuestionOnlyHead`: MUSIC-AVQA answers. ``X`` is an
  :class:`~featpipe.heads.batches.AvqaArrays` (or a dict of its arrays): question embeddings
  ``q`` (N, Dq), ``vid`` (N,) the row of each question's video in the per-video arrays ``a``
  (V, T, Da), ``v`` (V, T, Dv), ``tok`` (V, T, P, Dt) and their masks ``mask_a``/``mask_v`` (V, T).
- :class:`LinearProbe`, :class:`MLPHead`, :class:`AttentionHead`: clip labels. ``X`` is one
  array or a list of per-feature arrays, ``(N, D_f)`` pooled (linear, mlp) or ``(N, T, D_f)``
  with ``mask`` ``(N, T)`` (attention).

``Head(**params)``: an unknown parameter is a ``TypeError`` naming it, a bad value a
``ValueError`` from ``fit``; ``get_params``/``set_params``/``sklearn.base.clone`` work as for any
scikit-learn estimator. ``fit(X, y, X_val, y_val, classes=None)``: early stopping on the
validation set (none: the last epoch is kept); ``classes`` fixes the label set (labels outside it
carry no loss and count as wrong). ``predict``, ``predict_proba``, ``score`` (accuracy).
The file-level functions in :mod:`.qa` and :mod:`.classify` read the cache and the question or
label files, build these, and save them (``dims_``, ``history_``, :meth:`state` and
:meth:`restore`) as head checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from .batches import AvqaArrays, AvqaBatches, ClipBatches, masked_stats
from .models import AttentionNet, AvqaNet, MLPNet, QuestionOnlyNet
from .spatial import AvqaSpatialNet
from .train import fit, predict_logits, seed_everything

Check = tuple[Callable[[Any], bool], str]  # (is the value valid, what it must be)

_POS_INT: Check = (lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1,
                   "a positive integer")
_POS: Check = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "a positive number")
_NONNEG: Check = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
                  "a number >= 0")
_PROB: Check = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
                "a number in [0, 1)")
_ANY_INT: Check = (lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool), "an integer")
_BOOL: Check = (lambda v: isinstance(v, bool), "True or False")


def _one_of(*choices: str) -> Check:
    return (lambda v: v in choices, "one of " + ", ".join(choices))


TRAINING = {"lr": _POS, "weight_decay": _NONNEG, "batch_size": _POS_INT, "max_epochs": _POS_INT,
            "patience": _POS_INT, "seed": _ANY_INT, "verbose": _BOOL}
NOT_HYPER = ("seed", "verbose", "layout")  # estimator parameters that are not hyperparameters


class _Head(ClassifierMixin, BaseEstimator):
    """Parameter checks and label handling shared by every head."""

    _checks: ClassVar[dict[str, Check]] = {}

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """Default values of the parameters a user tunes (``seed``, ``verbose`` and the spatial
        ``layout`` are not among them)."""
        return {k: v for k, v in cls().get_params().items() if k not in NOT_HYPER}

    def validate_params(self) -> None:
        for name, (ok, what) in self._checks.items():
            value = getattr(self, name)
            if not ok(value):
                raise ValueError(f"{type(self).__name__}: {name} must be {what}, not {value!r}")

    def _set_classes(self, y: np.ndarray, classes: Sequence | None) -> None:
        if classes is None:
            known = [c for c in np.asarray(y, dtype=object).tolist() if c is not None]
            classes = sorted(set(known))
        self.classes_ = np.asarray(classes)
        if len(self.classes_) == 0:
            raise ValueError("no labels to learn")

    def _encode(self, y: Any) -> np.ndarray:
        """Label indices, -1 for a label outside ``classes_`` (no loss, always counted wrong)."""
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        return np.array([index.get(c, -1) for c in np.asarray(y, dtype=object).tolist()], dtype=np.int64)

    def predict_proba(self, X: Any, **kw: Any) -> np.ndarray:
        """Class probabilities ``(N, len(classes_))``."""
        logits = self.decision_function(X, **kw)
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

    def predict(self, X: Any, **kw: Any) -> np.ndarray:
        return self.classes_[self.decision_function(X, **kw).argmax(1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None, **kw: Any) -> float:
        """Accuracy; a label the training set lacked is never predicted, so counts as wrong."""
        from sklearn.metrics import accuracy_score

        return float(accuracy_score(np.asarray(y, dtype=object), self.predict(X, **kw).astype(object),
                                    sample_weight=sample_weight))


class _TorchHead(_Head):
    """Training loop plumbing for the torch heads: ``_net(dims)``, ``_batches(X, y)``."""

    desc: ClassVar[str] = "head"

    def _fit_net(self, dims: dict, stats: Callable[[torch.nn.Module], None], train, val) -> "_TorchHead":
        self.dims_ = dims
        seed_everything(self.seed)
        net = self._net(dims)
        stats(net)
        self.history_ = fit(net, train, val, lr=self.lr, weight_decay=self.weight_decay,
                            max_epochs=self.max_epochs, patience=self.patience, seed=self.seed,
                            progress=self.verbose, desc=self.desc, schedule=getattr(self, "schedule", "constant"))
        self.net_ = net.eval()
        return self

    def state(self) -> dict[str, torch.Tensor]:
        """The tensors to save (parameters and buffers, training statistics included)."""
        return self.net_.state_dict()

    @classmethod
    def restore(cls, params: Mapping[str, Any], dims: dict, classes: Sequence, tensors: Mapping[str, Any]):
        """The fitted head from saved parameters (others are ignored), ``dims_``, classes and tensors."""
        names = cls().get_params()
        head = cls(**{k: v for k, v in params.items() if k in names})
        head.dims_, head.classes_ = dims, np.asarray(classes)
        net = head._net(dims)
        net.load_state_dict(tensors)
        head.net_ = net.eval()
        return head


def _set_std(module: torch.nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
    module.mean.copy_(torch.from_numpy(mean))
    module.std.copy_(torch.from_numpy(np.where(std < 1e-6, 1.0, std).astype(np.float32)))


def set_stats(net: torch.nn.Module, stats: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Put training statistics ``{"q"|"a"|"v"|"t": (mean, std)}`` into an AVQA net's
    ``<key>_std`` standardisers (those it has)."""
    for key, (mean, std) in stats.items():
        mod = getattr(net, f"{key}_std", None)
        if mod is not None:
            _set_std(mod, mean, std)


def _avqa_arrays(X: AvqaArrays | Mapping[str, np.ndarray], y: np.ndarray | None = None) -> AvqaArrays:
    d = X if isinstance(X, AvqaArrays) else AvqaArrays(**{"y": None, **dict(X)})
    return dataclasses.replace(d, y=np.zeros(len(d.q), np.int64) if y is None else y)


class _AvqaBase(_TorchHead):
    use_video: ClassVar[bool] = True

    def training_stats(self, X: AvqaArrays | Mapping[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The standardisation statistics ``fit`` computes from training questions ``X``; give them to
        ``fit(stats=...)`` to train several heads on the same arrays without recomputing them (a
        study's seeds: 1 to 3 s an arm at MUSIC-AVQA scale)."""
        return self._stats(_avqa_arrays(X, None))

    def _stats(self, d: AvqaArrays) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        used = np.unique(d.vid)  # statistics over the training videos actually asked about
        out = {"q": masked_stats(d.q)}
        if self.use_video:
            for key, arr, mask in (("a", d.a, d.mask_a), ("v", d.v, d.mask_v), ("t", d.tok, d.mask_v)):
                if arr is not None:
                    out[key] = masked_stats(arr, mask, rows=used)
        return out

    def _dims(self, d: AvqaArrays) -> dict:
        T = next((x.shape[1] for x in (d.a, d.v, d.tok) if x is not None), 0)
        return {"q": d.q.shape[1], "a": 0 if d.a is None else d.a.shape[-1],
                "v": 0 if d.v is None else d.v.shape[-1], "t": 0 if d.tok is None else d.tok.shape[-1],
                "p": 0 if d.tok is None else d.tok.shape[-2], "max_len": T, "n_answers": len(self.classes_)}

    def fit(self, X, y, X_val=None, y_val=None, classes: Sequence | None = None, max_len: int | None = None,
            stats: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None):
        """Train on questions ``X`` with answers ``y``. ``max_len``: segments per video (default:
        the arrays' length); ``stats``: standardisation statistics to use instead of ``X``'s."""
        self.validate_params()
        self._set_classes(y, classes)
        tr = _avqa_arrays(X, self._encode(y))
        self._check_inputs(tr)
        dims = self._dims(tr)
        if max_len is not None:
            dims["max_len"] = max_len
        stats = dict(stats) if stats is not None else self._stats(tr)
        if X_val is not None and y_val is None:
            raise ValueError("X_val needs y_val")
        val = None if X_val is None else AvqaBatches(_avqa_arrays(X_val, self._encode(y_val)), self.batch_size,
                                                     self.use_video)
        return self._fit_net(dims, lambda net: set_stats(net, stats), AvqaBatches(tr, self.batch_size, self.use_video),
                             val)

    def _check_inputs(self, d: AvqaArrays) -> None:
        pass

    def decision_function(self, X) -> np.ndarray:
        """Answer logits ``(N, len(classes_))``."""
        d = _avqa_arrays(X)
        return predict_logits(self.net_, AvqaBatches(d, self.batch_size, self.use_video).eval(), len(d.q))


ARCHS = ("auto", "spatial", "temporal")


def resolve_arch(arch: str, spatial_possible: bool) -> str:
    """The AVQA head's architecture, decided here only: "spatial" (grid cells and pointers) when asked
    for or, with "auto", when the inputs allow it (audio, a visual feature with grid cells, no patch
    tokens); else "temporal" (question-guided attention over segments)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown AVQA architecture {arch!r}; choose {', '.join(ARCHS)}")
    if arch == "spatial" and not spatial_possible:
        raise ValueError("the spatial AVQA head needs audio, a visual feature with grid cells (e.g. priors and "
                         "motion) and no patch tokens")
    return "spatial" if arch == "spatial" or (arch == "auto" and spatial_possible) else "temporal"


class AvqaHead(_AvqaBase):
    """The MUSIC-AVQA head on question embeddings and per-video audio/visual segments.

    ``arch``: "temporal" (question-guided attention over segments, :class:`.models.AvqaNet`),
    "spatial" (grid cells as spatial tokens, question pointers, stereo cues:
    :class:`.spatial.AvqaSpatialNet`; needs audio, a visual vector with grid cells described by
    ``layout`` (a :meth:`.layout.StreamLayout.to_json` dict) and no patch tokens), or "auto"
    (spatial where it can). The resolved one is ``arch_``.
    """

    desc = "avqa-head"
    _checks = {"hidden": _POS_INT, "dropout": _PROB, "schedule": _one_of("constant", "cosine"),
               "arch": _one_of(*ARCHS), "pointers": _POS_INT, **TRAINING}

    def __init__(self, hidden: int = 128, dropout: float = 0.1, lr: float = 1e-3, weight_decay: float = 0.0,
                 batch_size: int = 64, max_epochs: int = 30, patience: int = 30, schedule: str = "cosine",
                 arch: str = "auto", pointers: int = 2, layout: dict | None = None, seed: int = 0,
                 verbose: bool = False) -> None:
        self.hidden, self.dropout, self.lr, self.weight_decay = hidden, dropout, lr, weight_decay
        self.batch_size, self.max_epochs, self.patience, self.schedule = batch_size, max_epochs, patience, schedule
        self.arch, self.pointers, self.layout, self.seed, self.verbose = arch, pointers, layout, seed, verbose

    def _check_inputs(self, d: AvqaArrays) -> None:
        if d.a is None and d.v is None and d.tok is None:
            raise ValueError("AvqaHead needs audio or visual arrays (QuestionOnlyHead otherwise)")
        lay = self.layout or {}
        self.arch_ = resolve_arch(self.arch, bool(lay.get("grid") and lay.get("cells")) and d.a is not None
                                  and d.v is not None and d.tok is None)

    def _dims(self, d: AvqaArrays) -> dict:
        dims = super()._dims(d)
        if self.arch_ == "spatial":
            dims["spatial"] = dict(self.layout)
        return dims

    def _net(self, dims: dict) -> torch.nn.Module:
        if "spatial" in dims:
            self.arch_ = "spatial"
            sp = dims["spatial"]
            return AvqaSpatialNet(dims["q"], dims["n_answers"], dims["max_len"], a_dim=dims["a"], v_dim=dims["v"],
                                  grid=sp["grid"], cells=sp["cells"], ild=sp["ild"], ild_sign=sp["ild_sign"],
                                  hidden=self.hidden, pointers=self.pointers, dropout=self.dropout)
        self.arch_ = "temporal"
        return AvqaNet(dims["q"], dims["n_answers"], dims["max_len"], a_dim=dims["a"], v_dim=dims["v"],
                       t_dim=dims["t"], t_patches=dims.get("p", 0), hidden=self.hidden, dropout=self.dropout)


class QuestionOnlyHead(_AvqaBase):
    """The question-only baseline: an MLP on the question embedding (``X.q``); video arrays are
    ignored."""

    desc = "question-only"
    use_video = False
    _checks = {"hidden": _POS_INT, "dropout": _PROB, "schedule": _one_of("constant", "cosine"), **TRAINING}

    def __init__(self, hidden: int = 256, dropout: float = 0.1, lr: float = 1e-3, weight_decay: float = 0.0,
                 batch_size: int = 64, max_epochs: int = 30, patience: int = 30, schedule: str = "cosine",
                 seed: int = 0, verbose: bool = False) -> None:
        self.hidden, self.dropout, self.lr, self.weight_decay = hidden, dropout, lr, weight_decay
        self.batch_size, self.max_epochs, self.patience, self.schedule = batch_size, max_epochs, patience, schedule
        self.seed, self.verbose = seed, verbose

    def _net(self, dims: dict) -> torch.nn.Module:
        return QuestionOnlyNet(dims["q"], dims["n_answers"], hidden=self.hidden, dropout=self.dropout)


# --- clip classifiers --------------------------------------------------------------------------

def _features(X: Any) -> list[np.ndarray]:
    return [np.asarray(x) for x in X] if isinstance(X, (list, tuple)) else [np.asarray(X)]


class _ClipTorchHead(_TorchHead):
    sequence: ClassVar[bool] = False

    def _mask(self, feats: list[np.ndarray], mask: np.ndarray | None) -> np.ndarray | None:
        if not self.sequence:
            return None
        return np.ones(feats[0].shape[:2], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)

    def fit(self, X, y, X_val=None, y_val=None, classes: Sequence | None = None, mask=None, mask_val=None):
        """Train on ``X`` (one array or a list of per-feature arrays) with labels ``y``."""
        self.validate_params()
        self._set_classes(y, classes)
        feats = _features(X)
        if len(feats[0]) < 2:
            raise ValueError("need at least two training samples")
        mtr = self._mask(feats, mask)
        dims = {"features": [f.shape[-1] for f in feats], "max_len": feats[0].shape[1] if self.sequence else None}

        def set_stats(net: torch.nn.Module) -> None:
            for s, f in zip(net.std, feats):
                _set_std(s, *masked_stats(f, mtr))

        train = ClipBatches(feats, self._encode(y), self.batch_size, mtr)
        val = None
        if X_val is not None:
            fv = _features(X_val)
            val = ClipBatches(fv, self._encode(y_val), self.batch_size, self._mask(fv, mask_val))
        return self._fit_net(dims, set_stats, train, val)

    def decision_function(self, X, mask=None) -> np.ndarray:
        feats = _features(X)
        n = len(feats[0])
        batches = ClipBatches(feats, np.zeros(n, np.int64), self.batch_size, self._mask(feats, mask))
        return predict_logits(self.net_, batches.eval(), n)


class MLPHead(_ClipTorchHead):
    """HEAR-style MLP on pooled clip features (``layers`` x ``hidden``, batch norm, dropout);
    several features are combined by ``fusion`` ("concat" or "gated")."""

    desc = "mlp"
    _checks = {"hidden": _POS_INT, "layers": _POS_INT, "dropout": _PROB, "fusion": _one_of("concat", "gated"),
               **TRAINING}

    def __init__(self, hidden: int = 1024, layers: int = 1, dropout: float = 0.1, lr: float = 1e-3,
                 weight_decay: float = 0.0, batch_size: int = 1024, max_epochs: int = 500, patience: int = 20,
                 fusion: str = "concat", seed: int = 0, verbose: bool = False) -> None:
        self.hidden, self.layers, self.dropout, self.lr, self.weight_decay = hidden, layers, dropout, lr, weight_decay
        self.batch_size, self.max_epochs, self.patience, self.fusion = batch_size, max_epochs, patience, fusion
        self.seed, self.verbose = seed, verbose

    def _net(self, dims: dict) -> torch.nn.Module:
        return MLPNet(dims["features"], len(self.classes_), hidden=self.hidden, layers=self.layers,
                      dropout=self.dropout, fusion=self.fusion)


class AttentionHead(_ClipTorchHead):
    """Temporal attention pooling over the segment sequence ``(N, T, D_f)`` with ``mask``."""

    desc = "attention"
    sequence = True
    _checks = {"hidden": _POS_INT, "heads": _POS_INT, "dropout": _PROB, "fusion": _one_of("concat", "gated"),
               **TRAINING}

    def __init__(self, hidden: int = 256, heads: int = 4, dropout: float = 0.1, lr: float = 1e-3,
                 weight_decay: float = 0.0, batch_size: int = 64, max_epochs: int = 200, patience: int = 20,
                 fusion: str = "concat", seed: int = 0, verbose: bool = False) -> None:
        self.hidden, self.heads, self.dropout, self.lr, self.weight_decay = hidden, heads, dropout, lr, weight_decay
        self.batch_size, self.max_epochs, self.patience, self.fusion = batch_size, max_epochs, patience, fusion
        self.seed, self.verbose = seed, verbose

    def _net(self, dims: dict) -> torch.nn.Module:
        return AttentionNet(dims["features"], len(self.classes_), dims["max_len"], hidden=self.hidden,
                            heads=self.heads, dropout=self.dropout, fusion=self.fusion)


class LinearProbe(_Head):
    """Logistic regression (scikit-learn) on the standardised, concatenated features; ``C`` is
    picked from ``C_grid`` by validation accuracy (the first one without a validation set).

    Fitted: ``coef_``, ``intercept_`` (as ``LogisticRegression``'s), ``mean_``, ``std_``, ``C_``,
    ``val_accuracy_``. Probabilities are computed here from those arrays (softmax of the linear
    scores; a logistic sigmoid for two classes, as scikit-learn's multinomial model gives), so a
    saved probe needs no scikit-learn object to be rebuilt."""

    _checks = {"C_grid": (lambda v: len(v) > 0 and all(_POS[0](c) for c in v), "a list of positive numbers"),
               "max_iter": _POS_INT, "seed": _ANY_INT}

    def __init__(self, C_grid: Sequence[float] = (0.01, 0.1, 1.0, 10.0), max_iter: int = 2000, seed: int = 0) -> None:
        self.C_grid, self.max_iter, self.seed = C_grid, max_iter, seed

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        hp = super().hyperparameters()
        hp["C_grid"] = list(hp["C_grid"])
        return hp

    def _x(self, X: Any) -> np.ndarray:
        return np.concatenate(_features(X), axis=1) if isinstance(X, (list, tuple)) else np.asarray(X)

    def fit(self, X, y, X_val=None, y_val=None, classes: Sequence | None = None) -> "LinearProbe":
        from sklearn.linear_model import LogisticRegression

        self.validate_params()
        self._set_classes(y, classes)
        Xtr = self._x(X)
        mean, std = masked_stats(Xtr)
        self.mean_, self.std_ = mean, np.where(std < 1e-6, 1.0, std).astype(np.float32)
        ztr, ytr = (Xtr - self.mean_) / self.std_, self._encode(y)
        zva = None if X_val is None else (self._x(X_val) - self.mean_) / self.std_
        yva = None if y_val is None else self._encode(y_val)
        best = None
        for C in self.C_grid:
            clf = LogisticRegression(C=C, max_iter=self.max_iter, random_state=self.seed).fit(ztr, ytr)
            acc = float((clf.predict(zva) == yva).mean()) if zva is not None and len(yva) else 0.0
            if best is None or acc > best[0]:
                best = (acc, C, clf)
        self.val_accuracy_, self.C_, clf = best
        if len(clf.classes_) != len(self.classes_):
            raise ValueError("every class needs at least one training sample for the linear probe")
        self.coef_, self.intercept_ = clf.coef_.astype(np.float64), clf.intercept_.astype(np.float64)
        return self

    def decision_function(self, X) -> np.ndarray:
        z = (self._x(X) - self.mean_) / self.std_
        return z @ self.coef_.T + self.intercept_

    def predict_proba(self, X) -> np.ndarray:
        s = self.decision_function(X)
        if s.shape[1] == 1:  # two classes: one score, for the second class
            p = 1.0 / (1.0 + np.exp(-s[:, 0]))
            return np.stack([1.0 - p, p], axis=1)
        e = np.exp(s - s.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]

    def state(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef_, "intercept": self.intercept_, "classes": np.arange(len(self.classes_)),
                "mean": self.mean_, "std": self.std_}

    @classmethod
    def restore(cls, params: Mapping[str, Any], dims: dict, classes: Sequence, tensors: Mapping[str, Any]):
        names = cls().get_params()
        probe = cls(**{k: v for k, v in params.items() if k in names})
        probe.classes_ = np.asarray(classes)
        arr = {k: np.asarray(v) for k, v in tensors.items()}
        probe.coef_, probe.intercept_ = arr["coef"].astype(np.float64), arr["intercept"].astype(np.float64)
        probe.mean_, probe.std_ = arr["mean"], arr["std"]
        return probe
