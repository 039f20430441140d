"""``featpipe export``: a cache to the per-video / per-question .npy folders a project's loader reads.

Everything that can be checked is checked before the first file is written (the layout's
features exist in the cache, on a one-second timeline, with the right row shapes). Then it
streams: one folder at a time, a bounded batch of videos at a time (read in one contiguous
block), each file written atomically and skipped when it already holds the same bytes, so a rerun
after ``kill -9`` continues where the last one stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .. import __version__
from ..avqa import load_questions
from ..cache import open_cache
from ..cache.layout import TEXTS
from ..cache.reader import Cache
from .layouts import LAYOUTS, Layout, Recipe, Source, TextFolder, VideoFolder
from .npyfile import WriteIndex, clean_temporaries, put, safe_stem, write_atomic

BATCH_BYTES = 128 * 1024 * 1024  # float32 output held at once per folder
MANIFEST = "featpipe-export.json"


class ExportError(Exception):
    """The export cannot start; nothing was written. The message is one line."""


@dataclass(frozen=True)
class Filled:
    """A video folder and the cache features that fill it."""

    folder: VideoFolder
    recipe: Recipe
    features: tuple[str, ...]


@dataclass
class ExportSummary:
    out: Path
    layout: str
    padding: str
    written: int = 0
    unchanged: int = 0
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def files(self) -> int:
        return self.written + self.unchanged

    def line(self) -> str:
        return (f"{self.out}: {self.layout} layout, {self.written} files written, {self.unchanged} unchanged, "
                f"{len(self.missing)} missing, {self.seconds:.1f} s; padding {self.padding}")


# -- resolving a layout against a cache -----------------------------------------------------------
def _candidates(cache: Cache, src: Source) -> list[str]:
    out = []
    for name in cache.features:
        info = cache.info(name)
        if info.on_timeline and src.matches(name, info.spec, info.shape):
            out.append(name)
    return out


def _row_shape(cache: Cache, recipe: Recipe, names: Sequence[str]) -> tuple[int, ...]:
    shapes = [cache.info(n).shape for n in names]
    if recipe.combine == "cls+tokens":
        (d,), (n, d2) = shapes
        if d != d2:
            raise ExportError(f"{names[0]} ({d},) and {names[1]} ({n}, {d2}) cannot be joined as CLS + tokens")
        return (1 + n, d)
    return tuple(shapes[0])


def _use(cache: Cache, folder: VideoFolder, names: list[str]) -> Filled:
    """``--use FOLDER=FEATURE[,FEATURE]``: the user's choice, checked for shape."""
    for n in names:
        if n not in cache.features:
            raise ExportError(f"--use {folder.folder}={','.join(names)}: no feature {n!r} in {cache.path}")
        if not cache.info(n).on_timeline:
            raise ExportError(f"--use {folder.folder}={n}: {n!r} has its own timeline, not one row per segment")
    recipe = Recipe(tuple(Source((n,)) for n in names), "cls+tokens" if len(names) == 2 else "one")
    filled = Filled(folder, recipe, tuple(names))
    _check_shape(cache, filled)
    return filled


def _check_shape(cache: Cache, filled: Filled) -> None:
    want = filled.folder.shape[1:]
    got = _row_shape(cache, filled.recipe, filled.features)
    if want and tuple(want) != got:
        raise ExportError(f"{filled.folder.folder}/ needs rows of {tuple(want)}, {'+'.join(filled.features)} "
                          f"gives {got}")


def resolve(cache: Cache, layout: Layout, use: dict[str, list[str]] | None = None
            ) -> tuple[list[Filled], list[tuple[TextFolder, str]]]:
    """The cache features behind each folder of ``layout``; raises :class:`ExportError` naming
    every missing feature and the ``featpipe`` command that adds it."""
    use = dict(use or {})
    unknown = set(use) - {f.folder for f in layout.videos}
    if unknown:
        raise ExportError(f"--use names no folder of the {layout.name} layout: {', '.join(sorted(unknown))} "
                          f"(folders: {', '.join(f.folder for f in layout.videos)})")
    filled: list[Filled] = []
    absent: list[str] = []
    for folder in layout.videos:
        if folder.folder in use:
            filled.append(_use(cache, folder, use[folder.folder]))
            continue
        found = None
        for recipe in folder.recipes:
            picks = [_candidates(cache, s) for s in recipe.sources]
            if all(picks):
                many = [p for p in picks if len(p) > 1]
                if many:
                    raise ExportError(f"{folder.folder}/ could come from {' or '.join(many[0])}: choose with "
                                      f"--use {folder.folder}=FEATURE")
                found = Filled(folder, recipe, tuple(p[0] for p in picks))
                break
        if found is None:
            what = " or ".join("+".join(s.describe or s.names[0] for s in r.sources) for r in folder.recipes)
            absent.append(f"{folder.folder}/ needs {what} [{folder.extract}]" if folder.extract
                          else f"{folder.folder}/ needs feature {folder.recipes[0].sources[0].names[0]!r}")
        else:
            _check_shape(cache, found)
            filled.append(found)
    texts: list[tuple[TextFolder, str]] = []
    for tf in layout.texts:
        tables = tf.table.narrow(_tables(cache, tf.table))
        if len(tables) > 1:
            raise ExportError(f"{tf.folder}/ could come from text tables {' or '.join(tables)}")
        if tables:
            texts.append((tf, tables[0]))
        elif tf.required:
            absent.append(f"{tf.folder}/ needs text table {tf.table.describe or tf.table.names[0]} [{tf.extract}]")
    if absent:
        have = ", ".join(cache.features) or "none"
        raise ExportError(f"{cache.path} lacks what the {layout.name} layout needs (it has features: {have}): "
                          + "; ".join(absent))
    return filled, texts


