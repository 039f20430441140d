"""Text embeddings of questions and other strings, stored in the cache so heads need no model.

``featpipe encode-text CACHE --questions FILE.json [--strings FILE.txt] [--text-encoder SPEC]``
encodes every distinct string once per encoder into ``/texts/<encoder>`` of the cache:

- MUSIC-AVQA questions are read with :func:`featpipe.avqa.load_questions`; their text is the
  template filled by :func:`featpipe.avqa.fill_template` (``Question.text``), and each stored
  row lists the question ids that share that text, so a head looks rows up by question id
  (``Cache.text_embeddings(enc, question_ids=...)``) or by text (``texts=...``).
- ``--strings`` files hold one string per line (surrounding spaces stripped, empty lines
  skipped), e.g. answer names or prompts; they are stored with no ids.

Encoder specs are the extractor specs (``clip:<model>/<pretrained>``, ``clap:<repo or folder>``)
and the table is named like the visual/audio feature of the same spec (``clip-ViT-B-32-openai``,
``clap-larger_clap_music``), so a head pairs a feature with its text side by name; weights are
resolved by the extractor's own code. Without ``--text-encoder`` the specs of the cache's CLIP
and CLAP features are used. Rerunning adds only texts (and ids) that are not stored yet.

``--field-tables`` (CLIP encoders) also stores what the field's AVQA models read per question id,
each its own table next to ``/texts/<encoder>``:

- ``<encoder>-qst`` (rows, D): the question as PSTP-Net and TSPM write it before encoding
  (:func:`field_question_text`: the final question mark dropped), through ``encode_text``
  (PSTP-Net's ``clip_qst``, TSPM's ``qst``);
- ``<encoder>-words`` (rows, 77, D): the same texts' per-token outputs of the text transformer
  after ``ln_final``, projected by ``text_projection`` (PSTP-Net's ``clip_word``);
- ``<encoder>-qaprompt`` (rows, D): TSPM's declarative prompt of the question
  (:func:`featpipe.data.tspm.tspm_prompt`) through ``encode_text`` (TSPM's ``qaPrompt``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import __version__, extractors
from .avqa import Question, fill_template, load_questions
from .data.tspm import PromptError, tspm_prompt
from .cache import CacheError, CacheWriter, open_cache
from .extractors.base import ExtractOptions, Extractor, ExtractorError, WeightsError

TEXT_KINDS = ("clip", "clap")
_COMMIT_ROWS = 1024  # texts per commit: an interrupted run keeps what it committed


class TextError(Exception):
    """A text-encoding request that cannot be carried out; the message is one line."""


class TextEncoder(ABC):
    """The text side of a model whose audio or visual side is an extractor."""

    normalised: bool = False  # whether embeddings come out L2-normalised (recorded in provenance)

    def __init__(self, ext: Extractor) -> None:
        self.ext = ext

    @property
    def spec(self) -> str:
        return self.ext.spec

    @property
    def name(self) -> str:
        """The cache table name: the extractor's first output name, so the two sides pair."""
        return self.ext.outputs()[0].name

    @property
    def dim(self) -> int:
        return int(self.ext.outputs()[0].shape[0])

    def check(self) -> None:
        """Resolve weights (one-line :class:`WeightsError` when missing)."""
        self.ext.check()

    def provenance(self) -> dict:
        return {"spec": self.spec, "weights": self.ext.weights_identity(), "featpipe": __version__,
                "side": "text", "normalised": self.normalised}

    @abstractmethod
    def load(self, device: str) -> None:
        """Build the model and tokenizer on ``device``."""

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 embeddings."""


class ClipText(TextEncoder):
    """open_clip's text tower (``encode_text``: projected, not normalised, like the image side)."""

    def load(self, device: str) -> None:
        import open_clip

        self.ext.load(device)  # same weights file and seeded "random" init as the image side
        self.model = self.ext.model
        self.tokenizer = open_clip.get_tokenizer(self.ext.model_name)
        self.device = device

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tokens = self.tokenizer(list(texts)).to(self.device)
            return self.model.encode_text(tokens).float().cpu().numpy()

    @property
    def context_length(self) -> int:
        import open_clip

        return int(open_clip.get_model_config(self.ext.model_name)["text_cfg"].get("context_length", 77))

    def _text_tower(self):
        tower = self.model if hasattr(self.model, "ln_final") else getattr(self.model, "text", None)
        if tower is None or not hasattr(tower, "ln_final") or not hasattr(tower, "text_projection"):
            raise TextError(f"{self.spec}: word-level features need open_clip's own text transformer "
                            "(ln_final and text_projection); this model has another text tower")
        return tower

    def encode_with_words(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``encode_text`` embeddings ``(n, D)`` and every token's output ``(n, 77, D)`` of the same pass.

        The per-token rows are the text transformer's output after ``ln_final``, projected by
        ``text_projection`` (PSTP-Net's ``clip_word``); the row at the end-of-text token is the
        sentence embedding itself.
        """
        import torch

        tower = self._text_tower()
        seen: list = []
        hook = tower.ln_final.register_forward_hook(lambda _m, _i, out: seen.append(out))
        try:
            with torch.inference_mode():
                pooled = self.model.encode_text(self.tokenizer(list(texts)).to(self.device))
                proj = tower.text_projection
                words = seen[-1]
                if isinstance(proj, torch.nn.Linear):
                    words = proj(words)
                elif proj is not None:
                    words = words @ proj
        finally:
            hook.remove()
        return pooled.float().cpu().numpy(), words.float().cpu().numpy()


class ClapText(TextEncoder):
    """CLAP's RoBERTa text tower (``get_text_features``: projected and L2-normalised)."""

    normalised = True

    def check(self) -> None:
        super().check()
        folder = self.ext.folder
        if not any((folder / n).is_file() for n in ("tokenizer.json", "vocab.json")):
            raise WeightsError(f"{self.spec}: {folder} has no tokenizer (tokenizer.json, or vocab.json and "
                               "merges.txt); save one there with tokenizer.save_pretrained")

    def load(self, device: str) -> None:
        from transformers import AutoTokenizer

        from .extractors.clap import load_model

        self.model = load_model(self.ext.folder, device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.ext.folder))
        tc = self.model.config.text_config
        # RoBERTa positions start after the padding index: two fewer than the table holds.
        self.max_len = min(int(self.tokenizer.model_max_length), int(tc.max_position_embeddings) - 2)
        self.device = device

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        from .extractors.clap import pooled

        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_len,
                             return_tensors="pt")
        with torch.inference_mode():
            out = self.model.get_text_features(input_ids=enc["input_ids"].to(self.device),
                                               attention_mask=enc["attention_mask"].to(self.device))
        return pooled(out).float().cpu().numpy()


