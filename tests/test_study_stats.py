"""The study's statistics on simulated correctness (heads/stats.py), and the layer-mixing head."""

from __future__ import annotations

import numpy as np
import pytest

from featpipe.heads import stats
from featpipe.heads.batches import AvqaArrays
from featpipe.heads.estimators import AvqaHead
from featpipe.heads.layers import LayerMixHead
from featpipe.heads.stats import CELLS, TYPE_KEYS, StatsError


def _types(n: int) -> np.ndarray:
    return np.array([TYPE_KEYS[i % 9] for i in range(n)], dtype=object)


def _arm(rng, p: np.ndarray, seeds: int, seed_sd: float = 0.0) -> np.ndarray:
    shift = rng.normal(0, seed_sd, (seeds, 1)) if seed_sd else 0.0
    return rng.random((seeds, p.size)) < np.clip(p + shift, 0, 1)


@pytest.mark.parametrize("seed_sd", [0.0, 0.02])
def test_false_positive_rate_is_about_the_level(seed_sd):
    # Two arms with the same per-question difficulty (and, with seed_sd, training runs that shift a
    # whole seed's accuracy): every "significant" difference is a false positive.
    rng = np.random.default_rng(7)
    n, S, sims = 270, 3, 300
    types = _types(n)
    hits_interval = hits_test = 0
    for k in range(sims):
        p = rng.beta(2, 2, n)
        d = stats.design(types, S, boot=400, perms=400, seed=k)
        r = stats.paired_cells(d, _arm(rng, p, S, seed_sd), _arm(rng, p, S, seed_sd))["All"]
        hits_interval += r["significant"]
        hits_test += r["p"] < 0.05
    rate = hits_interval / sims
    # 300 simulations: a rate of 5% has a standard error of 1.3 points
    assert 0.015 <= rate <= 0.10, rate
    if seed_sd == 0.0:
        assert 0.015 <= hits_test / sims <= 0.10


def test_a_real_difference_is_found_and_identical_arms_are_exactly_zero():
    rng = np.random.default_rng(1)
    n, S = 900, 3
    types = _types(n)
    p = rng.beta(2, 2, n)
    base = _arm(rng, p, S)
    better = _arm(rng, np.clip(p + 0.12, 0, 1), S)
    out = stats.study_statistics(
        types, {"base": base, "better": better, "same": base.copy()}, "base", boot=500, perms=500
    )
    assert out["vs_baseline"]["better"]["All"]["significant"] and out["vs_baseline"]["better"]["All"]["p"] < 0.01
    for cell in CELLS:
        same = out["vs_baseline"]["same"][cell]
        assert same == {"difference": 0.0, "interval": [0.0, 0.0], "p": 1.0, "significant": False, "n": same["n"]}
        assert out["arms"]["same"][cell] == out["arms"]["base"][cell]
    acc = out["arms"]["base"]["All"]
    assert acc["accuracy"] == pytest.approx(base.mean()) and acc["per_seed"] == pytest.approx(base.mean(1))
    assert out["arms"]["base"]["Audio"]["n"] == 200 and out["arms"]["base"]["Audio/Counting"]["n"] == 100


def test_interval_widens_with_training_noise_and_shrinks_with_questions():
    rng = np.random.default_rng(3)
    p = rng.beta(2, 2, 1800)

    def width(n, sd):
        x = _arm(np.random.default_rng(5), p[:n], 5, sd)
        c = stats.accuracy_cells(stats.design(_types(n), 5, boot=800, perms=10), x)["All"]["interval"]
        return c[1] - c[0]

    assert width(1800, 0.0) < width(450, 0.0) < width(450, 0.05)


def test_too_few_seeds_and_no_questions():
    with pytest.raises(StatsError, match="at least 3 seeds"):
        stats.design(_types(10), 2)
    with pytest.raises(StatsError, match="no test questions"):
        stats.design([], 3)


def _arrays(rng, V=24, T=4, n=72, flat=15 + 3 * 5):
    return AvqaArrays(
        q=rng.normal(size=(n, 6)).astype(np.float32),
        vid=np.arange(n) % V,
        y=rng.integers(0, 3, n),
        a=rng.normal(size=(V, T, flat)).astype(np.float32),
        mask_a=np.ones((V, T), bool),
    )


def test_layer_mix_head_without_blocks_is_the_plain_head_bit_for_bit():
    d = _arrays(np.random.default_rng(0))
    a = AvqaHead(max_epochs=2, arch="temporal", seed=4).fit(d, d.y, classes=range(3))
    b = LayerMixHead(max_epochs=2, arch="temporal", seed=4).fit(d, d.y, classes=range(3))
    assert np.array_equal(a.decision_function(d), b.decision_function(d)) and b.layer_weights() == {}


def test_layer_mix_learns_the_layer_that_carries_the_answer():
    rng = np.random.default_rng(2)
    V, T, L, D = 240, 3, 4, 6
    z = rng.normal(size=(V, D)).astype(np.float32)
    layers = rng.normal(size=(V, T, L, D)).astype(np.float32)
    layers[:, :, 2] = z[:, None] + 0.1 * rng.normal(size=(V, T, D))
    y_v = (z[:, 0] > 0).astype(np.int64)
    d = AvqaArrays(
        q=np.ones((V, 2), np.float32),
        vid=np.arange(V),
        y=y_v,
        a=layers.reshape(V, T, L * D),
        mask_a=np.ones((V, T), bool),
    )
    head = LayerMixHead(max_epochs=30, arch="temporal", lr=3e-3, layer_blocks={"a": [[L, D]]}, seed=0)
    head.fit(d, d.y, classes=range(2))
    w = head.layer_weights()["a"][0]
    assert int(np.argmax(w)) == 2 and w[2] > 0.3, w
    assert (head.predict(d) == d.y).mean() > 0.75  # chance: 0.5


def test_fit_with_precomputed_training_stats_is_the_same_training():
    """A study computes each arm's training statistics once per worker and gives them to every
    seed's fit: the same standardisers, so the same weights and predictions bit for bit."""
    d = _arrays(np.random.default_rng(3))
    d.a[:] = d.a * 5 + 2  # statistics far from (0, 1): a head without them would differ
    kw = {"max_epochs": 3, "arch": "temporal", "layer_blocks": {"a": [[3, 5]]}, "seed": 1}
    plain = LayerMixHead(**kw).fit(d, d.y, classes=range(3))
    stats = LayerMixHead(**kw).training_stats(d)
    given = LayerMixHead(**kw).fit(d, d.y, classes=range(3), stats=stats)
    assert np.array_equal(plain.decision_function(d), given.decision_function(d))
    assert np.allclose(stats["a"][0], d.a.reshape(-1, d.a.shape[-1]).mean(0), atol=1e-5)
    off = LayerMixHead(**kw).fit(d, d.y, classes=range(3), stats={k: (m * 0, s * 0 + 1) for k, (m, s) in stats.items()})
    assert not np.array_equal(plain.decision_function(d), off.decision_function(d))
