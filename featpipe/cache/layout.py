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


def beat_timeline(timeline: dict) -> bool:
    """Whether a cache's ``timeline`` attribute is the beat timeline (rows per video vary, with bounds)."""
    return timeline.get("kind") == "beats"


def encode_json(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode(), np.uint8)


def decode_records(index: np.ndarray, blob: np.ndarray) -> list[dict]:
    raw = blob.tobytes()
    return [json.loads(raw[int(o):int(o) + int(n)]) for o, n in index]


def chunk_rows(row_shape: tuple[int, ...], itemsize: int) -> int:
    """Rows per HDF5 chunk: about 512 KiB, so bulk reads stream and small reads stay cheap."""
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * itemsize)
    return int(min(8192, max(1, (512 * 1024) // row_bytes)))
