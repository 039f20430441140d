"""``featpipe study``: the same head trained on each arm's features with the same seeds and splits.

Plan: the arms (plus the question-only head, always), the seeds ``0 .. N-1``, one head with fixed
hyperparameters, the same train / val / test questions for every arm (questions whose video lacks
any of the study's features are dropped for all arms alike), early stopping as the head does it
(the epoch with the best validation accuracy is kept). Every feature is read from the cache once
and reaches the Dask workers once, shared by every arm and seed that uses it (:mod:`.share`).

Layout of ``OUT``::

    plan.json                       what the study is (a rerun must match it, then it resumes)
    runs/<arm>/seed-<s>.*           each run's predictions, record and failure, if any (:mod:`.runs`)
    predictions.jsonl               every run's predictions, concatenated (arm order, then seed)
    study.json, study.md, study.png, study.html   the report (:mod:`.report`)

Each run's files are written atomically as the run finishes (:mod:`.runs`, which also runs them
on Dask); a run counts as done when its record exists, so ``featpipe study ... -o OUT`` again
redoes only unfinished runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from . import report, stats
from .arms import (
    QUESTION_ONLY,
    Arm,
    arm_spec,
    file_sha256,
    fingerprint,
    input_width,
    load_inputs,
    parse_arms,
    resolve,
)
from .data import HeadError, opened
from .estimators import AvqaHead, QuestionOnlyHead
from .layers import LayerMixHead
from .params import check_hparams
from .runs import atomic_write, execute, run_paths

HEADS = ("temporal", "spatial")


class RunsFailed(HeadError):
    """Some runs failed (the others are written); the same command retries them."""


HEAD_HPARAMS = {k: v for k, v in AvqaHead.hyperparameters().items() if k != "arch"}


def _plan(
    cache: Any,
    arms: Sequence[Arm],
    baseline: str,
    seeds: int,
    head: str,
    hparams: dict,
    qhparams: dict,
    files: dict,
    metas: dict,
    inputs: Any,
) -> dict:
    return {
        "format": "featpipe-study",
        "version": 1,
        "cache": str(cache.path),
        "head": head,
        "arms": [{"name": a.name, "features": a.features} for a in arms],
        "baseline": baseline,
        "question_only": True,
        "seeds": list(range(seeds)),
        "hparams": {
            "head": hparams,
            QUESTION_ONLY: qhparams,
            "mirror": False,
            "early_stopping": "the epoch with the best validation accuracy is kept (ties: lower validation "
            f"loss), at most max_epochs={hparams['max_epochs']}, "
            f"patience={hparams['patience']}",
        },
        "features": {
            n: {
                "fingerprint": fingerprint(m),
                "role": m.role,
                "shape": list(m.shape),
                "layers": list(m.layers) if m.layers else None,
                "provenance": m.provenance,
            }
            for n, m in metas.items()
        },
        "files": {k: {"path": str(p), "sha256": file_sha256(p)} for k, p in files.items()},
        "question_encoding": inputs.qspec.get("kind"),
        "answers": inputs.answers,
    }


def _check_resume(out: Path, plan: dict) -> None:
    path = out / "plan.json"
    if not path.exists():
        atomic_write(path, json.dumps(plan, indent=1))
        return
    old = json.loads(path.read_text())

    def same(key: str) -> bool:  # files by content: the same study may be resumed from another folder
        if key == "files":
            return {k: v["sha256"] for k, v in old[key].items()} == {k: v["sha256"] for k, v in plan[key].items()}
        return old.get(key) == plan.get(key)

    diff = [k for k in sorted(set(old) | set(plan)) if k != "cache" and not same(k)]
    if diff:
        raise HeadError(
            f"{out} holds another study (it differs in {', '.join(diff)}); give a new -o, or the same "
            "arguments to resume it"
        )


def run_study(
    cache_path: str,
    train: str,
    val: str,
    tests: Sequence[str],
    arm_specs: Sequence[str],
    out: str,
    baseline: str | None = None,
    seeds: int = 3,
    head: str = "temporal",
    hparams: dict | None = None,
    question: str = "auto",
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    echo: Callable[[str], Any] | None = print,
) -> dict:
    """Plan, run (resuming what ``out`` already holds) and report a study; returns the study.json dict."""
    arms, baseline = parse_arms(arm_specs, baseline)
    if seeds < stats.MIN_SEEDS:
        raise HeadError(
            f"--seeds {seeds}: an interval over seeds needs at least {stats.MIN_SEEDS} seeds (5 or more "
            "recommended: docs/study.md)"
        )
    if head not in HEADS:
        raise HeadError(f"unknown --head {head!r}; choose {', '.join(HEADS)}")
    hp = dict(HEAD_HPARAMS, **check_hparams(hparams, HEAD_HPARAMS, "the study's AVQA head"))
    qhp = {k: hp[k] for k in QuestionOnlyHead.hyperparameters() if k in hp}
    qhp["hidden"] = (hparams or {}).get("hidden", QuestionOnlyHead().hidden)
    try:  # bad values (dropout 1.5) are one line now, not a failed run on a worker
        LayerMixHead(**hp, arch=head).validate_params()
        QuestionOnlyHead(**qhp).validate_params()
    except ValueError as exc:
        raise HeadError(str(exc)) from None
    tests = list(tests)
    if not tests:
        raise HeadError("give a --test file")
    from featpipe.avqa_sets import identify

    labels = {}
    for t in tests:
        ident = identify(t)
        label = f"{ident['dataset']} {ident['split']}" if ident["dataset"] != "unknown" else Path(t).name
        labels[label if label not in labels else f"{label} ({Path(t).name})"] = t
    out_dir = Path(out)
    with opened(cache_path) as cache:
        metas = resolve(cache, arms)
        inputs = load_inputs(cache, metas, train, val, labels, question)
        files = {"train": train, "val": val, **{f"test: {k}": v for k, v in labels.items()}}
        plan = _plan(cache, arms, baseline, seeds, head, hp, qhp, files, metas, inputs)
    specs = {QUESTION_ONLY: arm_spec(Arm(QUESTION_ONLY, ()), {})}
    for arm in arms:
        spec = specs[arm.name] = arm_spec(arm, metas)
        if head == "spatial" and not (
            spec.layout.get("grid")
            and spec.layout.get("cells")
            and spec.streams["audio"]
            and not spec.streams["tokens"]
        ):
            raise HeadError(
                f"arm {arm.name!r}: the spatial head needs audio features and a visual feature with grid "
                "cells (e.g. priors and motion) and no patch tokens; use --head temporal"
            )
    _check_resume(out_dir, plan)
    plan_id = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
    order = [QUESTION_ONLY] + [a.name for a in arms]
    runs = [(a, s) for a in order for s in range(seeds)]
    pending = [r for r in runs if not run_paths(out_dir, *r)[1].exists()]
    # longest first (and arm after arm): the last runs to finish are short ones, not one wide arm
    # holding one worker while the other idles
    width = {a.name: input_width(a, metas) for a in arms}
    pending.sort(key=lambda r: -width.get(r[0], 0))
    say = echo or (lambda _m: None)
    for split, n in inputs.dropped.items():
        if n:
            say(f"{n} {split} question(s) left out: their video lacks a feature of the study")
    if len(pending) < len(runs):
        say(f"resuming {out_dir}: {len(runs) - len(pending)} of {len(runs)} runs already done")
    failed = execute(pending, specs, scheduler, workers, head, hp, qhp, inputs, out_dir, plan_id, progress, say)
    if failed:
        arm, seed, why = failed[0]
        raise RunsFailed(
            f"{len(failed)} of {len(runs)} runs failed, the first: arm {arm} seed {seed}: {why}; "
            "the finished runs are kept and the same command retries the others"
        )
    return report.write_study(out_dir, plan, inputs, order, baseline, seeds, labels, echo)


def parse_hparams(raw: dict[str, str]) -> dict:
    """``--set`` strings typed like the head's defaults (int, float, str); unknown names are left to
    :func:`.params.check_hparams`, which names them."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        default = HEAD_HPARAMS.get(k)
        try:
            out[k] = type(default)(v) if isinstance(default, (int, float)) and not isinstance(default, bool) else v
        except ValueError:
            raise HeadError(f"--set {k}={v!r}: {k} must be a {type(default).__name__}") from None
    return out
