"""The study's statistics: accuracies with intervals over seeds and questions, paired comparisons.

Input per arm: a 0/1 correctness matrix ``(S seeds, n questions)``; every arm answers the same
``n`` test questions, and seed ``s`` of one arm is paired with seed ``s`` of another.

**Interval of a cell's mean accuracy** (docs/study.md): the seeds and the questions are crossed
(every seed answers every question), so the estimate ``mean over seeds and questions`` varies with
the questions drawn and with the training runs drawn. Each of ``B`` replicates

1. draws the test questions again *within each of the 9 question types* (as many as the type has,
   with replacement; one draw shared by every seed and every arm, because they all answer the same
   questions) and takes the mean over the drawn questions of each question's correctness averaged
   over the seeds (the bootstrap over questions within each seed, combined across seeds), and
2. adds a Student-t draw (``S - 1`` degrees of freedom) scaled to the variance of the training-run (seed) component of the mean,
   ``sigma_seed^2 / S``, estimated from the seeds x questions table by the two-way analysis of
   variance (``sigma_seed^2 = max(0, (MS_seeds - MS_residual) / n)``): the part of the seeds'
   differences that the question-by-seed noise does not explain. It needs at least 3 seeds.

The 95% interval is the 2.5th and 97.5th percentile of the replicates, clipped to [0, 1]
(differences: [-1, 1]). (Redrawing seeds with
replacement on top of the questions, the "pigeonhole" bootstrap, counts the question-by-seed noise
twice: in a simulation it gave a 0.5% false-positive rate at the 5% level.)

**Paired difference** (arm minus baseline): the same computation on the difference table
``c_arm[s, i] - c_base[s, i]`` (same questions, seeds paired by index, same question draws); a
difference is marked when its interval excludes 0.
**Paired test**: a sign-flip permutation test on the per-question difference of correctness
averaged over seeds, ``d_i = mean_s c_arm[s, i] - mean_s c_base[s, i]``: under "no difference"
each ``d_i`` is as likely to have either sign; the p-value is the share of ``P`` random sign
flips whose ``|mean d|`` is at least the observed one (the observed one counted among them).
Identical correctness gives a difference of exactly 0, an interval of [0, 0] and p = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from featpipe.avqa import GROUPS, QUESTION_TYPES

TYPE_KEYS: tuple[str, ...] = tuple(f"{g}/{t}" for g, t in QUESTION_TYPES)
CELLS: tuple[str, ...] = TYPE_KEYS + GROUPS + ("All",)
LEVEL = 0.95
MIN_SEEDS = 3  # with 2 the seed component has 1 degree of freedom (a Cauchy draw): intervals span the scale


class StatsError(ValueError):
    """The data cannot give an interval (too few seeds, no questions); one line."""


@dataclass(frozen=True)
class Design:
    """What every arm shares: each question's type key, and the bootstrap and permutation draws."""

    types: np.ndarray  # (n,) type key per question
    n_seeds: int
    weights: np.ndarray  # (B, n) how often each question is drawn (per-type multinomial)
    normal: np.ndarray  # (B,) Student-t draws (S - 1 degrees of freedom) for the seed component
    signs: np.ndarray  # (P, n) +1/-1 for the permutation test

    def cell_mask(self, cell: str) -> np.ndarray:
        if cell == "All":
            return np.ones(len(self.types), bool)
        if cell in GROUPS:
            return np.array([t.split("/")[0] == cell for t in self.types])
        return self.types == cell


def design(types: Sequence[str], n_seeds: int, boot: int = 2000, perms: int = 5000, seed: int = 0) -> Design:
    """Draw the replicates once (``seed`` fixes them, so a study's numbers are reproducible)."""
    if n_seeds < MIN_SEEDS:
        raise StatsError(
            f"an interval over seeds needs at least {MIN_SEEDS} seeds, got {n_seeds}; use --seeds 3 "
            "or more (5 recommended)"
        )
    types = np.asarray(list(types), dtype=object)
    if types.size == 0:
        raise StatsError("no test questions to compute statistics on")
    rng = np.random.default_rng([seed, 2112])
    w = np.zeros((boot, types.size), np.float32)
    for t in TYPE_KEYS:
        idx = np.flatnonzero(types == t)
        if idx.size:
            w[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=boot)
    normal = rng.standard_t(n_seeds - 1, boot)  # the seed component is estimated with S - 1 degrees of freedom
    signs = np.where(rng.random((perms, types.size)) < 0.5, -1.0, 1.0).astype(np.float32)
    return Design(types, n_seeds, w, normal, signs)


