"""``featpipe study``: the same head trained on each arm's features with the same seeds and splits.

Plan: the arms (plus the question-only head, always), the seeds ``0 .. N-1``, one head with fixed
hyperparameters, the same train / val / test questions for every arm (questions whose video lacks
any of the study's features are dropped for all arms alike), early stopping as the head does it
(the epoch with the best validation accuracy is kept). Every feature is read from the cache once
and reaches the Dask workers once, shared by every arm and seed that uses it (:mod:`.share`).

Layout of ``OUT``::

    plan.json                       what the study is (a rerun must match it, then it resumes)
    runs/<arm>/seed-<s>.jsonl       predictions {"arm", "seed", "question_id", "answer"}, one per test question
    runs/<arm>/seed-<s>.json        the run's record (kept epoch, history, learned layer weights); written last
    predictions.jsonl               every run's predictions, concatenated (arm order, then seed)
    study.json, study.md, study.png, study.html   the report (:mod:`.report`)

Each run's files are written atomically as the run finishes; a run counts as done when its
record exists, so ``featpipe study ... -o OUT`` again redoes only unfinished runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from featpipe.contracts import worker_environ

from . import report, stats
from . import share
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
from .train import torch_threads

HEADS = ("temporal", "spatial")


class RunsFailed(HeadError):
    """Some runs failed (the others are written); the same command retries them."""


HEAD_HPARAMS = {k: v for k, v in AvqaHead.hyperparameters().items() if k != "arch"}


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_paths(out: Path, arm: str, seed: int) -> tuple[Path, Path]:
    """(predictions, record) of one run; arm names are checked (:func:`.arms.parse_arm`), so these stay in ``out``."""
    return out / "runs" / arm / f"seed-{seed}.jsonl", out / "runs" / arm / f"seed-{seed}.json"


def error_path(out: Path, arm: str, seed: int) -> Path:
    """A failed run's traceback (removed when the run succeeds); the run stays unfinished."""
    return out / "runs" / arm / f"seed-{seed}.error.txt"


def _failure(exc: BaseException) -> dict:
    """A failed run as data: its one-line reason, the site (equal for the same bug in every run) and
    the traceback. Returned, not raised, so that the worker logs no multi-line "Compute Failed"."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    site = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    lines = str(exc).strip().splitlines()
    return {
        "error": f"{type(exc).__name__}: {lines[0] if lines else ''} (at {site})",
        "site": f"{type(exc).__name__} at {site}",
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def run_one(arm: str, seed: int, job: dict, head: str, hparams: dict, n_answers: int, T: int) -> dict:
    """Train one arm with one seed and predict the test questions (runs on a Dask worker, one thread).
    ``job``: the study's token, the arm's :class:`.arms.ArmSpec`, the shared features and questions
    (:mod:`.share`). A failure comes back as ``{"error", "site", "traceback"}`` (:func:`_failure`)."""
    try:
        return _train_predict(arm, seed, job, head, hparams, n_answers, T)
    except Exception as exc:  # a bug in featpipe (the inputs were checked on the client)
        return _failure(exc)


def _train_predict(arm: str, seed: int, job: dict, head: str, hparams: dict, n_answers: int, T: int) -> dict:
    t0 = time.perf_counter()
    spec = job["spec"]
    arrays = share.arm_arrays(job["token"], arm, spec, job["feats"], job["questions"])
    tr, va, te = arrays["train"], arrays["val"], arrays["test"]
    with torch_threads(1):
        if arm == QUESTION_ONLY:
            names = QuestionOnlyHead().get_params()
            est = QuestionOnlyHead(**{k: v for k, v in hparams.items() if k in names}, seed=seed)
        else:
            est = LayerMixHead(**hparams, arch=head, layout=spec.layout, layer_blocks=spec.blocks, seed=seed)
        est.fit(tr, tr.y, va, va.y, classes=range(n_answers), max_len=T or None)
        pred = est.decision_function(te).argmax(1)
    hist = est.history_
    best = next((e for e in hist["epochs"] if e["epoch"] == hist["best_epoch"]), {})
    return {
        "pred": pred.astype(np.int32),
        "best_epoch": hist["best_epoch"],
        "epochs": len(hist["epochs"]),
        "stopped_early": hist.get("stopped_early"),
        "val_acc": best.get("val_acc"),
        "layer_weights": est.layer_weights() if isinstance(est, LayerMixHead) else {},
        "arch": getattr(est, "arch_", "question-only"),
        "seconds": time.perf_counter() - t0,
    }


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
        _atomic_write(path, json.dumps(plan, indent=1))
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


def _submit_all(pending, specs, feats, questions, client, head, hparams, qhp, n_answers, T):
    token = f"{os.getpid()}-{time.time_ns()}"  # this study's arms in the workers' memo (.share)
    futures = {}
    for arm, seed in pending:  # arm after arm: a worker builds each arm's arrays once for its seeds
        hp = qhp if arm == QUESTION_ONLY else hparams
        job = {
            "token": token,
            "spec": specs[arm],
            "feats": {n: feats[n] for n in specs[arm].features},
            "questions": questions,
        }
        f = client.submit(
            run_one,
            arm,
            seed,
            job,
            head,
            hp,
            n_answers,
            T,
            pure=False,
            key=f"study-{arm}-seed{seed}-{token}",
        )
        futures[f] = (arm, seed)
    return futures


def _write_run(out: Path, arm: str, seed: int, result: dict, inputs: Any, plan_id: str) -> None:
    preds, record = run_paths(out, arm, seed)
    lines = [
        json.dumps({"arm": arm, "seed": seed, "question_id": q.question_id, "answer": inputs.answers[int(k)]})
        for q, k in zip(inputs.questions["test"], result["pred"])
    ]
    _atomic_write(preds, "\n".join(lines) + "\n")
    rec = {k: v for k, v in result.items() if k != "pred"}
    rec.update(arm=arm, seed=seed, plan=plan_id, n_predictions=len(lines))
    _atomic_write(record, json.dumps(rec, indent=1))


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
    failed = _run(pending, specs, scheduler, workers, head, hp, qhp, inputs, out_dir, plan_id, progress, say)
    if failed:
        arm, seed, why = failed[0]
        raise RunsFailed(
            f"{len(failed)} of {len(runs)} runs failed, the first: arm {arm} seed {seed}: {why}; "
            "the finished runs are kept and the same command retries the others"
        )
    return report.write_study(out_dir, plan, inputs, order, baseline, seeds, labels, echo)


LOCAL_WORKERS = 2
REPEATS = 3


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int):
    """A client of ``scheduler``, or of a LocalCluster of ``workers`` processes with one thread each
    (each run sets torch to one thread too: two runs share two cores without spinning threads)."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler, timeout=30) as client:
            yield client
        return
    env = {"distributed.nanny.pre-spawn-environ": worker_environ(1)}  # one thread, glibc's own malloc rule
    nanny = logging.getLogger("distributed.nanny")
    level = nanny.level
    try:
        with dask.config.set({**env, "distributed.worker.daemon": False}):
            with (
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                ) as cluster,
                Client(cluster) as client,
            ):
                client.run(_quiet_workers)
                try:
                    yield client
                finally:  # closing a busy worker: "still alive after 4 seconds, killing" is no news to the user
                    nanny.setLevel(logging.ERROR)
    finally:
        nanny.setLevel(level)


