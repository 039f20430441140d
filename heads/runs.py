"""One study run on a Dask worker, and the client's side of the runs: submit them, write each as it
finishes (atomically: a run is done when its record exists), report failures as data.

:mod:`.study` plans a study and calls :func:`execute`; the files each run leaves in ``OUT``:

    runs/<arm>/seed-<s>.jsonl        predictions {"arm", "seed", "question_id", "answer"}, one per test question
    runs/<arm>/seed-<s>.json         the run's record (kept epoch, epochs, validation accuracy, layer weights, seconds, start); last
    runs/<arm>/seed-<s>.error.txt    a failed run's traceback (removed when the run succeeds)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from featpipe.contracts import worker_environ

from . import share
from .arms import QUESTION_ONLY
from .estimators import QuestionOnlyHead
from .layers import LayerMixHead
from .train import torch_threads


def atomic_write(path: Path, text: str) -> None:
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


# training statistics per (study, arm) on this worker: the same for every seed (kilobytes each)
_STATS: dict[tuple[str, str], dict] = {}


def _arm_stats(est: LayerMixHead, token: str, arm: str, train: Any) -> dict:
    if any(k[0] != token for k in _STATS):
        _STATS.clear()  # another study's
    if (token, arm) not in _STATS:
        _STATS[(token, arm)] = est.training_stats(train)
    return _STATS[(token, arm)]


def _train_predict(arm: str, seed: int, job: dict, head: str, hparams: dict, n_answers: int, T: int) -> dict:
    t0, started = time.perf_counter(), time.time()
    spec = job["spec"]
    arrays = share.arm_arrays(job["token"], arm, spec, job["feats"], job["questions"])
    tr, va, te = arrays["train"], arrays["val"], arrays["test"]
    with torch_threads(1):
        if arm == QUESTION_ONLY:
            names = QuestionOnlyHead().get_params()
            est = QuestionOnlyHead(**{k: v for k, v in hparams.items() if k in names}, seed=seed)
        else:
            est = LayerMixHead(**hparams, arch=head, layout=spec.layout, layer_blocks=spec.blocks, seed=seed)
        # the training statistics once per arm on this worker, not once per seed
        fit_args = {"stats": _arm_stats(est, job["token"], arm, tr)} if isinstance(est, LayerMixHead) else {}
        est.fit(tr, tr.y, va, va.y, classes=range(n_answers), max_len=T or None, **fit_args)
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
        "started": started,  # unix time on the worker: the study's time line
    }


def _jobs(pending, specs, feats, questions, head, hparams, qhp, n_answers, T):
    """``((arm, seed), submit arguments, key)`` for each pending run, in the order given."""
    token = f"{os.getpid()}-{time.time_ns()}"  # this study's arms in the workers' memo (.share)
    for arm, seed in pending:  # arm after arm: a worker builds each arm's arrays once for its seeds
        hp = qhp if arm == QUESTION_ONLY else hparams
        job = {
            "token": token,
            "spec": specs[arm],
            "feats": {n: feats[n] for n in specs[arm].features},
            "questions": questions,
        }
        yield (arm, seed), (run_one, arm, seed, job, head, hp, n_answers, T), f"study-{arm}-seed{seed}-{token}"


def _write_run(out: Path, arm: str, seed: int, result: dict, inputs: Any, plan_id: str) -> None:
    preds, record = run_paths(out, arm, seed)
    lines = [
        json.dumps({"arm": arm, "seed": seed, "question_id": q.question_id, "answer": inputs.answers[int(k)]})
        for q, k in zip(inputs.questions["test"], result["pred"])
    ]
    atomic_write(preds, "\n".join(lines) + "\n")
    rec = {k: v for k, v in result.items() if k != "pred"}
    rec.update(arm=arm, seed=seed, plan=plan_id, n_predictions=len(lines))
    atomic_write(record, json.dumps(rec, indent=1))


LOCAL_WORKERS = 2
REPEATS = 3


@contextlib.contextmanager
def client_for(scheduler: str | None, workers: int):
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


def execute(pending, specs, scheduler, workers, head, hp, qhp, inputs, out_dir, plan_id, progress, say) -> list:
    """Run ``pending`` and write each run as it finishes; returns the failed ones ``(arm, seed, why)``."""
    if not pending:
        return []
    folder = contextlib.nullcontext(None) if scheduler else share.array_folder(out_dir)
    with folder as tmp, client_for(scheduler, workers or LOCAL_WORKERS) as client:
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
    jobs = _jobs(pending, specs, feats, questions, head, hp, qhp, len(inputs.answers), inputs.T)
    futures: dict = {}

    def top_up() -> list:  # the next runs in the plan's order, one per worker thread in all
        new = []
        threads = max(1, sum(client.nthreads().values()))  # asked each time: a cluster may grow
        while len(futures) < threads and (nxt := next(jobs, None)) is not None:
            run, args, key = nxt
            fut = client.submit(*args, pure=False, key=key)
            futures[fut] = run
            new.append(fut)
        return new

    # One run per worker thread, the next submitted as one finishes: Dask does not keep submission
    # order (an idle worker steals from the end of another's queue: in a full-scale study the
    # question-only runs, submitted last, ran second), so the widest-first order is kept here.
    running = as_completed(top_up())
    bar = tqdm(total=len(pending), desc="study runs", unit="run", disable=not progress)
    for fut in running:
        arm, seed = futures.pop(fut)
        try:
            result = fut.result()
            if "error" not in result:
                _write_run(out_dir, arm, seed, result, inputs, plan_id)
                error_path(out_dir, arm, seed).unlink(missing_ok=True)
        except Exception as exc:  # the worker died (KilledWorker), or writing failed: one run, not the others
            result = _failure(exc)
        if "error" in result:
            where = error_path(out_dir, arm, seed)
            atomic_write(where, result["traceback"])
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
        for nxt in top_up():
            running.add(nxt)
    bar.close()
    return failed
