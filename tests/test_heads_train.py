"""Training on tiny planted caches: determinism, learning a signal, chance on shuffled labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file
from test_heads_support import planted_avqa, planted_clips

from featpipe.heads import api
from featpipe.heads.data import HeadError

FAST = {"max_epochs": 25, "patience": 25, "batch_size": 32}


@pytest.fixture(scope="module")
def avqa(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("avqa")
    files = planted_avqa(tmp, n_videos=200)
    api.train_head(files["cache"], "avqa", files["train"], files["val"], None, tmp / "head", seed=0, hparams=FAST)
    return files, tmp / "head"


def _all(result, method):
    return result["tables"][method]["All"]["accuracy"]


def test_avqa_head_learns_planted_signal_and_beats_question_only(avqa, tmp_path):
    files, head = avqa
    r = api.evaluate(head, files["cache"], files["test"], report=tmp_path / "r.json", plot=tmp_path / "r.png")
    assert set(r["tables"]) == {"avqa-head", "question-only"}
    head_t, base_t = r["tables"]["avqa-head"], r["tables"]["question-only"]
    # chance given the question: 1/4 (four counts) and 1/2 (left/right); 40 test videos
    assert head_t["Audio/Counting"]["accuracy"] >= 0.65  # needs the audio segments
    assert head_t["Visual/Location"]["accuracy"] >= 0.8  # needs the visual segments
    assert base_t["Audio/Counting"]["accuracy"] <= 0.45 and _all(r, "avqa-head") > _all(r, "question-only") + 0.25
    assert head_t["All"]["n"] == 80 and head_t["Audio-Visual"]["n"] == 0
    saved = json.loads((tmp_path / "r.json").read_text())
    assert list(saved["tables"]["avqa-head"])[-1] == "All" and "over all questions" in saved["average_definition"]
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    files = planted_avqa(tmp_path, n_videos=30)
    hp = {"max_epochs": 3, "patience": 3, "batch_size": 16}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        api.train_head(files["cache"], "avqa", files["train"], files["val"], None, tmp_path / name, seed=seed,
                       hparams=hp)
    wa, wb, wc = (load_file(str(tmp_path / n / "weights.safetensors")) for n in "abc")
    assert wa.keys() == wb.keys()
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert not all(np.array_equal(wa[k], wc[k]) for k in wa)
    base = [load_file(str(tmp_path / n / "baseline" / "weights.safetensors")) for n in "ab"]
    assert all(np.array_equal(base[0][k], base[1][k]) for k in base[0])


def test_avqa_head_on_shuffled_answers_is_no_better_than_question_prior(tmp_path):
    files = planted_avqa(tmp_path, n_videos=200, shuffle=True)
    api.train_head(files["cache"], "avqa", files["train"], files["val"], None, tmp_path / "h", seed=0, hparams=FAST)
    r = api.evaluate(tmp_path / "h", files["cache"], files["test"])
    t = r["tables"]["avqa-head"]
    # chance given the question: 1/4 and 1/2; margins are 3 standard deviations for 40 questions
    assert t["Audio/Counting"]["accuracy"] <= 0.25 + 0.2
    assert t["Visual/Location"]["accuracy"] <= 0.5 + 0.24
    assert t["All"]["accuracy"] <= 0.375 + 0.17


@pytest.mark.parametrize("model,fusion", [("linear", "concat"), ("mlp", "concat"), ("mlp", "gated"),
                                          ("attention", "gated")])
def test_classifiers_learn_planted_classes(tmp_path, model, fusion):
    files = planted_clips(tmp_path, n_videos=300)
    hp = {"max_epochs": 40, "patience": 40, "fusion": fusion, "batch_size": 32}
    api.train_head(files["cache"], "classify", files["train"], files["val"], ["aud", "vis"], tmp_path / "h",
                   model=model, hparams=hp)
    r = api.evaluate(tmp_path / "h", files["cache"], files["test"], report=tmp_path / "r.json",
                     plot=tmp_path / "r.png")
    assert r["metrics"]["n"] == 60 and r["metrics"]["accuracy"] >= 0.7  # chance: about 1/4
    assert (tmp_path / "r.png").exists()
    n = api.predict(tmp_path / "h", files["cache"], files["test"], tmp_path / "p.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert n == len(rows) == 60 and rows[0]["label"].startswith("class")


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_classifiers_on_shuffled_labels_stay_at_chance(tmp_path, model):
    files = planted_clips(tmp_path, n_videos=400, shuffle=True)
    api.train_head(files["cache"], "classify", files["train"], files["val"], None, tmp_path / "h", model=model,
                   hparams={"max_epochs": 40, "patience": 10, "batch_size": 64})
    acc = api.evaluate(tmp_path / "h", files["cache"], files["test"])["metrics"]["accuracy"]
    assert acc <= 0.25 + 0.15  # 4 classes, 80 test videos: 3 standard deviations above chance


def test_linear_probe_is_stored_as_arrays_and_rebuilt(tmp_path):
    files = planted_clips(tmp_path)
    api.train_head(files["cache"], "classify", files["train"], files["val"], ["aud"], tmp_path / "h", model="linear")
    w = load_file(str(tmp_path / "h" / "weights.safetensors"))
    assert set(w) == {"coef", "intercept", "classes", "mean", "std"} and w["coef"].shape == (4, 8)
    meta = json.loads((tmp_path / "h" / "head.json").read_text())
    assert meta["history"]["C"] in meta["hparams"]["C_grid"]
    from featpipe import open_cache
    from featpipe.heads.classify import scores

    with open_cache(files["cache"]) as cache:
        _, ids, probs = scores(str(tmp_path / "h"), cache, [f"{i:08d}" for i in range(90, 120)])
        x, mask = cache.batch(ids, "aud")
    z = (x.mean(1) - w["mean"]) / w["std"]
    logits = z @ w["coef"].T + w["intercept"]
    expect = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs, expect / expect.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_tokens_and_cached_text_encoder(tmp_path):
    files = planted_avqa(tmp_path, n_videos=200, tokens=True, text=True)
    api.train_head(files["cache"], "avqa", files["train"], files["val"], None, tmp_path / "h", seed=0,
                   hparams=FAST, baseline=False)
    meta = json.loads((tmp_path / "h" / "head.json").read_text())
    assert meta["question"] == {"kind": "text", "encoder": "toy-text"} and meta["dims"]["q"] == 16
    assert [f["role"] for f in meta["features"]] == ["audio", "tokens"]
    assert any(k.startswith("t_proj") for k in load_file(str(tmp_path / "h" / "weights.safetensors")))
    t = api.evaluate(tmp_path / "h", files["cache"], files["test"])["tables"]
    assert list(t) == ["avqa-head"]
    assert t["avqa-head"]["Audio/Counting"]["accuracy"] >= 0.6 and t["avqa-head"]["Visual/Location"]["accuracy"] >= 0.6
    # tokens alone: the side is only in one of the four patches of each segment
    api.train_head(files["cache"], "avqa", files["train"], files["val"], ["vis-tokens"], tmp_path / "t", seed=0,
                   hparams=FAST, baseline=False)
    t = api.evaluate(tmp_path / "t", files["cache"], files["test"])["tables"]["avqa-head"]
    assert t["Visual/Location"]["accuracy"] >= 0.75 and t["Audio/Counting"]["accuracy"] <= 0.45


def test_bad_requests_fail_with_one_line(tmp_path, avqa):
    files, head = avqa
    with pytest.raises(HeadError, match="not in the cache"):
        api.train_head(files["cache"], "avqa", files["train"], files["val"], ["nope"], tmp_path / "h")
    with pytest.raises(HeadError, match="unknown task"):
        api.train_head(files["cache"], "segment", files["train"], files["val"], None, tmp_path / "h")
    with pytest.raises(HeadError, match="not a featpipe head"):
        api.evaluate(tmp_path, files["cache"], files["test"])
    with pytest.raises(HeadError, match="give questions, not videos"):
        api.predict(head, files["cache"], files["test"], tmp_path / "p.jsonl", kind="videos")


def test_avqa_net_fast_attention_equals_the_direct_forms():
    """AvqaNet pools segments per question against all of a batch's videos at once, attends
    over patch tokens without projecting each token and folds the standardisation into the first
    projections; all must give the direct forms' outputs and gradients (gather x[vid], batched
    products; project every token, then attend; standardise, then project)."""
    import math

    import torch

    from featpipe.heads.models import AvqaNet, masked_softmax

    torch.manual_seed(0)
    V, T, P, D, B = 7, 5, 4, 32, 16
    a, v = torch.randn(V, T, 12), torch.randn(V, T, 20)
    tok = torch.randn(V, T, P, D).half()
    ma, mv = torch.rand(V, T) > 0.2, torch.rand(V, T) > 0.2
    q, vid = torch.randn(B, 24), torch.randint(0, V, (B,))
    net = AvqaNet(24, 9, T, a_dim=12, v_dim=20, t_dim=D, t_patches=P, hidden=16, dropout=0.0)
    with torch.no_grad():  # non-trivial statistics and positions, so every term counts
        for std in (net.t_std, net.a_std, net.v_std, net.q_std):
            std.mean.copy_(torch.randn(len(std.mean)) * 0.3)
            std.std.copy_(torch.rand(len(std.std)) + 0.5)
        net.patch_pos.copy_(torch.randn(P, 16))
        net.pos.copy_(torch.randn(T, 16))

    def direct(tok, guide):
        k = net.t_proj(net.t_std(tok)) + net.patch_pos
        s = torch.einsum("vth,vtph->vtp", net.t_query(guide), k) / math.sqrt(net.hidden)
        return torch.einsum("vtp,vtph->vth", torch.softmax(s, dim=-1), k)

    def reference():
        qh = net.q_proj(net.q_std(q))  # standardised, then projected: the folded form's reference
        pooled = [qh]
        pos = net.pos[:T]
        xa = net.a_proj(net.a_std(a)) + pos
        xv = net.v_proj(net.v_std(v)) + pos
        xv = xv + direct(tok, xa)
        streams = {"a": (xa, ma), "v": (xv, mv), "f": (net.fuse(torch.cat([xa, xv, xa * xv], -1)), ma & mv)}
        for name, (x, m) in streams.items():
            xb = x[vid]
            s = torch.einsum("bth,bh->bt", xb, net.t_queries[name](qh)) / math.sqrt(net.hidden)
            pooled.append(torch.einsum("bt,bth->bh", masked_softmax(s, m[vid], dim=1), xb))
        return net.out(torch.cat(pooled, dim=-1))

    grads = []
    outs = []
    for f in (lambda: net(q, vid, a, v, tok, ma, mv), reference):
        net.zero_grad()
        out = f()
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    assert grads[0].keys() == grads[1].keys()
    for n in grads[1]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("chunk", [None, 3])
def test_masked_stats_equal_float64_over_the_used_rows(chunk):
    """Training statistics: chunked float32 passes combined in float64 equal a float64 computation
    over the valid rows of the used samples only (float16 tokens too), whatever the chunking."""
    from featpipe.heads.batches import masked_stats

    rng = np.random.default_rng(5)
    for shape, dtype in (((20, 6, 8), np.float32), ((20, 6, 3, 8), np.float16), ((40, 8), np.float32)):
        x = (rng.standard_normal(shape) * rng.uniform(0.1, 3, shape[-1]) + 50).astype(dtype)
        mask = rng.random(shape[:2]) > 0.3 if len(shape) > 2 else None
        rows = np.array([1, 2, 3, 7, 11, 12, 19])
        sel = x[rows].astype(np.float64)
        valid = sel[mask[rows]] if mask is not None else sel
        valid = valid.reshape(-1, shape[-1])
        mean, std = masked_stats(x, mask, chunk=chunk, rows=rows)
        np.testing.assert_allclose(mean, valid.mean(0), rtol=0, atol=1e-5 * valid.std(0).max())
        np.testing.assert_allclose(std, valid.std(0), rtol=1e-5)


def test_question_only_net_folded_standardisation_equals_the_direct_form():
    """QuestionOnlyNet folds ``(q - mean) / std`` into its first layer; outputs and gradients
    equal standardising first."""
    import torch

    from featpipe.heads.models import QuestionOnlyNet

    torch.manual_seed(0)
    net = QuestionOnlyNet(24, 9, (torch.randn(24) * 3, torch.rand(24) + 0.2), hidden=16, dropout=0.0)
    q = torch.randn(11, 24) * 2 + 1
    outs, grads = [], []
    for f in (lambda: net(q), lambda: net.mlp(net.q_std(q))):
        net.zero_grad()
        out = f()
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in net.named_parameters()})
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for n in grads[1]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-5, msg=n)
