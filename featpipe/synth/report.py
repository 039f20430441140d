"""Answer balance per template, and what a question-only guesser can reach on the test split."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from ..avqa import QUESTION_TYPES, Question
from .questions import TEMPLATES


@dataclass
class SynthReport:
    out_dir: str
    videos: dict[str, int]  # split -> number of videos
    questions: dict[str, int]  # split -> number of questions
    answers: dict[str, dict[str, int]]  # template -> answer -> count, all splits together
    baseline: dict[str, float]  # template (and "All") -> question-only accuracy on test
    chance: dict[str, float]  # template (and "All") -> accuracy of a uniform guess among its answers
    seconds: dict[str, float] = field(default_factory=dict)  # timings: scenes, questions, videos, total


def answer_counts(questions: Sequence[Question]) -> dict[str, dict[str, int]]:
    out: dict[str, Counter] = defaultdict(Counter)
    for q in questions:
        out[q.template][q.answer] += 1
    return {t: dict(sorted(c.items())) for t, c in out.items()}


def question_only_baseline(train: Sequence[Question], test: Sequence[Question]) -> dict[str, float]:
    """Accuracy on ``test`` of the best blind guess learned on ``train``.

    It predicts the train majority answer for the same template and slot values, backing off
    to the template's majority, then to the overall majority. Keys: templates and ``"All"``.
    """
    by_values: dict[tuple, Counter] = defaultdict(Counter)
    by_template: dict[str, Counter] = defaultdict(Counter)
    overall: Counter = Counter()
    for q in train:
        by_values[(q.template, q.values)][q.answer] += 1
        by_template[q.template][q.answer] += 1
        overall[q.answer] += 1

    def majority(c: Counter) -> str:
        return sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]  # ties by name: deterministic

    right: Counter = Counter()
    total: Counter = Counter()
    for q in test:
        c = by_values.get((q.template, q.values)) or by_template.get(q.template) or overall
        guess = majority(c) if c else ""
        for key in (q.template, "All"):
            total[key] += 1
            right[key] += guess == q.answer
    return {k: right[k] / total[k] for k in total}


def chance_levels(test: Sequence[Question]) -> dict[str, float]:
    """Uniform guessing among each template's balanced answers (see questions.TEMPLATES)."""
    n_answers = {t.text: len(t.answers) for t in TEMPLATES}
    out, total = {}, 0.0
    for t, n in Counter(q.template for q in test).items():
        out[t] = 1.0 / n_answers.get(t, 1)
        total += n * out[t]
    if test:
        out["All"] = total / len(test)
    return out


def format_report(report: SynthReport) -> str:
    """A text table: per template, the answer counts, the largest answer share, chance and the
    question-only accuracy on test; then totals."""
    order = sorted(TEMPLATES, key=lambda t: QUESTION_TYPES.index((t.group, t.qtype)))
    lines = [f"synthetic MUSIC-AVQA in {report.out_dir}: "
             + ", ".join(f"{s} {report.videos.get(s, 0)} videos / {report.questions.get(s, 0)} questions"
                         for s in ("train", "val", "test")),
             f"{'type':<26} {'template':<58} {'n':>5} {'max%':>5} {'chance':>6} {'q-only':>6}  answers"]
    for t in order:
        c = report.answers.get(t.text, {})
        n = sum(c.values())
        share = 100 * max(c.values()) / n if n else 0.0
        base = report.baseline.get(t.text)
        ch = report.chance.get(t.text, 1 / len(t.answers))
        text = t.text if len(t.text) <= 58 else t.text[:55] + "..."
        lines.append(f"{t.group + ' ' + t.qtype:<26} {text:<58} {n:>5} {share:>5.1f} {100 * ch:>6.1f} "
                     f"{'-' if base is None else f'{100 * base:.1f}':>6}  "
                     + " ".join(f"{a}:{k}" for a, k in c.items()))
    if "All" in report.baseline:
        lines.append(f"question-only accuracy on test: {100 * report.baseline['All']:.1f}% "
                     f"(uniform chance {100 * report.chance.get('All', 0):.1f}%)")
    if report.seconds:
        lines.append("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items()))
    return "\n".join(lines)
