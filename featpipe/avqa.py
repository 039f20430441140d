"""MUSIC-AVQA question files: parse, fill templates, write back in the dataset's own format.

The dataset stores each question as a JSON object with seven keys (GeWu-Lab/MUSIC-AVQA,
``data/json_update/``; the val and test files ship with the tests, ``tests/data/music-avqa/``)::

    {"video_id": "00000028", "question_id": 7,
     "type": "[\\"Audio-Visual\\", \\"Existential\\"]",          # a JSON string inside JSON
     "question_content": "Is the <Object> in the video always playing?",   # the template
     "templ_values": "[\\"ukulele\\"]",                          # also a JSON string
     "question_deleted": 0, "anser": "yes"}                    # 'anser' is misspelled upstream

:func:`load_questions` turns such a file into :class:`Question` objects and
:func:`write_questions` writes them back byte for byte in the same layout (2-space indent,
ASCII escapes such as ``\\uff1f`` for the full-width question mark, no trailing newline).

MUSIC-AVQA v2.0 (DragonLiu1995/MUSIC-AVQA-v2.0) files read too: entries without
``question_id`` (or with ``null``) get :func:`derived_id`, a missing ``question_deleted`` counts as
0, ``templ_values`` may be a plain list, and keys beyond the seven are kept in
:attr:`Question.extra` (and written back). MUSIC-AVQA-R and the dataset/split names of known
files: :mod:`featpipe.avqa_sets`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

QUESTION_TYPES: tuple[tuple[str, str], ...] = (
    ("Audio", "Counting"),
    ("Audio", "Comparative"),
    ("Visual", "Counting"),
    ("Visual", "Location"),
    ("Audio-Visual", "Existential"),
    ("Audio-Visual", "Counting"),
    ("Audio-Visual", "Location"),
    ("Audio-Visual", "Comparative"),
    ("Audio-Visual", "Temporal"),
)
"""The 9 (group, type) pairs in the order the papers' result tables use."""

GROUPS: tuple[str, ...] = ("Audio", "Visual", "Audio-Visual")

SLOTS: tuple[str, ...] = ("<Object>", "<LR>", "<FL>", "<TH>", "<BA>", "<LL>", "<LRer>")
"""Template slots; every one is filled from ``templ_values`` in order of appearance."""

_SLOT_RE = re.compile("|".join(re.escape(s) for s in SLOTS))
_KEYS = ("video_id", "question_id", "type", "question_content", "templ_values",
         "question_deleted", "anser")
_REQUIRED = ("video_id", "type", "question_content", "templ_values")
DERIVED_ID_BASE = 2 ** 40
"""Derived question ids lie in ``[2**40, 2**41)``, above every id the real files use."""


class AvqaFormatError(ValueError):
    """A question file or entry does not follow the MUSIC-AVQA format (message is one line)."""


@dataclass(frozen=True)
class Question:
    """One MUSIC-AVQA question. ``text`` is ``template`` with its slots filled from ``values``."""

    question_id: int
    video_id: str
    template: str
    text: str
    values: tuple[str, ...]
    group: str
    qtype: str
    answer: str | None
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    """Keys of the entry beyond the seven (v2.0: ``unmatch_audio``, ``audio_instrument``, ...)."""


def fill_template(template: str, values: Sequence[str]) -> str:
    """Fill the slots of ``template`` in order from ``values``; all other text is kept as is.

    This is the one place slots are filled. The number of values must equal the number of
    slots (true for every question of the real files); a mismatch raises ``ValueError``.
    """
    slots = _SLOT_RE.findall(template)
    if len(slots) != len(values):
        raise ValueError(
            f"template {template!r} has {len(slots)} slot(s) but {len(values)} value(s) were given")
    it = iter(values)
    return _SLOT_RE.sub(lambda _m: str(next(it)), template)


def template_slots(template: str) -> list[str]:
    """The slots of ``template`` in order of appearance, e.g. ``['<Object>', '<LR>']``."""
    return _SLOT_RE.findall(template)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:120] if text else type(exc).__name__)


def derived_id(video_id: str, content: str, values: Sequence[str], occurrence: int = 0) -> int:
    """The stable id of a question the file gives none: ``2**40`` plus the first 40 bits of the
    SHA-256 of ``video_id``, the question content (template as stored), the template values (as a
    JSON list) and ``occurrence`` (0 for the first entry with these three in the file, 1 for the
    next, ...), joined by newlines. It depends on nothing else (not the entry's position)."""
    key = "\n".join([video_id, content, json.dumps(list(values)), str(occurrence)])
    return DERIVED_ID_BASE + int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:10], 16)


def parse_values(raw: Any, where: str) -> list[str]:
    """``templ_values``: a JSON-encoded list of strings (MUSIC-AVQA) or the list itself (some v2.0 entries)."""
    if isinstance(raw, list):
        values = raw
    else:
        try:
            values = json.loads(raw)
        except (TypeError, ValueError, RecursionError):
            raise AvqaFormatError(f"{where}: 'templ_values' is not a JSON-encoded list: {raw!r:.80}") from None
    if not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
        raise AvqaFormatError(f"{where}: 'templ_values' must encode a list of strings")
    return values