def _quiet_workers() -> None:
    """On our own LocalCluster's workers: runs stopped after repeated failures end with a multi-line
    CancelledError warning per run, no news to the user (the study reports its failures itself)."""
    logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)


def _run(pending, specs, scheduler, workers, head, hp, qhp, inputs, out_dir, plan_id, progress, say) -> list:
    """Run ``pending`` and write each run as it finishes; returns the failed ones ``(arm, seed, why)``."""
    if not pending:
        return []
    folder = contextlib.nullcontext(None) if scheduler else share.array_folder(out_dir)
    with folder as tmp, _client(scheduler, workers or LOCAL_WORKERS) as client:
        feats, questions = share.share(client, inputs, Path(tmp) if tmp else None)
        try:
            return _collect(
                pending, specs, feats, questions, client, head, hp, qhp, inputs, out_dir, plan_id, progress, say
            )
        finally:
            if scheduler:  # a long-lived cluster: the workers drop the last arm they kept
                with contextlib.suppress(Exception):  # a cluster gone meanwhile has nothing to drop
                    client.run(share.forget)


def _collect(pending, specs, feats, questions, client, head, hp, qhp, inputs, out_dir, plan_id, progress, say):
    """Submit the runs and write each as it finishes; the failed ones ``(arm, seed, why)``."""
    from distributed import as_completed
    from tqdm import tqdm

    failed, sites = [], []
    futures = _submit_all(pending, specs, feats, questions, client, head, hp, qhp, len(inputs.answers), inputs.T)
    bar = tqdm(total=len(pending), desc="study runs", unit="run", disable=not progress)
    for fut in as_completed(list(futures)):
        arm, seed = futures[fut]
        try:
            result = fut.result()
            if "error" not in result:
                _write_run(out_dir, arm, seed, result, inputs, plan_id)
                error_path(out_dir, arm, seed).unlink(missing_ok=True)
        except Exception as exc:  # the worker died (KilledWorker), or writing failed: one run, not the others
            result = _failure(exc)
        if "error" in result:
            where = error_path(out_dir, arm, seed)
            _atomic_write(where, result["traceback"])
            why = f"{result['error']}: an internal error in featpipe; please report it ({where})"
            failed.append((arm, seed, why))
            sites.append(result["site"])
            say(f"run {arm} seed {seed} failed: {why}")
            if sites.count(result["site"]) >= REPEATS:  # the same bug again: stop instead of failing every run
                for f in futures:
                    f.cancel()
                say(f"stopped: the same error failed {REPEATS} runs")
                break
        bar.update(1)
    bar.close()
    return failed


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
