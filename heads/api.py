"""The heads' library entry points; ``featpipe train-head / evaluate / predict / demo`` call these.

``cache`` arguments take a path or an already open cache (``featpipe.open_cache``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from featpipe.avqa import AvqaFormatError
from featpipe.avqa_sets import identify, load_any

from . import classify, qa, restore
from .data import HeadError, choose_rhythm, default_features, opened
from .metrics import format_avqa_tables
from .train import torch_threads

AVERAGE_DEFINITION = ("Audio, Visual and Audio-Visual are accuracies over all questions of the group "
                      "(not means of the type accuracies); All is over every question")
TASKS = ("avqa", "classify")


def _questions(path: str | Path):
    try:
        return load_any(path)
    except AvqaFormatError as exc:
        raise HeadError(str(exc)) from None


def _source(path: str | Path | None) -> dict | None:
    if path is None:
        return None
    return {"path": str(Path(path).resolve()), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def train_head(cache_path: Any, task: str, train_file: str | Path, val_file: str | Path | None,
               features: Sequence[str] | None = None, out: str | Path = "head", seed: int = 0,
               model: str = "mlp", question: str = "auto", hparams: dict | None = None,
               baseline: bool = True, progress: bool = False, threads: int | None = 1,
               rhythm: bool | None = None) -> dict:
    """Train a head on the cache and save it to the directory ``out``.

    ``task`` "avqa": ``train_file``/``val_file`` are MUSIC-AVQA JSON files; trains the AVQA head
    and (``baseline``) the question-only baseline into ``out/baseline``. ``question``: "auto"
    (a cached text encoder if any, else bag of words), "bow", or a text-encoder name.
    ``task`` "classify": CSV files of ``video_id,label``; ``model`` is linear, mlp or attention.
    ``features`` None: every audio/visual feature of the cache (patch tokens for AVQA only);
    empty (or no cache, ``cache_path`` None) for AVQA: only the question-only head, as ``out``.
    ``val_file`` None: 10% of the training videos are held out for early stopping.
    ``threads``: torch CPU threads (see :func:`.train.torch_threads`; None keeps torch's).
    ``rhythm``: True adds the cache's ``rhythm`` features to the audio stream, False leaves them
    out, None takes ``features`` as they are (:func:`.data.choose_rhythm`).
    Returns ``{method: history}``.
    """
    with torch_threads(threads):
        return _train_head(cache_path, task, train_file, val_file, features, out, seed, model, question,
                           hparams, baseline, progress, rhythm)


def _train_head(cache_path, task, train_file, val_file, features, out, seed, model, question, hparams,
                baseline, progress, rhythm=None) -> dict:
    if task not in TASKS:
        raise HeadError(f"unknown task {task!r}; choose avqa or classify")
    sources = {"train": _source(train_file), "val": _source(val_file)}
    with opened(cache_path) as cache:
        if features is not None:
            feats = list(features)
        elif cache is None:
            feats = []
        else:
            feats = default_features(cache, tokens=task == "avqa")
        feats = choose_rhythm(cache, feats, rhythm)
        if task == "avqa":
            val = _questions(val_file) if val_file is not None else None
            return qa.train_avqa(cache, _questions(train_file), val, feats, str(out), seed=seed,
                                 question=question, hparams=hparams, baseline=baseline, progress=progress,
                                 sources=sources)
        if cache is None:
            raise HeadError("clip classification needs a cache")
        train_rows = classify.read_labels(train_file)
        if val_file is None:
            perm = np.random.default_rng(seed).permutation(len(train_rows))
            n_val = max(1, len(train_rows) // 10)
            val_rows = [train_rows[i] for i in perm[:n_val]]
            train_rows = [train_rows[i] for i in perm[n_val:]]
        else:
            val_rows = classify.read_labels(val_file)
        hist = classify.train_classifier(cache, train_rows, val_rows, feats, str(out), model=model, seed=seed,
                                         hparams=hparams, progress=progress, sources=sources)
        return {model: hist}


def _task(head_path: str | Path) -> str:
    return restore.task(head_path)


def evaluate(head_path: str | Path, cache_path: Any, test_file: str | Path, report: str | Path | None = None,
             plot: str | Path | None = None, threads: int | None = 1) -> dict:
    """Score a head on a test file; optionally write ``report`` (JSON) and ``plot`` (PNG).

    AVQA: per-type tables of the head and its question-only baseline (``tables``), the same as
    text (``table_text``), training histories; classification: accuracy, macro-F1, per class.
    """
    head_path = str(head_path)
    task = _task(head_path)
    with opened(cache_path) as cache, torch_threads(threads):
        if task == "avqa":
            questions = _questions(test_file)
            result = qa.evaluate_avqa(head_path, cache, questions)
            result["n_questions_in_file"] = len(questions)
            result["average_definition"] = AVERAGE_DEFINITION
            result["table_text"] = format_avqa_tables(result["tables"])
        else:
            result = classify.evaluate_classifier(head_path, cache, classify.read_labels(test_file))
    cache_name = None if cache_path is None else str(getattr(cache_path, "path", cache_path))
    result.update(head=head_path, cache=cache_name, test_file=str(test_file), dataset=identify(test_file))
    if report is not None:
        Path(report).write_text(json.dumps(result, indent=1))
    if plot is not None:
        from . import plots

        if task == "avqa":
            plots.avqa_figure(result["tables"], result["histories"], plot)
        else:
            plots.classify_figure(result["metrics"], result["history"], plot, name=result["model"])
    return result


def predict(head_path: str | Path, cache_path: Any, questions_or_videos: str | Path,
            out_jsonl: str | Path, kind: str | None = None, threads: int | None = 1) -> int:
    """Write one JSON line per prediction; returns how many. An AVQA head reads a MUSIC-AVQA
    question file (answers may be absent); a classifier a CSV/list of video ids. Items whose
    video is not cached are left out. ``kind`` ("questions"/"videos"), when given, must match."""
    head_path = str(head_path)
    task = _task(head_path)
    expected = "questions" if task == "avqa" else "videos"
    if kind is not None and kind != expected:
        raise HeadError(f"{head_path} is {'an AVQA' if task == 'avqa' else 'a classification'} head: "
                        f"give {expected}, not {kind}")
    with opened(cache_path) as cache, torch_threads(threads):
        if task == "avqa":
            rows = qa.predict_avqa(head_path, cache, _questions(questions_or_videos))
        else:
            rows = classify.predict_classifier(head_path, cache, classify.read_videos(questions_or_videos))
    with open(out_jsonl, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return len(rows)


def run_avqa_experiment(cache: Any, train: str | Path, val: str | Path | None, test: str | Path,
                        out_dir: str | Path, features: Sequence[str] | None = None, seed: int = 0,
                        question: str = "auto", hparams: dict | None = None, progress: bool = False,
                        echo: Callable[[str], Any] | None = print, threads: int | None = 1,
                        rhythm: bool | None = None) -> dict:
    """Train the AVQA head and the question-only baseline, evaluate both on ``test``, write
    ``out_dir/head/``, ``out_dir/report.json`` and ``out_dir/report.png``, print the table
    (through ``echo``; None for silence) and return the report."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    head = out_dir / "head"
    train_head(cache, "avqa", train, val, features, head, seed=seed, question=question, hparams=hparams,
               baseline=True, progress=progress, threads=threads, rhythm=rhythm)
    result = evaluate(head, cache, test, report=out_dir / "report.json", plot=out_dir / "report.png",
                      threads=threads)
    if echo is not None:
        echo(result["table_text"])
        echo(f"({AVERAGE_DEFINITION}; report: {out_dir / 'report.json'}, figure: {out_dir / 'report.png'})")
    return result
