"""Scores in the field's format: the MUSIC-AVQA per-type table and clip-classification metrics.

MUSIC-AVQA table (as the papers lay it out): the 9 question types in
:data:`featpipe.avqa.QUESTION_TYPES` order, then the Audio, Visual and Audio-Visual averages,
then All. **Definition used here:** every average is over *questions* (the accuracy of all
questions of the group pooled together, as the MUSIC-AVQA evaluation code does by averaging
one 0/1 list per group), not the mean of the per-type accuracies. All is over every question.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from featpipe.avqa import GROUPS, QUESTION_TYPES

TYPE_KEYS: tuple[str, ...] = tuple(f"{g}/{t}" for g, t in QUESTION_TYPES)
"""Keys of the 9 per-type rows, e.g. ``"Audio/Counting"``."""

TABLE_KEYS: tuple[str, ...] = TYPE_KEYS + GROUPS + ("All",)
"""All 13 table entries in order: 9 types, 3 group averages, All."""

_SHORT = {"Counting": "Count", "Comparative": "Comp", "Location": "Loc",
          "Existential": "Exist", "Temporal": "Temp"}
_GROUP_LABEL = {"Audio": "Audio (A)", "Visual": "Visual (V)", "Audio-Visual": "Audio-Visual (AV)"}


def _cell(correct: np.ndarray) -> dict:
    n = int(correct.size)
    c = int(correct.sum())
    return {"accuracy": (c / n) if n else None, "correct": c, "n": n}


def avqa_table(groups: Sequence[str], qtypes: Sequence[str], correct: Sequence[bool]) -> dict[str, dict]:
    """The 13-entry table for predictions on questions of the given (group, type).

    Returns ``{key: {"accuracy": fraction or None when no question, "correct": int, "n": int}}``
    in :data:`TABLE_KEYS` order.
    """
    groups = np.asarray(groups, dtype=object)
    qtypes = np.asarray(qtypes, dtype=object)
    correct = np.asarray(correct, dtype=bool)
    if not (len(groups) == len(qtypes) == len(correct)):
        raise ValueError("groups, qtypes and correct must have the same length")
    known = {f"{g}/{t}" for g, t in QUESTION_TYPES}
    keys = np.array([f"{g}/{t}" for g, t in zip(groups, qtypes)], dtype=object)
    unknown = set(keys) - known
    if unknown:
        raise ValueError(f"unknown question type(s): {', '.join(sorted(unknown))}")
    out = {k: _cell(correct[keys == k]) for k in TYPE_KEYS}
    for g in GROUPS:
        out[g] = _cell(correct[groups == g])
    out["All"] = _cell(correct)
    return out


def format_avqa_tables(rows: dict[str, dict[str, dict]], digits: int = 2) -> str:
    """Plain-text table, one line per method, accuracies in percent (``-`` for no questions).

    ``rows`` maps a method name to an :func:`avqa_table` result. Header: group row, type row.
    """
    w = max(6, digits + 5)
    name_w = max([len("method")] + [len(n) for n in rows])
    blocks = []
    for g in GROUPS:
        types = [t for gg, t in QUESTION_TYPES if gg == g]
        blocks.append((g, [f"{g}/{t}" for t in types] + [g], [_SHORT[t] for t in types] + ["Avg"]))

    def fmt(cell: dict) -> str:
        return f"{100 * cell['accuracy']:.{digits}f}" if cell["accuracy"] is not None else "-"

    top = ["".ljust(name_w)]
    sub = ["method".ljust(name_w)]
    for g, keys, labels in blocks:
        width = len(keys) * (w + 1) - 1
        top.append(_GROUP_LABEL[g].center(width))
        sub.append(" ".join(lab.rjust(w) for lab in labels))
    top.append("".rjust(w))
    sub.append("All".rjust(w))
    lines = [" | ".join(top), " | ".join(sub), "-" * len(" | ".join(sub))]
    for name, table in rows.items():
        parts = [name.ljust(name_w)]
        for _, keys, _ in blocks:
            parts.append(" ".join(fmt(table[k]).rjust(w) for k in keys))
        parts.append(fmt(table["All"]).rjust(w))
        lines.append(" | ".join(parts))
    return "\n".join(lines)


def classification_metrics(labels: Sequence[str], y_true: Sequence[int], y_pred: Sequence[int]) -> dict:
    """Accuracy, macro-F1 and per-class accuracy (recall, with counts) for integer class predictions.

    Accuracy and macro-F1 are scikit-learn's (``f1_score(average="macro", zero_division=0)``: the
    mean over every class that occurs in ``y_true`` or ``y_pred``, a class never predicted right
    counting 0). ``y_true`` -1 marks a label the head was not trained on: a class of its own,
    always wrong."""
    from sklearn.metrics import accuracy_score, f1_score

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    per_class = {lab: _cell((y_pred == y_true)[y_true == i]) for i, lab in enumerate(labels)}
    empty = y_true.size == 0
    return {
        "accuracy": None if empty else float(accuracy_score(y_true, y_pred)),
        "macro_f1": None if empty else float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "n": int(y_true.size),
        "per_class": per_class,
    }