def _tables(cache: Cache, src: Source) -> list[str]:
    out = []
    for name in cache.text_encoders:
        ds = cache.f[TEXTS][name]["data"]
        spec = cache.text_provenance(name).get("spec", "")
        if src.matches(name, spec, tuple(ds.shape[1:]), by_size=True):
            out.append(name)
    return out


# -- rows ---------------------------------------------------------------------------------------
def fit(rows: np.ndarray, valid: int, n: int | None) -> np.ndarray:
    """The field's length rule: keep the rows the recording covers, cut to ``n`` or pad by
    repeating the last one (MUSIC-AVQA issue #3); ``n`` None keeps the rows as cached."""
    if n is None:
        return rows
    keep = rows[:valid] if 0 < valid < rows.shape[0] else rows
    if keep.shape[0] >= n:
        return keep[:n]
    return np.concatenate([keep, np.repeat(keep[-1:], n - keep.shape[0], axis=0)])


def _combine(recipe: Recipe, parts: list[np.ndarray]) -> np.ndarray:
    if recipe.combine == "cls+tokens":
        cls, tokens = parts
        return np.concatenate([cls[:, None, :], tokens], axis=1)
    return parts[0]


def padding_rule(cache: Cache, layout: Layout) -> str:
    if layout.segments is None:
        return "none (rows as cached)"
    t = cache.timeline
    if t.get("max_seconds") and round(float(t["max_seconds"]) * float(t.get("fps", 1))) == layout.segments \
            and t.get("pad") == "repeat":
        return f"as cached (--max-seconds {float(t['max_seconds']):g}, last second repeated)"
    return f"applied at export ({layout.segments} rows: cut, or the last covered second repeated)"


# -- the export ---------------------------------------------------------------------------------
def read_id_list(path: str | Path) -> list[str]:
    """Video ids, one per line (or the first column of a CSV); blank lines, '#' comments and a
    ``video_id`` header are skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        first = line.split(",", 1)[0].strip().strip('"')
        if first and first != "video_id":
            out.append(first)
    return out


def export(cache_path: str | Path, layout: str | Layout, out: str | Path, *, questions: Sequence[str | Path] = (),
           videos: Sequence[str] | None = None, use: dict[str, list[str]] | None = None, force: bool = False,
           on_start: Callable[[int], None] | None = None, on_file: Callable[[], None] | None = None,
           batch_bytes: int = BATCH_BYTES) -> ExportSummary:
    """Write ``layout``'s folders under ``out`` from the cache; see the module docstring."""
    t0 = time.perf_counter()
    lay = LAYOUTS[layout] if isinstance(layout, str) else layout
    out = Path(out)
    with open_cache(cache_path) as cache:
        if lay.segments is not None and (float(cache.timeline.get("fps", 1.0)) != 1.0 and cache.videos):
            raise ExportError(f"{cache.path} has {cache.timeline.get('fps')} segments per second; the {lay.name} "
                              "layout reads one row per second (extract with --fps 1)")
        filled, texts = resolve(cache, lay, use)
        qs = [q for path in questions for q in load_questions(path)]
        if videos is None:
            videos = sorted({q.video_id for q in qs}) if qs else cache.videos
        videos = list(dict.fromkeys(videos))
        summary = ExportSummary(out, lay.name, padding_rule(cache, lay))
        lacking: dict[str, list[str]] = {}
        todo: list[tuple[Filled, list[str]]] = []
        known = set(cache.videos)
        for fl in filled:
            ok = []
            for v in videos:
                if not safe_stem(v):
                    lacking.setdefault(v, ["its id cannot be a file name"])
                elif v not in known:
                    lacking.setdefault(v, [f"not in {cache.path.name}"])
                else:
                    gone = [n for n in fl.features if not cache.has(v, n)]
                    if gone:
                        lacking.setdefault(v, []).append(f"{fl.folder.folder}/ (no {', '.join(gone)})")
                    else:
                        ok.append(v)
            todo.append((fl, ok))
        text_todo: list[tuple[TextFolder, str, list[int]]] = []
        for tf, table in texts:
            have = cache.text_ids(table)
            ids = sorted({q.question_id for q in qs}) if qs else sorted(have)
            gone = [i for i in ids if i not in have]
            if gone:
                summary.missing.append(f"{tf.folder}/: {len(gone)} question(s) without a {table!r} embedding, "
                                       f"e.g. {', '.join(map(str, gone[:5]))}")
            text_todo.append((tf, table, [i for i in ids if i in have]))
        summary.missing[:0] = [f"{v}: {'; '.join(lacking[v])}" for v in videos if v in lacking]
        if on_start:
            on_start(sum(len(ok) for _, ok in todo) + sum(len(ids) for *_, ids in text_todo))
        for name in [fl.folder.folder for fl, _ in todo] + [tf.folder for tf, *_ in text_todo]:
            _check_inside(out, name)
        out.mkdir(parents=True, exist_ok=True)
        index = WriteIndex(out)
        try:
            for fl, ok in todo:
                _write_videos(cache, lay, fl, ok, out, force, summary, on_file, batch_bytes, index)
            for tf, table, ids in text_todo:
                _write_texts(cache, tf, table, ids, out, force, summary, on_file, index)
        finally:
            index.close()
        _write_manifest(cache, lay, filled, texts, out, summary)
    summary.seconds = time.perf_counter() - t0
    return summary


