"""Choose which question each template asks of each scene so answers even out per template.

Scenes are visited in a fixed order; for each template the candidate whose answer has been
given least so far (in this split) is asked, with ties broken first by how often that exact
``(values, answer)`` pair was asked (so slot values spread evenly over answers, leaving a
question-only model little to learn from the values) and then by a seeded draw. A template
skips a scene when even its least-given answer is already ahead of the template's rarest
answer by more than ``ratio * rarest + slack``: fewer questions, but balanced ones.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from ..avqa import Question, fill_template
from .questions import TEMPLATES, Candidate, Template, candidates
from .scene import Scene


class Balancer:
    """Keeps answer counts for one split and picks at most one question per template and scene."""

    def __init__(self, rng: np.random.Generator, ratio: float = 1.25, slack: int = 2):
        self.rng, self.ratio, self.slack = rng, ratio, slack
        self.answers = [Counter() for _ in TEMPLATES]
        self.pairs = [Counter() for _ in TEMPLATES]

    def choose(self, ti: int, template: Template, cands: Sequence[Candidate]) -> Candidate | None:
        cands = [c for c in cands if c[1] in template.answers]
        if not cands:
            return None
        counts = self.answers[ti]
        rarest = min(counts[a] for a in template.answers)
        least = min(counts[a] for _, a in cands)
        if least > self.ratio * rarest + self.slack:
            return None
        pool = [c for c in cands if counts[c[1]] == least]
        fewest = min(self.pairs[ti][c] for c in pool)
        pool = sorted(c for c in pool if self.pairs[ti][c] == fewest)  # sorted: order-independent draw
        pick = pool[int(self.rng.integers(len(pool)))]
        counts[pick[1]] += 1
        self.pairs[ti][pick] += 1
        return pick


def ask(scenes: Sequence[Scene], rng: np.random.Generator, first_id: int = 1) -> list[Question]:
    """Questions for ``scenes`` (one split, in order), with ids from ``first_id`` upwards."""
    bal = Balancer(rng)
    out: list[Question] = []
    for sc in scenes:
        for ti, (t, cands) in enumerate(zip(TEMPLATES, candidates(sc))):
            pick = bal.choose(ti, t, cands)
            if pick is None:
                continue
            values, answer = pick
            out.append(Question(question_id=first_id + len(out), video_id=sc.video_id, template=t.text,
                                text=fill_template(t.text, values), values=tuple(values),
                                group=t.group, qtype=t.qtype, answer=answer))
    return out
