"""What a file must be before featpipe reads or writes it as a cache: one line when it is not.

A cache file may come from elsewhere (a colleague, a download, a hand edit), so the reader and the
writer check, once per open and per new record, everything they later rely on: the schema, the
groups and datasets of docs/cache-format.md with their types and attributes, chunks no larger than
featpipe would read at once, and records that are JSON objects pointing inside their datasets.
Anything else is a :class:`CacheError` naming the file and the first problem, never a traceback
in the middle of reading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from .. import __version__
from .layout import CacheError
from .layout import BOUNDS, FEATURES, INDEX, RECORDS, SCHEMA_VERSION, TEXTS, VIDEOS, group_name_problem

CHUNK_BYTES = 8 << 20
"""The largest chunk read: HDF5 decompresses a whole chunk to read any row of it, so a file with a
15-million-row chunk costs gigabytes per read. featpipe writes chunks of at most 4 MiB (one row
when a row is larger; 512 KiB before 2026-12-08), so this refuses only files made elsewhere (rechunk them with ``h5repack``)."""


def damaged(path: Path | str, what: str) -> CacheError:
    return CacheError(f"{path} is damaged or not written by featpipe: {what}")


def schema_version(f: h5py.File, path: Path | str) -> int:
    """The file's ``schema_version``; a missing or odd one is a one-line error."""
    if "schema_version" not in f.attrs:
        raise damaged(path, "it has no schema_version attribute")
    try:
        return int(np.asarray(f.attrs["schema_version"]).item())
    except (TypeError, ValueError):
        raise damaged(path, f"schema_version is {f.attrs['schema_version']!r}, not a number") from None


def check_writable(f: h5py.File, path: Path | str) -> None:
    """Refuse to write into a cache of another schema (a newer featpipe's): it would be rewritten as ours."""
    version = schema_version(f, path)
    if version != SCHEMA_VERSION:
        made = f.attrs.get("featpipe_version", "an unknown version")
        made = made.decode() if isinstance(made, bytes) else made
        raise CacheError(
            f"{path} has cache schema {version} (made by featpipe {made}); this featpipe "
            f"{__version__} writes schema {SCHEMA_VERSION} only: use featpipe {made} or newer to "
            "write to it, or a new cache"
        )


def _dataset(group: h5py.Group, name: str, path: Path | str, where: str) -> h5py.Dataset:
    obj = group.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise damaged(path, f"{where}/{name} is {'missing' if obj is None else 'not a dataset'}")
    return obj


def _check_chunks(ds: h5py.Dataset, path: Path | str) -> None:
    if ds.chunks is None:
        return
    chunk = int(np.prod(ds.chunks, dtype=np.int64)) * ds.dtype.itemsize
    row = int(np.prod(ds.chunks[1:], dtype=np.int64)) * ds.dtype.itemsize
    if chunk > max(CHUNK_BYTES, row):
        raise CacheError(
            f"{path}: {ds.name} is stored in chunks of {chunk / 2**20:.0f} MiB ({ds.chunks}); featpipe "
            f"reads chunks of at most {CHUNK_BYTES >> 20} MiB (it writes 4 MiB): rechunk it, e.g. "
            f"h5repack -l {ds.name.lstrip('/')}:CHUNK={'x'.join(['1024', *map(str, ds.chunks[1:])])}"
        )


def _log(group: h5py.Group, path: Path | str, where: str) -> None:
    records = _dataset(group, RECORDS, path, where)
    index = _dataset(group, INDEX, path, where)
    if records.dtype != np.uint8 or records.ndim != 1:
        raise damaged(path, f"{where}/{RECORDS} is {records.dtype} {records.shape}, not uint8 bytes")
    if index.dtype.kind not in "iu" or index.ndim != 2 or index.shape[1] != 2:
        raise damaged(path, f"{where}/{INDEX} is {index.dtype} {index.shape}, not int64 (rows, 2)")
    _check_chunks(records, path)
    _check_chunks(index, path)


def _json_attr(group: h5py.Group, key: str, path: Path | str, kinds: tuple[type, ...]) -> Any:
    v = group.attrs.get(key)
    if isinstance(v, bytes):
        v = v.decode(errors="replace")
    try:
        value = json.loads(v) if isinstance(v, str) else None
    except ValueError:
        value = None
    if not isinstance(value, kinds):
        raise damaged(path, f"{group.name} attribute {key!r} is {v!r}, not JSON {'/'.join(k.__name__ for k in kinds)}")
    return value


def check_structure(f: h5py.File, path: Path | str) -> None:
    """Every group, dataset and attribute the reader relies on, checked once when opening."""
    schema_version(f, path)
    _json_attr(f, "timeline", path, (dict,))
    for name in (VIDEOS, FEATURES, TEXTS):
        if not isinstance(f.get(name), h5py.Group):
            raise damaged(path, f"/{name} is missing")
    _log(f[VIDEOS], path, f"/{VIDEOS}")
    if BOUNDS in f[VIDEOS]:
        b = _dataset(f[VIDEOS], BOUNDS, path, f"/{VIDEOS}")
        if b.dtype.kind != "f" or b.ndim != 2 or b.shape[1] != 2:
            raise damaged(path, f"/{VIDEOS}/{BOUNDS} is {b.dtype} {b.shape}, not float (rows, 2)")
        _check_chunks(b, path)
    for name, g in f[FEATURES].items():
        check_feature(g, name, path)
    for name, g in f[TEXTS].items():
        if not isinstance(g, h5py.Group) or group_name_problem(name):
            raise damaged(path, f"/{TEXTS}/{name} is not a text table")
        data = _dataset(g, "data", path, g.name)
        if data.dtype.kind != "f" or data.ndim < 2:
            raise damaged(path, f"{data.name} is {data.dtype} {data.shape}, not float rows")
        _check_chunks(data, path)
        _log(g, path, g.name)
        _json_attr(g, "provenance", path, (dict,))