def _parse_entry(entry: Any, where: str, seen: dict | None = None) -> Question | None:
    if not isinstance(entry, dict):
        raise AvqaFormatError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise AvqaFormatError(f"{where}: missing key(s) {', '.join(missing)}")
    qid = entry.get("question_id")
    if qid is not None and (isinstance(qid, bool) or not isinstance(qid, int)):
        raise AvqaFormatError(f"{where}: question_id must be an integer, got {qid!r}")
    if qid is not None:
        where = f"{where} (question_id {qid})"
    deleted = entry.get("question_deleted")  # v2.0: often absent (or null), meaning a question
    if deleted is None:
        deleted = 0
    if isinstance(deleted, str) and deleted.strip() in ("0", "1"):  # a re-serialised file may quote it
        deleted = int(deleted)
    if deleted not in (0, 1):
        raise AvqaFormatError(f"{where}: question_deleted must be 0 or 1, got {deleted!r:.40}")
    if deleted:
        return None  # the dataset marks removed questions this way; they are not questions
    video_id = entry["video_id"]
    if not isinstance(video_id, str) or not video_id:
        raise AvqaFormatError(f"{where}: video_id must be a non-empty string, got {video_id!r}")
    try:
        qtype = json.loads(entry["type"])
    except (TypeError, ValueError, RecursionError):
        raise AvqaFormatError(f"{where}: 'type' is not a JSON-encoded list: {entry['type']!r:.80}") from None
    if not (isinstance(qtype, list) and len(qtype) == 2 and all(isinstance(x, str) for x in qtype)
            and tuple(qtype) in QUESTION_TYPES):
        raise AvqaFormatError(f"{where}: unknown question type {entry['type']!r:.80}")
    values = parse_values(entry["templ_values"], where)
    template = entry["question_content"]
    if not isinstance(template, str):
        raise AvqaFormatError(f"{where}: question_content must be a string")
    try:
        text = fill_template(template, values)
    except ValueError as exc:
        raise AvqaFormatError(f"{where}: {exc}") from None
    answer = entry.get("anser")
    if answer is not None and not isinstance(answer, str):
        raise AvqaFormatError(f"{where}: 'anser' must be a string or null, got {answer!r}")
    if qid is None:
        seen = {} if seen is None else seen
        key = (video_id, template, tuple(values))
        seen[key] = seen.get(key, -1) + 1
        qid = derived_id(video_id, template, values, seen[key])
    extra = {k: v for k, v in entry.items() if k not in _KEYS}
    return Question(question_id=qid, video_id=video_id, template=template, text=text,
                    values=tuple(values), group=qtype[0], qtype=qtype[1], answer=answer, extra=extra)


def read_entries(path: Path) -> list:
    """The JSON list a question file holds; a one-line :class:`AvqaFormatError` otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AvqaFormatError(f"{path}: cannot read question file ({exc.strerror or exc})") from None
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, 4,300-digit numbers, nesting past the stack
        raise AvqaFormatError(f"{path}: not valid JSON ({_first_line(exc)})") from None
    if not isinstance(data, list):
        raise AvqaFormatError(f"{path}: expected a JSON list of questions, got {type(data).__name__}")
    return data


def load_questions(path: str | Path) -> list[Question]:
    """Read a MUSIC-AVQA (or v2.0) question file (a JSON list of objects with the seven keys).

    Entries with a non-zero ``question_deleted`` are skipped; ids missing: :func:`derived_id`. A missing ``anser`` gives
    ``answer=None``. Malformed files raise :class:`AvqaFormatError` naming file and entry.
    """
    path = Path(path)
    data = read_entries(path)
    out, seen = [], {}
    for i, entry in enumerate(data):
        q = _parse_entry(entry, f"{path}: entry {i}", seen)
        if q is not None:
            out.append(q)
    return out


def question_to_json(q: Question) -> dict:
    """``q`` in the dataset's seven-key form (key order as in the real files), then its extra keys."""
    return {
        "video_id": q.video_id,
        "question_id": q.question_id,
        "type": json.dumps([q.group, q.qtype]),
        "question_content": q.template,
        "templ_values": json.dumps(list(q.values)),
        "question_deleted": 0,
        "anser": q.answer,
        **q.extra,
    }


def dumps_questions(questions: Iterable[Question]) -> str:
    """The file text :func:`write_questions` writes (same layout as the real files)."""
    return json.dumps([question_to_json(q) for q in questions], indent=2, ensure_ascii=True)


def write_questions(path: str | Path, questions: Iterable[Question]) -> None:
    """Write ``questions`` as a MUSIC-AVQA JSON file; the real files round-trip byte for byte."""
    Path(path).write_text(dumps_questions(questions), encoding="utf-8")