def build_text_encoder(spec: str, options: ExtractOptions | None = None) -> TextEncoder:
    """The text encoder for an extractor spec of a model with a text tower (CLIP, CLAP)."""
    kind = extractors.parse_spec(spec)[0]
    if kind not in TEXT_KINDS:
        raise ExtractorError(f"{spec!r} has no text encoder; use clip:<model>/<pretrained> or clap:<repo or folder>")
    ext = extractors.build(spec, options or ExtractOptions())
    return ClipText(ext) if kind == "clip" else ClapText(ext)


# -- what to encode ------------------------------------------------------------------------
def field_question_text(q: Question) -> str:
    """The question as PSTP-Net's and TSPM's feature scripts encode it (``clip_qst``, ``qst``).

    They split the template at spaces (after stripping trailing ones), drop the last character (the
    question mark, also the full-width one), replace each slot word by the next value and join
    with spaces: the filled template without its final mark, e.g. ``Is the ukulele in the video
    always playing``.
    """
    return fill_template(q.template.rstrip()[:-1], q.values)


def _tspm_prompt(q: Question) -> str:
    try:
        return tspm_prompt(q.template, q.values)
    except PromptError as exc:
        raise TextError(f"question_id {q.question_id}: {exc}") from None


def collect_texts(questions: Sequence[str | Path] = (), strings: Sequence[str | Path] = (),
                  form: Callable[[Question], str] | None = None) -> dict[str, list[int]]:
    """Distinct texts (in order of first appearance) and the question ids of each.

    ``form`` makes a question's text (default ``Question.text``, the filled template).
    """
    texts: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for path in questions:
        for q in load_questions(path):
            text = form(q) if form else q.text
            prev = owner.get(q.question_id)
            if prev is None:
                owner[q.question_id] = text
                texts.setdefault(text, []).append(q.question_id)
            elif prev != text:
                raise TextError(f"{path}: question_id {q.question_id} has two texts, {prev!r} and {text!r}")
    for path in strings:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise TextError(f"{path}: cannot read strings ({exc})") from None
        for line in lines:
            if line.strip():
                texts.setdefault(line.strip(), [])
    return texts


