"""The one writer of a cache file: append-only commits that survive ``kill -9``.

Crash safety rests on three rules:

1. Structure (groups, datasets, attributes) is created only while opening, before SWMR mode;
   afterwards the writer only appends to existing datasets, which SWMR keeps consistent on disk
   at every moment (readers in other processes rely on the same property).
2. A commit writes the arrays, flushes, writes the JSON record, flushes, and only then appends
   the record's ``(offset, length)`` row to ``/videos/index`` and flushes. A reader (or a later
   writer) that sees the index row therefore sees everything it points to; a kill before that
   row leaves only unreferenced bytes, which the next writer overwrites.
3. One writer at a time, enforced by an exclusive lock on ``<cache>.lock``. A writer that finds
   the HDF5 write flags still set while holding the lock knows the last writer died and clears
   them (:mod:`featpipe.cache.recover`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import __version__
from ..contracts import OutputSpec
from .identity import feature_differences
from .layout import CacheError
from .layout import (BOUNDS, FEATURES, FORMAT, INDEX, RECORDS, SCHEMA_VERSION, TEXTS, VIDEOS, beat_timeline,
                     chunk_rows, decode_records, encode_json)
from .recover import clear_write_flags, write_flags


class _Log:
    """An append-only list of JSON records: ``records`` (bytes) and ``index`` (offset, length)."""

    def __init__(self, group: h5py.Group) -> None:
        self.records = group[RECORDS]
        self.index = group[INDEX]
        n = self.index.shape[0]
        idx = self.index[:n] if n else np.zeros((0, 2), np.int64)
        self.end = int((idx[:, 0] + idx[:, 1]).max()) if n else 0  # bytes referenced so far

    @staticmethod
    def create(group: h5py.Group) -> None:
        group.create_dataset(RECORDS, shape=(0,), maxshape=(None,), chunks=(65536,), dtype=np.uint8)
        group.create_dataset(INDEX, shape=(0, 2), maxshape=(None, 2), chunks=(4096, 2), dtype=np.int64)

    def read(self) -> list[dict]:
        n = self.index.shape[0]
        if n == 0:
            return []
        return decode_records(self.index[:n], self.records[: self.end])

    def append(self, record: dict, flush) -> None:
        data = encode_json(record)
        stop = self.end + data.size
        if self.records.shape[0] < stop:
            self.records.resize((stop,))
        self.records[self.end:stop] = data
        flush()
        n = self.index.shape[0]
        self.index.resize((n + 1, 2))
        self.index[n] = (self.end, data.size)
        flush()
        self.end = stop


class CacheWriter:
    """Open (or create) a cache for writing. Use as a context manager.

    ``timeline`` (the decode parameters that define segment k) is fixed when the cache is
    created; reopening with different values raises :class:`CacheError`.
    """

    def __init__(self, path: str | Path, timeline: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lockfile = open(f"{self.path}.lock", "a+")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.close()
            raise CacheError(f"{self.path} is being written by another featpipe process") from None
        try:
            self._open(timeline)
        except BaseException:
            self._release()
            raise

    # -- opening and structure ---------------------------------------------------------------
    def _open(self, timeline: dict[str, Any] | None) -> None:
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists:
            try:
                if write_flags(self.path):
                    clear_write_flags(self.path)  # we hold the lock: the last writer is dead
                self.f = h5py.File(self.path, "a", libver="latest", locking=False)
            except OSError as exc:
                raise CacheError(f"{self.path} is not a readable featpipe cache: {exc}") from None
            if self.f.attrs.get("format") != FORMAT:
                self.f.close()
                raise CacheError(f"{self.path} is an HDF5 file but not a featpipe cache")
            stored = json.loads(self.f.attrs["timeline"])
            if not stored and timeline:  # made without one (e.g. texts first): the first extract sets it
                self.f.attrs["timeline"] = json.dumps(timeline, sort_keys=True)
                stored = dict(timeline)
            if timeline is not None:  # every key of either side: a beat cache is not a fixed-second one
                diff = {k: (stored.get(k), timeline.get(k)) for k in sorted(set(stored) | set(timeline))
                        if stored.get(k) != timeline.get(k)}
                if diff:
                    self.f.close()
                    what = ", ".join(f"{k}={a!r} in the cache, {b!r} asked" for k, (a, b) in diff.items())
                    raise CacheError(f"{self.path} was built with another timeline ({what}); use a new cache")
            self.timeline = stored
        else:
            self.f = h5py.File(self.path, "w", libver="latest", locking=False)
            self.timeline = dict(timeline or {})
            self.f.attrs["format"] = FORMAT
            self.f.attrs["schema_version"] = SCHEMA_VERSION
            self.f.attrs["featpipe_version"] = __version__
            self.f.attrs["timeline"] = json.dumps(self.timeline, sort_keys=True)
            _Log.create(self.f.create_group(VIDEOS))
            self.f.create_group(FEATURES)
            self.f.create_group(TEXTS)
            self.f.flush()
        if beat_timeline(self.timeline) and BOUNDS not in self.f[VIDEOS]:  # structure only before SWMR
            self.f[VIDEOS].create_dataset(BOUNDS, shape=(0, 2), maxshape=(None, 2), chunks=(4096, 2), dtype=np.float64)
            self.f.flush()
        self.swmr = False

    def feature_provenance(self, name: str) -> dict[str, Any] | None:
        """The stored provenance of feature ``name`` (None when the cache has no such feature)."""
        group = self.f[FEATURES]
        return json.loads(group[name].attrs["provenance"]) if name in group else None

    def ensure_feature(self, spec: OutputSpec, provenance: dict[str, Any], dtype: str | None = None) -> None:
        """Create the dataset for a feature, or check an existing one matches ``provenance``."""
        if self.swmr:
            raise CacheError("features must be declared before writing starts")
        group = self.f[FEATURES]
        if spec.name in group:
            changed = feature_differences(json.loads(group[spec.name].attrs["provenance"]), provenance)
            if changed:
                raise CacheError(
                    f"feature {spec.name!r} in {self.path} was made with "
                    + ", ".join(f"{k}={a!r}" for k, a, _ in changed)
                    + "; now " + ", ".join(f"{k}={b!r}" for k, _, b in changed)
                    + ": use a new cache")
            return
        dt = np.dtype(dtype or spec.dtype)
        g = group.create_group(spec.name)
        g.create_dataset("data", shape=(0, *spec.shape), maxshape=(None, *spec.shape),
                         chunks=(chunk_rows(spec.shape, dt.itemsize), *spec.shape), dtype=dt)
        beats = beat_timeline(self.timeline)  # rows are beat segments: their times are the video's bounds
        attrs = {
            "name": spec.name, "modality": spec.modality, "shape": list(spec.shape), "dtype": dt.name,
            "hop": float("nan") if beats else spec.hop if spec.hop is not None else self.timeline.get("seg_len"),
            "start": (float("nan") if beats else spec.start if spec.hop is not None
                      else self.timeline.get("seg_len", 1.0) / 2),
            "window": spec.window, "layout": spec.layout, "on_timeline": beats or spec.hop is None,
        }
        for k, v in attrs.items():
            g.attrs[k] = json.dumps(v) if isinstance(v, (list, dict)) or v is None else v
        g.attrs["attrs"] = json.dumps(spec.attrs, sort_keys=True, default=str)
        g.attrs["provenance"] = json.dumps(provenance, sort_keys=True, default=str)
        self.f.flush()

    def ensure_text_table(self, encoder: str, dim: int | tuple[int, ...], provenance: dict[str, Any]) -> None:
        """Create ``/texts/<encoder>`` (embeddings of strings, keyed by text and ids).

        ``dim`` is the row shape: ``D`` for one vector per text, or a tuple such as ``(77, D)``.
        """
        if self.swmr:
            raise CacheError("text tables must be declared before writing starts")
        group = self.f[TEXTS]
        if encoder in group:
            old = json.loads(group[encoder].attrs["provenance"])
            if old.get("weights") != provenance.get("weights"):
                raise CacheError(f"text encoder {encoder!r} in {self.path} used other weights; use a new cache")
            return
        g = group.create_group(encoder)
        row = (dim,) if isinstance(dim, int) else tuple(dim)
        g.create_dataset("data", shape=(0, *row), maxshape=(None, *row), chunks=(chunk_rows(row, 2), *row),
                         dtype=np.float16)
        _Log.create(g)
        g.attrs["provenance"] = json.dumps(provenance, sort_keys=True, default=str)
        self.f.flush()

    def start(self) -> None:
        """Switch to SWMR: from here on only appends, and readers may open the file."""
        if not self.swmr:
            self.f.swmr_mode = True
            self.swmr = True
        self._videos = _Log(self.f[VIDEOS])
        records = self._videos.read()
        self.records: dict[str, dict] = {}
        for r in records:
            self.records[r["video_id"]] = r
        self._ends = {name: 0 for name in self.f[FEATURES]}
        for r in records:
            for name, (off, rows, *_) in r.get("features", {}).items():
                if name in self._ends:
                    self._ends[name] = max(self._ends[name], off + rows)
        self._texts: dict[str, _Log] = {}
        self._bounds_end = max((sum(r["bounds"]) for r in records if "bounds" in r), default=0)

    # -- writing -----------------------------------------------------------------------------
    def _flush(self) -> None:
        self.f.flush()

    def commit(self, record: dict[str, Any], arrays: dict[str, Any],
               valid: dict[str, int] | None = None, bounds: np.ndarray | None = None) -> None:
        """Append ``arrays`` and the video's record; the video is visible once this returns.

        Each value of ``arrays`` is an array or a *row source* that is never read whole: an object
        with ``shape`` (stored rows first), ``blocks()`` (``(lo, hi)`` row ranges) and ``read(lo, hi)``
        (those rows), such as :class:`featpipe.run.spool.Spooled`; its rows are copied block by block.
        An exception while reading leaves no record, so the rows written so far are referenced by
        nothing and the next commit writes over them.

        ``bounds`` ((rows, 2) start/end seconds, beat-timeline caches) are appended before the record,
        which points at them, so they are committed with it.

        Features of an earlier record of the same video that ``arrays`` does not replace are
        kept (asking for a new extractor later computes only that one); so are features the
        record lists under ``imported`` (``featpipe import``), even when the source changes.
        ``record["invalid"]`` (feature -> ``[start, stop)`` runs of fill rows) describes the
        features of ``arrays``; a kept feature keeps its runs from the earlier record.
        """
        if not self.swmr:
            self.start()
        vid = record["video_id"]
        old = self.records.get(vid) or {}
        kept = old.get("imported") or {}  # imported features belong to no source file: they stay
        features = (dict(old["features"]) if old and same_source(old, record)
                    else {n: e for n, e in old.get("features", {}).items() if n in kept})
        for name, arr in arrays.items():
            ds = self.f[FEATURES][name]["data"]
            start = self._ends[name]
            stop = start + arr.shape[0]
            if ds.shape[0] < stop:
                ds.resize((stop, *ds.shape[1:]))
            if isinstance(arr, np.ndarray):
                ds[start:stop] = arr.astype(ds.dtype, copy=False)
            else:
                for lo, hi in arr.blocks():
                    ds[start + lo:start + hi] = arr.read(lo, hi).astype(ds.dtype, copy=False)
            features[name] = [start, int(arr.shape[0]), int((valid or {}).get(name, arr.shape[0]))]
        extra: dict[str, Any] = {}
        if bounds is not None:
            extra["bounds"] = self._append_bounds(np.asarray(bounds, np.float64))
        elif old.get("bounds"):  # a commit without bounds (e.g. an import) keeps the video's segments
            extra["bounds"] = old["bounds"]
        self._flush()
        invalid = {n: r for n, r in (old.get("invalid") or {}).items() if n in features and n not in arrays}
        invalid.update({n: r for n, r in (record.get("invalid") or {}).items() if n in arrays and r})
        rec = dict(record, features=features, committed=time.time(), featpipe=__version__, **extra)
        rec.pop("invalid", None)
        if invalid:
            rec["invalid"] = invalid
        imported = {n: v for n, v in kept.items() if n in features and n not in arrays}
        imported.update(record.get("imported") or {})
        if imported:
            rec["imported"] = imported
        self._videos.append(rec, self._flush)
        for name, (start, rows, _) in features.items():
            if name in arrays:
                self._ends[name] = start + rows
        self.records[vid] = rec

    def _append_bounds(self, bounds: np.ndarray) -> list[int]:
        if BOUNDS not in self.f[VIDEOS]:
            raise CacheError(f"{self.path} has a fixed-second timeline: it stores no beat bounds")
        ds = self.f[VIDEOS][BOUNDS]
        start, stop = self._bounds_end, self._bounds_end + bounds.shape[0]
        if ds.shape[0] < stop:
            ds.resize((stop, 2))
        ds[start:stop] = bounds
        self._bounds_end = stop
        return [start, int(bounds.shape[0])]

    def add_texts(self, encoder: str, items: list[dict[str, Any]], embeddings: np.ndarray) -> None:
        """Append text embeddings; ``items[i]`` (e.g. ``{"text": ..., "ids": [...]}``) describes row i."""
        if not self.swmr:
            self.start()
        g = self.f[TEXTS][encoder]
        log = self._texts.get(encoder)
        if log is None:
            log = self._texts[encoder] = _Log(g)
            log.rows = max((sum(r["rows"]) for r in log.read()), default=0)  # type: ignore[attr-defined]
        ds = g["data"]
        start = log.rows  # type: ignore[attr-defined]
        stop = start + embeddings.shape[0]
        if ds.shape[0] < stop:
            ds.resize((stop, *ds.shape[1:]))
        ds[start:stop] = embeddings.astype(ds.dtype, copy=False)
        self._flush()
        log.append({"rows": [start, int(embeddings.shape[0])], "items": items}, self._flush)
        log.rows = stop  # type: ignore[attr-defined]

    # -- closing -----------------------------------------------------------------------------
    def _release(self) -> None:
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_UN)
        finally:
            self._lockfile.close()

    def close(self) -> None:
        if getattr(self, "f", None) is not None and self.f.id.valid:
            self.f.close()
        self._release()

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


SAMPLE_BYTES = 1 << 20
"""Bytes read at each of the start, middle and end of a source file for its content fingerprint."""


def content_fingerprint(path: str | os.PathLike, size: int) -> str:
    """A fast fingerprint of a file's content: sha256 of its size and of 1 MiB at its start, middle and
    end (all of it for files up to 3 MiB). Containers keep their headers and indexes at the ends, so a
    re-encode or a different file of the same size changes it; an edit of the same size that touches
    none of the three samples is not seen."""
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)}):
            f.seek(offset)
            h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()[:32]


def source_stat(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of a source file for resume decisions: absolute path, size, mtime, content fingerprint."""
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime": st.st_mtime,
            "content": content_fingerprint(path, st.st_size)}


def same_source(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two records describe the same source content (the path may move).

    Same size and content fingerprint: the same, whatever the mtime (a copied or touched file). A
    record from before content fingerprints is compared by size and mtime, as then.
    """
    sa, sb = a.get("source") or {}, b.get("source") or {}
    if sa.get("size") != sb.get("size"):
        return False
    if sa.get("content") and sb.get("content"):
        return sa["content"] == sb["content"]
    return sa.get("mtime") == sb.get("mtime")
