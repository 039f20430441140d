"""TSPM's question prompts (``qaPrompt``): one declarative sentence per MUSIC-AVQA template.

TSPM (Li, Du, Hu, ACM MM 2024) encodes, besides each question, a declarative prompt made from its
template by a fixed table, e.g. ``Is the <Object> in the video always playing?`` with ``["ukulele"]``
becomes ``The ukulele is not playing in this video.``. The table (``tspm_text_prompts.json``) holds
both versions TSPM's repository has: the sentences of ``dataset/TextPrompt.xlsx`` (``xlsx_prompt``)
and those of the code that made the released features (``prompt``; they differ in 10 of 33 rows,
each noted). :func:`tspm_prompt` uses the code's.
"""

from __future__ import annotations

from typing import Any, Sequence

from . import load_json

TABLE = "tspm_text_prompts.json"


class PromptError(ValueError):
    """A template with no row in the table (the message is one line)."""


def normalise_template(template: str) -> str:
    """How templates are matched to rows: surrounding spaces stripped, a full-width '？' read as '?'."""
    return template.strip().replace("\uff1f", "?")


def prompt_rows() -> dict[str, dict[str, Any]]:
    """The 33 rows by normalised template."""
    return {normalise_template(r["template"]): r for r in load_json(TABLE)["prompts"]}


def tspm_prompt(template: str, values: Sequence[str]) -> str:
    """TSPM's prompt for a question: its template's row, filled from ``values`` (spaces removed)."""
    row = prompt_rows().get(normalise_template(template))
    if row is None:
        raise PromptError(f"template {template!r} is not one of the 33 MUSIC-AVQA templates TSPM has prompts for")
    vals = [str(v).replace(" ", "") for v in values]
    try:
        return row["prompt"].format(*(vals[i] for i in row["values"]))
    except IndexError:
        raise PromptError(f"template {template!r} needs values at {row['values']}, got {list(values)}") from None