def _stored(cache, encoder: str) -> tuple[dict[str, int], dict[int, str]]:
    """Latest row of each stored text, and the text each stored question id points to."""
    if encoder not in cache.text_encoders:
        return {}, {}
    return cache.text_items(encoder), cache.text_ids(encoder)


# -- encoding into the cache ---------------------------------------------------------------
@dataclass
class TextTable:
    """One ``/texts/<name>`` table: which texts it holds and which output of the encoder fills it."""

    name: str
    shape: tuple[int, ...]
    texts: dict[str, list[int]]
    output: str = "sentence"  # "sentence" (encode_text) or "words" (per-token outputs)
    form: str = "question text (template filled)"

    def provenance(self, enc: TextEncoder) -> dict:
        return dict(enc.provenance(), output=self.output, texts=self.form)


@dataclass
class TextSummary:
    encoder: str
    spec: str
    encoded: int = 0  # new texts, encoded now
    linked: int = 0  # stored texts that gained question ids (their row copied, not re-encoded)
    present: int = 0  # texts already stored with all their ids

    def line(self) -> str:
        return (f"{self.encoder} ({self.spec}): {self.encoded} texts encoded, {self.linked} given new ids, "
                f"{self.present} already present")


def _default_specs(cache_path: Path) -> list[str]:
    with open_cache(cache_path) as cache:
        specs = [cache.info(f).spec for f in cache.features]
    return list(dict.fromkeys(s for s in specs if extractors.parse_spec(s)[0] in TEXT_KINDS))


def field_tables(enc: ClipText, qst: dict[str, list[int]], prompts: dict[str, list[int]]) -> list[TextTable]:
    """The ``-qst``, ``-words`` and ``-qaprompt`` tables of ``enc``; texts from :func:`collect_texts`
    with ``form=field_question_text`` (``qst``) and TSPM's prompts (``prompts``)."""
    form = "question as PSTP-Net/TSPM encode it (featpipe.text.field_question_text)"
    return [TextTable(enc.name + "-qst", (enc.dim,), qst, "sentence", form),
            TextTable(enc.name + "-words", (enc.context_length, enc.dim), qst, "words", form),
            TextTable(enc.name + "-qaprompt", (enc.dim,), prompts, "sentence",
                      "TSPM's declarative prompt (featpipe.data.tspm.tspm_prompt)")]


def encode_texts_into_cache(cache: str | Path, specs: Sequence[str] = (), questions: Sequence[str | Path] = (),
                            strings: Sequence[str | Path] = (), device: str = "auto",
                            batch_size: int = 256, with_field_tables: bool = False) -> list[TextSummary]:
    """Encode the questions' filled-in texts and the strings into ``cache`` with each encoder.

    ``with_field_tables`` adds, for each CLIP encoder, the tables of :func:`field_tables`.
    Takes the cache's writer lock (do not run while ``featpipe extract`` writes the same cache).
    Texts already stored are skipped; a stored text that gains question ids gets a copy of its
    row listing the new ids. Raises :class:`TextError`, :class:`~featpipe.cache.CacheError`,
    :class:`~featpipe.extractors.ExtractorError` (incl. ``WeightsError``) with one-line messages.
    """
    from .extractors import resolve_device

    path = Path(cache)
    if not path.is_file():
        raise TextError(f"{path}: no such cache (create it with `featpipe extract` first)")
    texts = collect_texts(questions, strings)
    if not texts:
        raise TextError("nothing to encode: give --questions and/or --strings files with some text")
    specs = list(dict.fromkeys(specs)) or _default_specs(path)
    if not specs:
        raise TextError(f"{path} has no CLIP or CLAP feature to pair with: give --text-encoder SPEC")
    device = resolve_device(device)
    options = ExtractOptions(device=device, batch_size=batch_size)
    encs = [build_text_encoder(s, options) for s in specs]
    if with_field_tables and not questions:
        raise TextError("--field-tables needs --questions (its tables are keyed by question id)")
    if with_field_tables and not any(isinstance(e, ClipText) for e in encs):
        raise TextError("--field-tables needs a CLIP text encoder (--text-encoder clip:<model>/<pretrained>)")
    if with_field_tables:
        qst, prompts = collect_texts(questions, form=field_question_text), collect_texts(questions, form=_tspm_prompt)
    plans = []
    for enc in encs:
        tables = [TextTable(enc.name, (enc.dim,), texts)]
        if with_field_tables and isinstance(enc, ClipText):
            tables += field_tables(enc, qst, prompts)
        plans.append((enc, tables))
    for enc in encs:
        enc.check()
    summaries = []
    with CacheWriter(path) as writer:
        with open_cache(path) as reader:  # same process: sees the writer's file, no lock conflict
            for enc in encs:
                if enc.name in reader.features and reader.info(enc.name).weights != enc.ext.weights_identity():
                    raise CacheError(f"feature {enc.name!r} in {path} was made with other weights than "
                                     f"{enc.spec} has now: use a new cache")
        for enc, tables in plans:
            for table in tables:
                writer.ensure_text_table(table.name, table.shape, table.provenance(enc))
        for enc, tables in plans:
            summaries += _encode_tables(writer, path, enc, tables, device, batch_size)
    return summaries