def _check_inside(out: Path, folder: str) -> Path:
    """``out/folder``, refused when it leads out of ``out`` (``..``, an absolute name, a symbolic link)."""
    path = out / folder
    root, where = out.resolve(), path.resolve()
    if root == where or root not in where.parents:
        raise ExportError(f"{path} leads out of {out} (.., an absolute path or a symbolic link); "
                          "featpipe writes only inside it")
    return path


def _inside(out: Path, folder: str) -> Path:
    """``out/folder``, made and checked again (nothing was planted since the first check)."""
    (out / folder).mkdir(parents=True, exist_ok=True)
    return _check_inside(out, folder)


def _write_videos(cache: Cache, lay: Layout, fl: Filled, ids: list[str], out: Path, force: bool,
                  summary: ExportSummary, on_file, batch_bytes: int, index: WriteIndex) -> None:
    folder = _inside(out, fl.folder.folder)
    clean_temporaries(folder)
    first = fl.features[0]
    ids = sorted(ids, key=lambda v: cache.record(v)["features"][first][0])  # storage order: contiguous reads
    rows = lay.segments or max((cache.record(v)["features"][first][1] for v in ids), default=1)
    per_video = rows * 4 * sum(int(np.prod(cache.info(n).shape)) for n in fl.features)
    step = max(1, batch_bytes // max(1, per_video))
    dtype = np.dtype(fl.folder.dtype)
    for i in range(0, len(ids), step):
        batch = ids[i:i + step]
        parts = {n: cache.load(n, batch, dtype=None) for n in fl.features}
        for j, v in enumerate(batch):
            feats = cache.record(v)["features"]
            pieces = [fit(parts[n][j], int(feats[n][2] if len(feats[n]) > 2 else feats[n][1]), lay.segments)
                      for n in fl.features]
            arr = _combine(fl.recipe, pieces).astype(dtype, copy=False)
            if put(folder / f"{v}.npy", arr, force, index):
                summary.written += 1
            else:
                summary.unchanged += 1
            if on_file:
                on_file()


def _write_texts(cache: Cache, tf: TextFolder, table: str, ids: list[int], out: Path, force: bool,
                 summary: ExportSummary, on_file, index: WriteIndex, chunk: int = 4096) -> None:
    folder = _inside(out, tf.folder)
    clean_temporaries(folder)
    for i in range(0, len(ids), chunk):
        part = ids[i:i + chunk]
        emb = cache.text_embeddings(table, question_ids=part, dtype=np.dtype(tf.dtype))
        shape = tf.shape or (1, *emb.shape[1:])
        for qid, row in zip(part, emb):
            if put(folder / f"{int(qid)}.npy", row.reshape(shape), force, index):
                summary.written += 1
            else:
                summary.unchanged += 1
            if on_file:
                on_file()


def _write_manifest(cache: Cache, lay: Layout, filled: Iterable[Filled], texts, out: Path,
                    summary: ExportSummary) -> None:
    """``featpipe-export.json`` next to the folders: what came from where (no loader reads it)."""
    doc = {
        "featpipe": __version__, "layout": lay.name, "project": lay.project, "cache": str(cache.path.resolve()),
        "padding": summary.padding, "timeline": cache.timeline,
        "folders": {fl.folder.folder: {"features": list(fl.features), "combine": fl.recipe.combine,
                                       "shape": list(fl.folder.shape), "dtype": fl.folder.dtype,
                                       "flag": fl.folder.flag,
                                       "provenance": {n: cache.provenance(n) for n in fl.features}}
                    for fl in filled},
        "texts": {tf.folder: {"table": table, "shape": list(tf.shape), "flag": tf.flag,
                              "provenance": cache.text_provenance(table)} for tf, table in texts},
    }
    header = json.dumps(doc, indent=2, sort_keys=True, default=str).encode()
    write_atomic(out / MANIFEST, header, memoryview(b""))
