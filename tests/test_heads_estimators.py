"""The heads as scikit-learn-style estimators on plain arrays; hyperparameter checks; clip metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import load_file, save_file
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from test_heads_support import planted_avqa, planted_clips

from featpipe.cli import main
from featpipe.heads import api
from featpipe.heads.data import HeadError
from featpipe.heads.estimators import AttentionHead, AvqaHead, LinearProbe, MLPHead, QuestionOnlyHead
from featpipe.heads.metrics import classification_metrics
from featpipe.heads.train import torch_threads

FAST = {"max_epochs": 30, "patience": 30, "batch_size": 32}


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):  # as the file-level functions run them (heads.train.torch_threads)
        yield


def _clips(n: int, seed: int, T: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, T, 8) sequences whose label (0-2) sets the mean of dims 0-2 on the valid segments."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, T, 8)).astype(np.float32)
    x[np.arange(n), :, y] += 2.5
    mask = np.ones((n, T), bool)
    mask[: n // 2, T - 2:] = False
    x[~mask] = 50.0  # padding the heads must not look at
    return x, np.array(["low", "mid", "high"])[y], mask


def test_macro_f1_is_scikit_learns():
    m = classification_metrics(["a", "b", "c"], [0, 0, 1], [0, 2, 1])
    assert m["macro_f1"] == pytest.approx(f1_score([0, 0, 1], [0, 2, 1], average="macro")) == pytest.approx(5 / 9)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["per_class"]["c"] == {"accuracy": None, "correct": 0, "n": 0}


def test_unknown_or_bad_hyperparameter_is_a_clear_error(tmp_path):
    with pytest.raises(TypeError, match="hiden"):
        AvqaHead(hiden=64)
    with pytest.raises(ValueError, match="dropout must be a number in"):
        MLPHead(dropout=1.5).fit(np.zeros((4, 2)), [0, 1, 0, 1])
    files = planted_avqa(tmp_path, n_videos=20)
    with pytest.raises(HeadError, match=r"unknown hyperparameter 'hiden' for the AVQA head; known: .*hidden"):
        api.train_head(files["cache"], "avqa", files["train"], files["val"], None, tmp_path / "h", hparams={"hiden": 8})
    with pytest.raises(HeadError, match="AvqaHead: schedule must be one of constant, cosine"):
        api.train_head(files["cache"], "avqa", files["train"], files["val"], None, tmp_path / "h",
                       hparams={"schedule": "linear"})
    assert not (tmp_path / "h").exists()  # refused before anything was trained or written
    # the CLI's --fusion belongs to the classifiers: one line, exit 2
    r = CliRunner().invoke(main, ["train-head", str(files["cache"]), "--task", "avqa", "--train", str(files["train"]),
                                  "--fusion", "gated", "-o", str(tmp_path / "h")])
    assert r.exit_code == 2 and "unknown hyperparameter 'fusion' for the AVQA head" in r.output
    assert r.output.count("\n") == 1
    clips = planted_clips(tmp_path / "c", n_videos=40)
    with pytest.raises(HeadError, match="unknown hyperparameter 'epochs' for a classifier"):
        api.train_head(clips["cache"], "classify", clips["train"], None, None, tmp_path / "k", model="mlp",
                       hparams={"epochs": 3})


def test_linear_probe_ignores_torch_hyperparameters_and_says_so(tmp_path):
    clips = planted_clips(tmp_path, n_videos=40)
    api.train_head(clips["cache"], "classify", clips["train"], None, ["aud"], tmp_path / "h", model="linear",
                   hparams={"max_epochs": 3, "max_iter": 500})
    meta = json.loads((tmp_path / "h" / "head.json").read_text())
    assert meta["hparams"] == {"C_grid": [0.01, 0.1, 1.0, 10.0], "max_iter": 500}
    assert meta["ignored_hparams"] == ["max_epochs"]


@pytest.mark.parametrize("cls", [MLPHead, AttentionHead, LinearProbe])
def test_clip_estimators_fit_predict_score_on_arrays(cls):
    x, y, mask = _clips(240, 0)
    xv, yv, mv = _clips(60, 1)
    xt, yt, mt = _clips(90, 2)
    seq = cls is AttentionHead
    pooled = [(a * m[..., None]).sum(1) / m.sum(1, keepdims=True) for a, m in ((x, mask), (xv, mv), (xt, mt))]
    params = {} if cls is LinearProbe else dict(FAST, hidden=32)
    head = cls(**params)
    assert clone(head).get_params() == head.get_params()
    kw = {"mask": mask, "mask_val": mv} if seq else {}
    inputs = (x, xv, xt) if seq else pooled
    head.fit(inputs[0], y, inputs[1], yv, **kw)
    test_kw = {"mask": mt} if seq else {}
    assert list(head.classes_) == ["high", "low", "mid"]
    pred = head.predict(inputs[2], **test_kw)
    assert pred.shape == (90,) and set(pred) <= set(head.classes_)
    proba = head.predict_proba(inputs[2], **test_kw)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    assert head.score(inputs[2], yt, **test_kw) >= 0.9  # chance 1/3
    assert head.score(inputs[2], np.array(["unseen"] * 90), **test_kw) == 0.0
    if seq:  # the padded segments (value 50) are masked out: unmasking them changes the answer
        assert not np.allclose(head.predict_proba(xt, mask=np.ones_like(mt)), proba, atol=1e-3)


def test_avqa_estimators_on_arrays():
    rng = np.random.default_rng(0)
    V, T, n_q = 120, 5, 480
    answer = rng.integers(0, 4, V)  # each video's answer is planted in its audio
    a = rng.normal(size=(V, T, 6)).astype(np.float32)
    a[np.arange(V), :, answer] += 3.0
    vid = rng.integers(0, V, n_q)
    X = {"q": rng.normal(size=(n_q, 10)).astype(np.float32), "vid": vid, "a": a, "v": None, "tok": None,
         "mask_a": np.ones((V, T), bool), "mask_v": None}
    y = np.array(["zero", "one", "two", "three"])[answer[vid]]
    tr, te = np.arange(n_q) < 400, np.arange(n_q) >= 400
    part, test = ({k: (v[m] if k in ("q", "vid") else v) for k, v in X.items()} for m in (tr, te))
    head = AvqaHead(hidden=32, max_epochs=40, patience=40, batch_size=32, schedule="constant", arch="auto")
    head.fit(part, y[tr])
    assert head.arch_ == "temporal"  # no grid-cell layout given
    assert head.score(test, y[te]) >= 0.9
    base = QuestionOnlyHead(hidden=32, max_epochs=10, patience=10).fit(part, y[tr])
    assert base.score(test, y[te]) <= 0.5  # the question embedding says nothing about the answer
    with pytest.raises(ValueError, match="spatial AVQA head needs"):
        AvqaHead(arch="spatial").fit(part, y[tr])


@pytest.mark.parametrize("n_classes", [2, 4])
def test_saved_linear_probe_equals_scikit_learns_model(tmp_path, n_classes):
    """A probe rebuilt from its saved arrays gives scikit-learn's own probabilities, without
    making a LogisticRegression out of them."""
    rng = np.random.default_rng(n_classes)
    x = rng.normal(size=(200, 5)) * [1, 2, 3, 4, 5] + 7
    y = rng.integers(0, n_classes, 200)
    x[np.arange(200), y % 5] += 2.0
    probe = LinearProbe(C_grid=[0.1, 1.0]).fit(x[:150], y[:150], x[150:], y[150:])
    z = (x - probe.mean_) / probe.std_
    ref = LogisticRegression(C=probe.C_, max_iter=2000, random_state=0).fit(z[:150], y[:150])
    save_file({k: np.ascontiguousarray(v) for k, v in probe.state().items()}, str(tmp_path / "w.safetensors"))
    loaded = LinearProbe.restore(probe.get_params(), {}, probe.classes_, load_file(str(tmp_path / "w.safetensors")))
    assert not any(isinstance(v, LogisticRegression) for v in vars(loaded).values())
    np.testing.assert_allclose(loaded.predict_proba(x), ref.predict_proba(z), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(loaded.predict(x), ref.predict(z))