@dataclass
class _Plan:
    table: TextTable
    summary: TextSummary
    new: list[tuple[str, list[int]]]


def _plan(reader, path: Path, enc: TextEncoder, table: TextTable) -> tuple[_Plan, list[tuple[str, list[int]]]]:
    """What ``table`` lacks: texts to encode, and stored texts that only gain ids."""
    summary = TextSummary(table.name, enc.spec)
    by_text, id_text = _stored(reader, table.name)
    new, link = [], []
    for text, ids in table.texts.items():
        for qid in ids:
            if id_text.get(qid, text) != text:
                raise TextError(f"question_id {qid} is stored in {path} ({table.name}) as {id_text[qid]!r}, "
                                f"now {text!r}: use a new cache")
        missing = [q for q in ids if q not in id_text]
        if text not in by_text:
            new.append((text, ids))
        elif missing:
            link.append((text, missing))
        else:
            summary.present += 1
    return _Plan(table, summary, new), link


def _encode_tables(writer: CacheWriter, path: Path, enc: TextEncoder, tables: Sequence[TextTable], device: str,
                   batch_size: int) -> list[TextSummary]:
    """Fill ``tables``; tables with the same texts share one model pass."""
    plans, links = [], []
    with open_cache(path) as reader:
        for table in tables:
            plan, link = _plan(reader, path, enc, table)
            if link:
                copies = reader.text_embeddings(table.name, texts=[t for t, _ in link], dtype=np.float16)
                links.append((plan, link, copies))
            plans.append(plan)
    for plan, link, copies in links:  # written once the reader is closed
        writer.add_texts(plan.table.name, [{"text": t, "ids": ids} for t, ids in link], copies)
        plan.summary.linked = len(link)
    loaded = False
    groups: dict[int, list[_Plan]] = {}
    for plan in plans:
        groups.setdefault(id(plan.table.texts), []).append(plan)
    for group in groups.values():
        todo = list(dict.fromkeys(t for p in group for t, _ in p.new))
        if not todo:
            continue
        if not loaded:
            enc.load(device)
            loaded = True
        words = any(p.table.output == "words" for p in group)
        for start in range(0, len(todo), _COMMIT_ROWS):
            part = todo[start:start + _COMMIT_ROWS]
            out = _encode_block(enc, part, batch_size, words)
            row = {t: i for i, t in enumerate(part)}
            for p in group:
                items = [(t, ids) for t, ids in p.new if t in row]
                if items:
                    emb = out[p.table.output][[row[t] for t, _ in items]]
                    writer.add_texts(p.table.name, [{"text": t, "ids": ids} for t, ids in items], emb)
                    p.summary.encoded += len(items)
    return [p.summary for p in plans]


def _encode_block(enc: TextEncoder, texts: list[str], batch_size: int, words: bool) -> dict[str, np.ndarray]:
    """``{"sentence": (n, D)}``, plus ``"words": (n, 77, D)`` when asked (CLIP only)."""
    sent, toks = [], []
    for i in range(0, len(texts), batch_size):
        if words:
            assert isinstance(enc, ClipText)
            s, w = enc.encode_with_words(texts[i:i + batch_size])
            toks.append(w)
        else:
            s = enc.encode(texts[i:i + batch_size])
        sent.append(s)
    out = {"sentence": np.concatenate(sent)}
    if words:
        out["words"] = np.concatenate(toks)
    for arr in out.values():
        if not np.all(np.isfinite(arr)):
            raise TextError(f"{enc.spec} produced non-finite text embeddings")
    return out


def format_summaries(summaries: Sequence[TextSummary]) -> str:
    return "\n".join(s.line() for s in summaries)
