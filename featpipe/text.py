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
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from . import __version__, extractors
from .avqa import load_questions
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
def collect_texts(questions: Sequence[str | Path] = (), strings: Sequence[str | Path] = ()) -> dict[str, list[int]]:
    """Distinct texts (in order of first appearance) and the question ids of each."""
    texts: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for path in questions:
        for q in load_questions(path):
            prev = owner.setdefault(q.question_id, q.text)
            if prev != q.text:
                raise TextError(f"{path}: question_id {q.question_id} has two texts, {prev!r} and {q.text!r}")
            ids = texts.setdefault(q.text, [])
            if q.question_id not in ids:
                ids.append(q.question_id)
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


def encode_texts_into_cache(cache: str | Path, specs: Sequence[str] = (), questions: Sequence[str | Path] = (),
                            strings: Sequence[str | Path] = (), device: str = "auto",
                            batch_size: int = 256) -> list[TextSummary]:
    """Encode the questions' filled-in texts and the strings into ``cache`` with each encoder.

    Takes the cache's writer lock (do not run while ``featpipe extract`` writes the same cache).
    Texts already stored are skipped; a stored text that gains question ids gets a copy of its
    row listing the new ids. Raises :class:`TextError`, :class:`~featpipe.cache.CacheError`,
    :class:`~featpipe.extractors.ExtractorError` (incl. ``WeightsError``) with one-line messages.
    """
    from .loaded import resolve_device

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
    for enc in encs:
        enc.check()
    summaries = []
    with CacheWriter(path) as writer:
        with open_cache(path) as reader:  # same process: sees the writer's file, no lock conflict
            for enc in encs:
                if enc.name in reader.features and reader.info(enc.name).weights != enc.ext.weights_identity():
                    raise CacheError(f"feature {enc.name!r} in {path} was made with other weights than "
                                     f"{enc.spec} has now: use a new cache")
        for enc in encs:
            writer.ensure_text_table(enc.name, enc.dim, enc.provenance())
        for enc in encs:
            summaries.append(_encode_one(writer, path, enc, texts, device, batch_size))
    return summaries


def _encode_one(writer: CacheWriter, path: Path, enc: TextEncoder, texts: dict[str, list[int]], device: str,
                batch_size: int) -> TextSummary:
    summary = TextSummary(enc.name, enc.spec)
    with open_cache(path) as reader:
        by_text, id_text = _stored(reader, enc.name)
        new, link = [], []
        for text, ids in texts.items():
            for qid in ids:
                if id_text.get(qid, text) != text:
                    raise TextError(f"question_id {qid} is stored in {path} ({enc.name}) as {id_text[qid]!r}, "
                                    f"now {text!r}: use a new cache")
            missing = [q for q in ids if q not in id_text]
            if text not in by_text:
                new.append((text, ids))
            elif missing:
                link.append((text, missing))
            else:
                summary.present += 1
        copies = (reader.text_embeddings(enc.name, texts=[t for t, _ in link], dtype=np.float16)
                  if link else None)
    if link:
        writer.add_texts(enc.name, [{"text": t, "ids": ids} for t, ids in link], copies)
        summary.linked = len(link)
    if new:
        enc.load(device)
        for start in range(0, len(new), _COMMIT_ROWS):
            part = new[start:start + _COMMIT_ROWS]
            strings = [t for t, _ in part]
            emb = np.concatenate([enc.encode(strings[i:i + batch_size]) for i in range(0, len(strings), batch_size)])
            if not np.all(np.isfinite(emb)):
                raise TextError(f"{enc.spec} produced non-finite text embeddings")
            writer.add_texts(enc.name, [{"text": t, "ids": ids} for t, ids in part], emb)
            summary.encoded += len(part)
    return summary


def format_summaries(summaries: Sequence[TextSummary]) -> str:
    return "\n".join(s.line() for s in summaries)

