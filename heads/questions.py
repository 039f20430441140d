"""Weight-free question encoding, used when the cache holds no text encoder.

:class:`BowQuestionEncoder` is fitted on the *training* questions only and maps a question to a
fixed binary vector, the concatenation of three blocks:

1. **bag of words**: one dimension per lower-cased word (``[a-z0-9]+``) of the filled question
   texts seen in training; 1 when the word occurs in the question;
2. **template id**: one-hot over the training templates (the 33 MUSIC-AVQA templates carry the
   question type and what is asked);
3. **slot values by position**: one dimension per ``(slot index, slot name, value)`` seen in
   training, e.g. ``0:<Object>=violin`` and ``1:<Object>=piano`` for "Is the violin louder than
   the piano?", so the order of the compared objects survives (a bag of words loses it);
4. **slot values by name and occurrence**: one dimension per ``(slot name, k-th occurrence of
   that name, value)``, e.g. ``<LR>#0=left`` and ``<LR>#1=right`` for "Is the <Object> on the
   <LR> louder than the <Object> on the <LR>?". Block 3 numbers slots within a template, so
   "the first <LR>" of two templates lands on different dimensions; this block puts it on the
   same one, so what a head learns about "left against right" is shared across templates.

Words, templates and values never seen in training contribute nothing (all-zero in their block).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

from featpipe.avqa import Question, fill_template, template_slots

_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _slot_keys(q: Question) -> list[str]:
    return [f"{i}:{slot}={val}" for i, (slot, val) in enumerate(zip(template_slots(q.template), q.values))]


def _named_slot_keys(q: Question) -> list[str]:
    seen: dict[str, int] = {}
    keys = []
    for slot, val in zip(template_slots(q.template), q.values):
        k = seen.get(slot, 0)
        seen[slot] = k + 1
        keys.append(f"{slot}#{k}={val}")
    return keys


class BowQuestionEncoder:
    """Bag of words + template one-hot + slot values by position and by name (see the module
    docstring). ``named`` empty: no block 4 (heads saved before it existed)."""

    kind = "bow"

    def __init__(self, words: Sequence[str], templates: Sequence[str], slots: Sequence[str],
                 named: Sequence[str] = ()) -> None:
        self.words = list(words)
        self.templates = list(templates)
        self.slots = list(slots)
        self.named = list(named)
        self._w = {w: i for i, w in enumerate(self.words)}
        self._t = {t: i + len(self.words) for i, t in enumerate(self.templates)}
        off = len(self.words) + len(self.templates)
        self._s = {s: i + off for i, s in enumerate(self.slots)}
        off += len(self.slots)
        self._n = {s: i + off for i, s in enumerate(self.named)}

    @classmethod
    def fit(cls, questions: Sequence[Question]) -> "BowQuestionEncoder":
        if not questions:
            raise ValueError("cannot build a question encoding from zero training questions")
        words: set[str] = set()
        templates: set[str] = set()
        slots: set[str] = set()
        named: set[str] = set()
        for q in questions:
            words |= _words(q.text)
            templates.add(q.template)
            slots.update(_slot_keys(q))
            named.update(_named_slot_keys(q))
        return cls(sorted(words), sorted(templates), sorted(slots), sorted(named))

    @property
    def dim(self) -> int:
        return len(self.words) + len(self.templates) + len(self.slots) + len(self.named)

    def encode(self, questions: Sequence[Question]) -> np.ndarray:
        """``(N, dim)`` float32 binary matrix."""
        out = np.zeros((len(questions), self.dim), dtype=np.float32)
        for r, q in enumerate(questions):
            cols = [self._w[w] for w in _words(q.text) if w in self._w]
            if q.template in self._t:
                cols.append(self._t[q.template])
            cols += [self._s[k] for k in _slot_keys(q) if k in self._s]
            cols += [self._n[k] for k in _named_slot_keys(q) if k in self._n]
            out[r, cols] = 1.0
        return out

    def to_json(self) -> dict:
        return {"kind": self.kind, "words": self.words, "templates": self.templates, "slots": self.slots,
                "named": self.named}

    @classmethod
    def from_json(cls, d: dict) -> "BowQuestionEncoder":
        return cls(d["words"], d["templates"], d["slots"], d.get("named", ()))


def answer_vocabulary(questions: Sequence[Question]) -> list[str]:
    """Sorted answers of the training questions. Answers absent from training cannot be
    predicted; such test questions count as wrong."""
    answers = sorted({q.answer for q in questions if q.answer is not None})
    if not answers:
        raise ValueError("the training questions have no answers")
    return answers


MIRROR_WORDS = {"left": "right", "right": "left", "leftest": "rightest", "rightest": "leftest"}
"""Slot values and answers that a left-right mirror of the video swaps (MUSIC-AVQA's words)."""


def mirror_question(q: Question) -> Question | None:
    """The question about the left-right mirrored video: slot values and answer with left and
    right swapped (``MIRROR_WORDS``), the text refilled. None when the template's own words name a
    side (none of MUSIC-AVQA's 33 do), since then the mirrored question is not known."""
    if _words(q.template) & set(MIRROR_WORDS):
        return None
    values = tuple(MIRROR_WORDS.get(v, v) for v in q.values)
    answer = MIRROR_WORDS.get(q.answer, q.answer) if q.answer is not None else None
    return dataclasses.replace(q, values=values, text=fill_template(q.template, values), answer=answer)
