"""Weight-free question encoding, used when the cache holds no text encoder.

:class:`BowQuestionEncoder` is fitted on the *training* questions only and maps a question to a
fixed binary vector, the concatenation of three blocks:

1. **bag of words**: one dimension per lower-cased word (``[a-z0-9]+``) of the filled question
   texts seen in training; 1 when the word occurs in the question;
2. **template id**: one-hot over the training templates (the 33 MUSIC-AVQA templates carry the
   question type and what is asked);
3. **slot values by position**: one dimension per ``(slot index, slot name, value)`` seen in
   training, e.g. ``0:<Object>=violin`` and ``1:<Object>=piano`` for "Is the violin louder than
   the piano?", so the order of the compared objects survives (a bag of words loses it).

Words, templates and values never seen in training contribute nothing (all-zero in their block).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from featpipe.avqa import Question, template_slots

_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _slot_keys(q: Question) -> list[str]:
    return [f"{i}:{slot}={val}" for i, (slot, val) in enumerate(zip(template_slots(q.template), q.values))]


class BowQuestionEncoder:
    """Bag of words + template one-hot + positional slot values (see the module docstring)."""

    kind = "bow"

    def __init__(self, words: Sequence[str], templates: Sequence[str], slots: Sequence[str]) -> None:
        self.words = list(words)
        self.templates = list(templates)
        self.slots = list(slots)
        self._w = {w: i for i, w in enumerate(self.words)}
        self._t = {t: i + len(self.words) for i, t in enumerate(self.templates)}
        off = len(self.words) + len(self.templates)
        self._s = {s: i + off for i, s in enumerate(self.slots)}

    @classmethod
    def fit(cls, questions: Sequence[Question]) -> "BowQuestionEncoder":
        if not questions:
            raise ValueError("cannot build a question encoding from zero training questions")
        words: set[str] = set()
        templates: set[str] = set()
        slots: set[str] = set()
        for q in questions:
            words |= _words(q.text)
            templates.add(q.template)
            slots.update(_slot_keys(q))
        return cls(sorted(words), sorted(templates), sorted(slots))

    @property
    def dim(self) -> int:
        return len(self.words) + len(self.templates) + len(self.slots)

    def encode(self, questions: Sequence[Question]) -> np.ndarray:
        """``(N, dim)`` float32 binary matrix."""
        out = np.zeros((len(questions), self.dim), dtype=np.float32)
        for r, q in enumerate(questions):
            cols = [self._w[w] for w in _words(q.text) if w in self._w]
            if q.template in self._t:
                cols.append(self._t[q.template])
            cols += [self._s[k] for k in _slot_keys(q) if k in self._s]
            out[r, cols] = 1.0
        return out

    def to_json(self) -> dict:
        return {"kind": self.kind, "words": self.words, "templates": self.templates, "slots": self.slots}

    @classmethod
    def from_json(cls, d: dict) -> "BowQuestionEncoder":
        return cls(d["words"], d["templates"], d["slots"])


def answer_vocabulary(questions: Sequence[Question]) -> list[str]:
    """Sorted answers of the training questions. Answers absent from training cannot be
    predicted; such test questions count as wrong."""
    answers = sorted({q.answer for q in questions if q.answer is not None})
    if not answers:
        raise ValueError("the training questions have no answers")
    return answers