def seed_variance(x: np.ndarray) -> float:
    """The training-run component of the variance of the mean of a (seeds, questions) table:
    ``sigma_seed^2 / S`` with ``sigma_seed^2 = max(0, (MS_seeds - MS_residual) / n)`` (two-way ANOVA
    without replication)."""
    S, n = x.shape
    if S < 2:
        return 0.0
    grand = x.mean()
    s_mean, q_mean = x.mean(1), x.mean(0)
    ms_seeds = n * float(((s_mean - grand) ** 2).sum()) / (S - 1)
    resid = x - q_mean[None, :] - s_mean[:, None] + grand
    ms_resid = float((resid**2).sum()) / ((n - 1) * (S - 1)) if n > 1 else 0.0
    return max(0.0, (ms_seeds - ms_resid) / n) / S


def _replicates(d: Design, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B,) replicate means of one cell of the (seeds, questions) table ``x``."""
    c = x[:, mask].astype(np.float64)
    per_q = c.mean(0)  # each question's value averaged over the seeds
    boot = d.weights[:, mask] @ per_q / mask.sum()
    return boot + d.normal * np.sqrt(seed_variance(c))


def _interval(x: np.ndarray, bounds: tuple[float, float]) -> list[float]:
    """Percentile interval, clipped to the values the quantity can take (the t-draws can pass them)."""
    lo, hi = np.quantile(x, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return [float(np.clip(lo, *bounds)), float(np.clip(hi, *bounds))]


def accuracy_cells(d: Design, correct: np.ndarray) -> dict[str, dict]:
    """Per cell: ``{"accuracy", "interval", "n", "per_seed"}`` (``accuracy`` None for no question)."""
    correct = np.asarray(correct, dtype=bool)
    out = {}
    for cell in CELLS:
        mask = d.cell_mask(cell)
        n = int(mask.sum())
        if n == 0:
            out[cell] = {"accuracy": None, "interval": None, "n": 0, "per_seed": []}
            continue
        per_seed = correct[:, mask].mean(1)
        out[cell] = {
            "accuracy": float(per_seed.mean()),
            "interval": _interval(_replicates(d, correct, mask), (0.0, 1.0)),
            "n": n,
            "per_seed": [float(x) for x in per_seed],
        }
    return out


def paired_cells(d: Design, correct: np.ndarray, base: np.ndarray) -> dict[str, dict]:
    """Per cell, arm minus baseline: ``{"difference", "interval", "p", "significant", "n"}``."""
    correct, base = np.asarray(correct, dtype=bool), np.asarray(base, dtype=bool)
    if correct.shape != base.shape:
        raise StatsError(f"paired arms need the same seeds and questions: {correct.shape} vs {base.shape}")
    table = correct.astype(np.int8) - base.astype(np.int8)  # (S, n) in {-1, 0, 1}
    out = {}
    for cell in CELLS:
        mask = d.cell_mask(cell)
        n = int(mask.sum())
        if n == 0:
            out[cell] = {"difference": None, "interval": None, "p": None, "significant": False, "n": 0}
            continue
        lo, hi = _interval(_replicates(d, table, mask), (-1.0, 1.0))
        dq = table[:, mask].mean(0)
        obs = abs(float(dq.mean()))
        if not dq.any():
            p = 1.0
        else:
            flipped = np.abs(d.signs[:, mask] @ dq.astype(np.float32)) / n
            p = float((1 + np.sum(flipped >= obs - 1e-7)) / (1 + len(flipped)))
        out[cell] = {
            "difference": float(dq.mean()),
            "interval": [lo, hi],
            "p": p,
            "significant": bool(lo > 0 or hi < 0),
            "n": n,
        }
    return out


def study_statistics(
    types: Sequence[str],
    correct: Mapping[str, np.ndarray],
    baseline: str,
    boot: int = 2000,
    perms: int = 5000,
    seed: int = 0,
) -> dict:
    """Every arm's cells and every other arm's paired comparison with ``baseline``."""
    n_seeds = {a: np.asarray(c).shape[0] for a, c in correct.items()}
    S = min(n_seeds.values())
    d = design(types, S, boot, perms, seed)
    return {
        "arms": {a: accuracy_cells(d, c) for a, c in correct.items()},
        "vs_baseline": {a: paired_cells(d, c, correct[baseline]) for a, c in correct.items() if a != baseline},
        "method": {
            "level": LEVEL,
            "bootstrap": boot,
            "permutations": perms,
            "draw_seed": seed,
            "interval": "percentile; per replicate: questions redrawn within each question type "
            "(shared by seeds and arms), plus a Student-t draw of the seed component "
            "(two-way ANOVA of the seeds x questions table)",
            "test": "paired sign-flip permutation test on per-question correctness averaged over seeds",
        },
    }
