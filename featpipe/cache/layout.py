"""Names, small helpers and the error shared by the cache writer and reader (see docs/cache-format.md).

Layout of one cache file::

    /                      attrs: format, schema_version, featpipe_version, timeline (JSON)
    /videos/records        uint8, JSON records concatenated (one per commit)
    /videos/index          int64 (R, 2): (offset, length) of each record; appending a row commits
/videos/bounds         float64 (rows, 2): (start, end) seconds of each row, beat-timeline caches only
    /features/<name>/data  (rows, *shape): every video's rows, appended; attrs describe the feature
    /texts/<encoder>/data  (rows, D) text embeddings; records/index as for videos

A video's latest record (by position in ``/videos/index``) wins; it maps each feature name to
``[offset, rows]`` in that feature's ``data``. Rows beyond what committed records reference are
leftovers of an interrupted commit and are overwritten by the next writer.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np


class CacheError(Exception):
    """The cache cannot be used as asked; the message says why in one line."""

FORMAT = "featpipe-cache"
SCHEMA_VERSION = 1
RECORDS = "records"
INDEX = "index"
VIDEOS = "videos"
FEATURES = "features"
TEXTS = "texts"
BOUNDS = "bounds"


FEATURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""A feature (or text table) name: one HDF5 group under ``/features`` (``/texts``), never a path."""


def feature_name_problem(name: str, what: str = "feature") -> str | None:
    """One line saying why ``name`` cannot name a feature, or None (``--name`` and ``import --feature`` rule)."""
    if isinstance(name, str) and FEATURE_NAME.fullmatch(name):
        return None
    return f"{what} name {name!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit (a name, not a path)"


def group_name_problem(name: str, what: str = "feature") -> str | None:
    """One line saying why ``name`` cannot be one group under ``/features`` or ``/texts`` (a path, an
    empty or dot name), or None. Looser than :func:`feature_name_problem`: names extractors derive
    (a CLAP folder's name, say) may hold other characters, and caches holding them stay usable."""
    if isinstance(name, str) and name and name not in (".", "..") and "/" not in name and "\0" not in name:
        return None
    return f"{what} name {name!r} is a path or empty; a {what} is one group of the cache"


def beat_timeline(timeline: dict) -> bool:
    """Whether a cache's ``timeline`` attribute is the beat timeline (rows per video vary, with bounds)."""
    return timeline.get("kind") == "beats"


def encode_json(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode(), np.uint8)


def decode_records(index: np.ndarray, blob: np.ndarray) -> list[dict]:
    raw = blob.tobytes()
    return [json.loads(raw[int(o):int(o) + int(n)]) for o, n in index]


CHUNK_TARGET = 4 << 20
"""Bytes per HDF5 chunk the writer aims at. A bulk read costs one HDF5 read per chunk: at 512 KiB
(caches written before 2026-12-08) ``cache.load`` of 2,000 x 60 x 512 float16 rows took 0.86x of
``np.load``'s CPU time for the same bytes, at 4 MiB 0.93x, for 0.7 ms more per commit
(docs/performance.md). A single video's rows are still read alone: the reader has no chunk cache
and HDF5 reads a part of an unfiltered chunk directly. Files with other chunks read the same."""


def chunk_rows(row_shape: tuple[int, ...], itemsize: int) -> int:
    """Rows per HDF5 chunk: about :data:`CHUNK_TARGET` bytes (at most 16,384 rows, at least one)."""
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * itemsize)
    return int(min(16384, max(1, CHUNK_TARGET // row_bytes)))
