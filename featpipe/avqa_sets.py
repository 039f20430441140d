"""The question sets the field reports on, and which dataset and split a file is.

- **MUSIC-AVQA** (GeWu-Lab/MUSIC-AVQA, ``avqa-{train,val,test}.json``): :func:`featpipe.avqa.load_questions`.
- **MUSIC-AVQA v2.0** (DragonLiu1995/MUSIC-AVQA-v2.0, ``data/balance_full_set/{train,test}_balance.json``,
  ``data/bias_set/{train,test}_bias.json``): the same reader (ids derived where missing, extra keys
  kept). Its ``_flip`` videos (``<id>_flip``: horizontally flipped copies with mirrored questions)
  are videos of their own, cached and answered under their own id.
- **MUSIC-AVQA-R** (reml-group/MUSIC-AVQA-R, ``avqa-test-{head,tail,headtail}.json``): rephrased
  test questions, read by :func:`load_r_questions` as that project's dataloader reads them.

:func:`load_any` reads any of them by file name; :func:`identify` names the dataset and split of a file
(``evaluate`` and ``study`` print it in their reports).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from .avqa import QUESTION_TYPES, AvqaFormatError, Question, derived_id, load_questions, read_entries

_R_FILES = {"avqa-test-head.json": "head", "avqa-test-tail.json": "tail", "avqa-test-headtail.json": "all"}


def identify(path: str | Path) -> dict[str, str]:
    """``{"dataset", "split"}`` of a question file from its name (``"unknown"`` dataset otherwise)."""
    name = Path(path).name
    if name in _R_FILES:
        return {"dataset": "MUSIC-AVQA-R", "split": f"test ({_R_FILES[name]})"}
    for part, label in (("balance", "balanced"), ("bias", "biased")):
        for split in ("train", "test", "val"):
            if name == f"{split}_{part}.json":
                return {"dataset": "MUSIC-AVQA v2.0", "split": f"{split} ({label} set)"}
    for split in ("train", "val", "test"):
        if name == f"avqa-{split}.json":
            return {"dataset": "MUSIC-AVQA", "split": split}
    return {"dataset": "unknown", "split": name}


def _literal(raw: Any, where: str, what: str) -> Any:
    """A list stored as a string, JSON or Python literal (the R dataloader uses ``ast.literal_eval``)."""
    if isinstance(raw, list):
        return raw
    try:
        return json.loads(raw)
    except (TypeError, json.JSONDecodeError):
        pass
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError):
        raise AvqaFormatError(f"{where}: {what!r} is not a list: {raw!r}") from None


def fill_words(content: str, values: list[str], where: str) -> tuple[str, list[str]]:
    """MUSIC-AVQA-R's filling: split on spaces, each word holding ``<`` is replaced by the next value.
    Returns the text and the values used. As in its dataloader, values beyond the slot words are
    not used (a rephrasing may drop a slot); fewer values than slot words is an error (there it
    raises IndexError)."""
    words = content.strip().split(" ")
    slots = [i for i, w in enumerate(words) if "<" in w]
    if len(slots) > len(values):
        raise AvqaFormatError(f"{where}: {len(slots)} slot word(s) but {len(values)} template value(s)")
    for i, v in zip(slots, values):
        words[i] = v
    return " ".join(words), values[: len(slots)]


def load_r_questions(path: str | Path) -> list[Question]:
    """A MUSIC-AVQA-R test file: a JSON list of objects with ``video_id``, ``type`` (a list, JSON or
    Python literal), ``question_content`` (the rephrased question, with ``<slot>`` words when
    ``templ_values`` is given and not empty) and ``anser``. As its dataloader does, every word that
    holds ``<`` is replaced by the next template value; ``question_id`` and ``question_deleted`` are
    not read by it, so the id is always :func:`derived_id` (rephrasings of one question share the
    original's id there) and the file's own id, if any, is kept in ``extra``."""
    path = Path(path)
    data = read_entries(path)
    out, seen = [], {}
    for i, e in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(e, dict):
            raise AvqaFormatError(f"{where}: expected a JSON object, got {type(e).__name__}")
        missing = [k for k in ("video_id", "type", "question_content", "anser") if k not in e]
        if missing:
            raise AvqaFormatError(f"{where}: missing key(s) {', '.join(missing)}")
        qtype = _literal(e["type"], where, "type")
        if not (isinstance(qtype, list) and tuple(qtype) in QUESTION_TYPES):
            raise AvqaFormatError(f"{where}: unknown question type {e['type']!r}")
        content, vid = e["question_content"], e["video_id"]
        if not isinstance(content, str) or not isinstance(vid, str) or not vid:
            raise AvqaFormatError(f"{where}: question_content and video_id must be strings")
        values = _literal(e.get("templ_values", "[]"), where, "templ_values")
        if not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
            raise AvqaFormatError(f"{where}: 'templ_values' must be a list of strings")
        text, values = fill_words(content, values, where)
        key = (vid, content, tuple(values))
        seen[key] = seen.get(key, -1) + 1
        extra = {
            k: v for k, v in e.items() if k not in ("video_id", "type", "question_content", "templ_values", "anser")
        }
        answer = e["anser"]
        if answer is not None and not isinstance(answer, str):
            raise AvqaFormatError(f"{where}: 'anser' must be a string or null, got {answer!r}")
        out.append(
            Question(
                derived_id(vid, content, values, seen[key]),
                vid,
                content if values else text,
                text,
                tuple(values),
                qtype[0],
                qtype[1],
                answer,
                extra,
            )
        )
    return out


def load_any(path: str | Path) -> list[Question]:
    """Questions of a MUSIC-AVQA, v2.0 or -R file (R by its file name)."""
    return load_r_questions(path) if Path(path).name in _R_FILES else load_questions(path)