def check_feature(g: Any, name: str, path: Path | str) -> None:
    if not isinstance(g, h5py.Group) or group_name_problem(name):
        raise damaged(path, f"/{FEATURES}/{name} is not a feature group (a name that is a path, or an empty group)")
    data = _dataset(g, "data", path, g.name)
    shape = _json_attr(g, "shape", path, (list,))
    if data.dtype.kind not in "fiu" or data.ndim < 1 or list(data.shape[1:]) != shape:
        raise damaged(path, f"{data.name} is {data.dtype} {data.shape}; its attributes say rows of {tuple(shape)}")
    for key in ("hop", "start"):
        try:
            float(np.asarray(g.attrs[key]).item())
        except (KeyError, TypeError, ValueError):
            raise damaged(path, f"{g.name} attribute {key!r} is missing or not a number") from None
    if g.attrs.get("modality") not in ("audio", "visual", b"audio", b"visual"):
        raise damaged(path, f"{g.name} attribute 'modality' is {g.attrs.get('modality')!r}")
    _json_attr(g, "provenance", path, (dict,))
    _check_chunks(data, path)


def _ints(value: Any, n: tuple[int, ...]) -> bool:
    return (
        isinstance(value, list)
        and len(value) in n
        and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value)
    )


def check_records(
    records: list[Any],
    f: h5py.File,
    path: Path | str,
    new_features_possible: bool = False,
    data: Callable[[h5py.Group], h5py.Dataset] | None = None,
) -> None:
    """Each video record a JSON object with a string id, pointing only inside its datasets.

    ``new_features_possible``: a reader refreshing after it opened, where a later writer may have
    added a feature group its SWMR view does not show yet; entries of such features are not checked
    (nothing reads them through this view). ``data``: the reader's own handle on a feature's
    ``data`` (refreshed here to see rows committed since; HDF5 wants one handle per dataset in a
    process); without it the writer's view is read as it is."""
    sizes: dict[str, int] = {}
    bounds_rows: int | None = None
    for rec in records:
        vid = rec.get("video_id") if isinstance(rec, dict) else None
        if not isinstance(vid, str) or not isinstance(rec.get("features", {}), dict):
            raise damaged(path, f"a video record is not a featpipe record: {str(rec)[:80]}")
        for name, entry in rec.get("features", {}).items():
            if name not in sizes:
                ds = f[FEATURES].get(name)
                if ds is None and new_features_possible:
                    continue
                if ds is None:
                    raise damaged(path, f"video {vid!r} has rows of feature {name!r}, which the file lacks")
                if data is None:
                    sizes[name] = ds["data"].shape[0]
                else:
                    handle = data(ds)
                    handle.refresh()
                    sizes[name] = handle.shape[0]
            if not _ints(entry, (2, 3)) or entry[0] + entry[1] > sizes[name] or entry[-1] > entry[1]:
                raise damaged(
                    path, f"video {vid!r} feature {name!r} points at rows {entry!r}, outside its {sizes[name]} rows"
                )
        invalid = rec.get("invalid", {})
        if not isinstance(invalid, dict) or not all(
            isinstance(r, list) and all(_ints(x, (2,)) for x in r) for r in invalid.values()
        ):
            raise damaged(path, f"video {vid!r} has invalid runs {str(invalid)[:60]}")
        if "bounds" in rec:
            if bounds_rows is None:  # once: rows of /videos/bounds (-1: none)
                b = f[VIDEOS].get(BOUNDS)
                if b is not None and data is not None:
                    b.refresh()
                bounds_rows = -1 if b is None else b.shape[0]
            if not _ints(rec["bounds"], (2,)) or sum(rec["bounds"]) > bounds_rows:
                raise damaged(path, f"video {vid!r} points at beat bounds {rec['bounds']!r} the file does not hold")


def decode_log(index: np.ndarray, blob: np.ndarray, path: Path | str, where: str) -> list[Any]:
    """The JSON records of a log; an index outside the records, or bytes that are not JSON, is one line."""
    raw = blob.tobytes()
    out = []
    for o, n in index:
        o, n = int(o), int(n)
        if o < 0 or n <= 0 or o + n > len(raw):
            raise damaged(path, f"{where}/{INDEX} points at bytes {o}..{o + n} of {len(raw)}")
        try:
            out.append(json.loads(raw[o : o + n]))
        except (ValueError, RecursionError):
            raise damaged(path, f"{where}/{RECORDS} bytes {o}..{o + n} are not a JSON record") from None
    return out
