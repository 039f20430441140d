"""Reading a cache: the public API other projects (and ``heads``) use.

>>> with open_cache("cache.h5") as cache:
...     x, mask = cache.batch(cache.videos, "priors")      # (N, T, D), (N, T)

The file is opened in SWMR read mode, so it can be read while ``featpipe extract`` writes it;
:meth:`Cache.refresh` picks up videos committed since opening.
"""

from __future__ import annotations

import bisect
import json
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import h5py
import numpy as np

from ..decode.rows import runs_mask
from .check import check_records, check_structure, damaged, decode_log, schema_version
from .layout import BOUNDS, FEATURES, FORMAT, INDEX, RECORDS, TEXTS, VIDEOS, CacheError, beat_timeline
from .lock import locked_elsewhere
from .recover import truncation, write_flags


@dataclass(frozen=True)
class FeatureInfo:
    """One feature's description. Row i of a video is centred at ``start + i * hop`` seconds."""

    name: str
    spec: str
    shape: tuple[int, ...]
    dtype: str
    modality: str
    hop: float
    start: float
    window: float | None
    layout: str
    weights: str
    on_timeline: bool
    attrs: dict[str, Any]


@dataclass(frozen=True)
class FeatureArray:
    """One video's rows of one feature: ``data`` (T, *shape), row-centre ``times`` (T,) in
    seconds, and ``valid``, the number of rows up to the last one the recording covers (the rest
    is padding). ``mask`` (T,) bool says which rows hold decoded values: False for padding and for
    the fill rows before ``valid`` (a stream that started late, a hole), which hold a copy of a
    valid row or zeros. ``bounds`` (T, 2) is each row's (start, end) in seconds: the beat segments
    on a beat-timeline cache (``times`` are their middles), the fixed segments or hop windows otherwise."""

    data: np.ndarray
    times: np.ndarray
    valid: int
    bounds: np.ndarray | None = None
    mask: np.ndarray | None = None


def _attr(g: h5py.Group, key: str, default: Any = None) -> Any:
    if key not in g.attrs:
        return default
    v = g.attrs[key]
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and v[:1] in "[{n" and v not in ("",):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v.item() if hasattr(v, "item") else v


class Cache:
    """A featpipe cache opened for reading. Prefer :func:`open_cache`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CacheError(f"{self.path}: no such cache")
        cut = truncation(self.path)  # before HDF5: a SWMR read of a cut file retries for ever
        if cut and not locked_elsewhere(self.path):  # a live writer extends the file as it goes
            if write_flags(self.path):
                cut += ("; or its writer died while the disk was full: rerun `featpipe extract` (or import) "
                        "on it, which recovers it when nothing committed was lost")
            raise CacheError(cut)
        self._shared: _SharedFile | None = _SharedFile.acquire(self.path)
        self.f = self._shared.f
        # One (info, data handle) per feature, looked up once: parsing the attributes' JSON and
        # opening the dataset cost more than reading a video's rows. The handle is the process's
        # one handle on that dataset (_SharedFile); it is refreshed once after each records load.
        self._feats: dict[str, tuple[FeatureInfo, h5py.Dataset]] = {}
        self._fresh: set[str] = set()
        self._tables: dict[str, tuple[dict[str, int], np.ndarray]] = {}
        try:
            if self.f.attrs.get("format") != FORMAT:
                raise CacheError(f"{self.path} is not a featpipe cache")
            check_structure(self.f, self.path)
            self.schema_version = schema_version(self.f, self.path)
            self.timeline: dict[str, Any] = json.loads(self.f.attrs["timeline"])
            self._records: dict[str, dict] = {}
            self._seen = 0
            self._texts: dict[str, tuple[dict[str, int], dict[int, int], dict[int, str]]] = {}
            self.refresh()
        except BaseException:
            self.close()
            raise

    # -- discovery -----------------------------------------------------------------------
    def refresh(self) -> None:
        """Pick up videos committed (and features declared) since the cache was opened."""
        g = self.f[VIDEOS]
        g[INDEX].refresh()
        g[RECORDS].refresh()
        n = g[INDEX].shape[0]
        if n > self._seen:
            idx = g[INDEX][self._seen:n]
            lo, hi = max(0, int(idx[:, 0].min())), int((idx[:, 0] + idx[:, 1]).max())
            blob = g[RECORDS][lo:hi]
            records = decode_log(idx - np.array([lo, 0]), blob, self.path, f"/{VIDEOS}")
            check_records(records, self.f, self.path, new_features_possible=self._seen > 0,
                          data=lambda g: self._shared.dataset(g, "data"))
            for rec in records:
                self._records[rec["video_id"]] = rec
            self._seen = n
        self._texts.clear()
        self._feats.clear()
        self._fresh.clear()
        self._tables.clear()

    @property
    def videos(self) -> list[str]:
        """Committed video ids, sorted."""
        return sorted(self._records)

    @property
    def features(self) -> list[str]:
        """Feature names declared in the cache (a video may lack some; see :meth:`has`)."""
        return sorted(self.f[FEATURES])

    def record(self, video_id: str) -> dict[str, Any]:
        """The video's latest record: source, duration, segments, decode parameters, features."""
        try:
            return self._records[video_id]
        except KeyError:
            raise KeyError(f"video {video_id!r} is not in {self.path}") from None

    def has(self, video_id: str, feature: str) -> bool:
        return feature in self._records.get(video_id, {}).get("features", {})

    def _group(self, feature: str) -> h5py.Group:
        feats = self.f[FEATURES]
        if feature in feats:
            return feats[feature]
        for name in feats:  # accept the extractor spec too
            if _attr(feats[name], "provenance", {}).get("spec") == feature:
                return feats[name]
        raise KeyError(f"feature {feature!r} is not in {self.path}; it has: {', '.join(self.features)}")

    def info(self, feature: str) -> FeatureInfo:
        return self._feature(feature)[0]

    def _feature(self, feature: str) -> tuple[FeatureInfo, h5py.Dataset]:
        """The feature's description and its ``data`` dataset, looked up once (name or spec)."""
        hit = self._feats.get(feature)
        if hit is None:
            g = self._group(feature)
            hit = self._feats[feature] = (self._describe(g), self._shared.dataset(g, "data"))
        return hit

    def _refreshed(self, info: FeatureInfo, ds: h5py.Dataset) -> h5py.Dataset:
        """``ds`` refreshed once since this reader last loaded records (SWMR: rows committed
        since are then visible; the writer writes rows before the record that names them)."""
        if info.name not in self._fresh:
            ds.refresh()
            self._fresh.add(info.name)
        return ds

    @staticmethod
    def _describe(g: h5py.Group) -> FeatureInfo:
        prov = _attr(g, "provenance", {})
        return FeatureInfo(
            name=g.name.rsplit("/", 1)[-1], spec=prov.get("spec", ""), shape=tuple(_attr(g, "shape")),
            dtype=_attr(g, "dtype"), modality=_attr(g, "modality"), hop=float(_attr(g, "hop")),
            start=float(_attr(g, "start")), window=_attr(g, "window"), layout=_attr(g, "layout", ""),
            weights=prov.get("weights", ""), on_timeline=bool(_attr(g, "on_timeline", True)),
            attrs=_attr(g, "attrs", {}) or {},
        )

    def provenance(self, feature: str) -> dict[str, Any]:
        """How the feature was made: spec, weights identity, featpipe version, decode parameters."""
        return dict(_attr(self._group(feature), "provenance", {}), timeline=self.timeline)

    # -- arrays --------------------------------------------------------------------------
    def _slot(self, video_id: str, feature: str) -> tuple[int, int, int]:
        entry = self.record(video_id).get("features", {}).get(feature)
        if entry is None:
            raise KeyError(f"video {video_id!r} has no feature {feature!r}")
        off, rows = entry[0], entry[1]
        return off, rows, entry[2] if len(entry) > 2 else rows

    def mask(self, video_id: str, feature: str) -> np.ndarray:
        """``(rows,)`` bool: the video's rows of ``feature`` that hold decoded values (the record's
        ``valid`` prefix less its ``invalid`` runs)."""
        return self._mask(video_id, self.info(feature).name)

    def _mask(self, video_id: str, name: str) -> np.ndarray:
        _, rows, valid = self._slot(video_id, name)
        return runs_mask(rows, valid, self.record(video_id).get("invalid", {}).get(name))

    def get(self, video_id: str, feature: str, dtype: Any = None) -> FeatureArray:
        """One video's rows of one feature with their timestamps."""
        info, ds = self._feature(feature)
        name = info.name
        off, rows, valid = self._slot(video_id, name)
        data = self._refreshed(info, ds)[off:off + rows]
        if self.beats:
            bounds = self.bounds(video_id)[:rows]
            times = bounds.mean(axis=1)
        else:
            times = info.start + info.hop * np.arange(rows)
            half = (info.window if info.window else info.hop) / 2
            bounds = np.stack([times - half, times + half], axis=1)
        return FeatureArray(data.astype(dtype) if dtype else data, times, valid, bounds, self._mask(video_id, name))

    @property
    def beats(self) -> bool:
        """Whether this is a beat-timeline cache (``featpipe extract --timeline beats``): one row per
        beat segment, a different number per video, their times in :meth:`bounds`."""
        return beat_timeline(self.timeline)

    def bounds(self, video_id: str) -> np.ndarray:
        """``(T, 2)`` float64 (start, end) seconds of each row of the video on a beat-timeline cache."""
        entry = self.record(video_id).get("bounds")
        if entry is None:
            raise KeyError(f"video {video_id!r} has no beat bounds in {self.path} (a fixed-second cache: "
                           "row i of a feature is centred at start + i * hop)")
        ds = self.f[VIDEOS][BOUNDS]
        ds.refresh()
        return ds[entry[0]:entry[0] + entry[1]]

    def _slots(self, ids: Sequence[str], name: str) -> np.ndarray:
        """``(N, 3)`` int64: each video's (offset, rows, valid) in the feature's data."""
        table = self._tables.get(name)
        if table is None:  # once per records load: every video holding the feature
            have = [(v, e) for v, r in self._records.items() if (e := r.get("features", {}).get(name)) is not None]
            pos = {v: i for i, (v, _) in enumerate(have)}
            arr = np.array([(e[0], e[1], e[2] if len(e) > 2 else e[1]) for _, e in have], np.int64).reshape(-1, 3)
            table = self._tables[name] = (pos, arr)
        pos, arr = table
        try:
            return arr[[pos[v] for v in ids]].reshape(-1, 3)
        except KeyError:
            for v in ids:
                self._slot(v, name)  # raises the helpful KeyError
            raise

    @staticmethod
    def _ranges(slots: np.ndarray) -> list[tuple[int, int]]:
        """Row ranges ``[lo, hi)`` covering every slot, read one HDF5 call each: one range when
        the videos are most of their span (a whole-cache or a split's load), else the slots sorted
        and merged across gaps of up to a few chunks (reading a gap is cheaper than another call)."""
        if not len(slots):
            return []
        lo, hi = int(slots[:, 0].min()), int((slots[:, 0] + slots[:, 1]).max())
        if int(slots[:, 1].sum()) * 4 >= hi - lo:
            return [(lo, hi)]
        ranges: list[list[int]] = []
        for o, r in sorted(zip(slots[:, 0].tolist(), slots[:, 1].tolist())):
            if ranges and o - ranges[-1][1] <= _GAP_ROWS:
                ranges[-1][1] = max(ranges[-1][1], o + r)
            else:
                ranges.append([o, o + r])
        return [(a, b) for a, b in ranges]

    def _read(self, info: FeatureInfo, ds: h5py.Dataset, slots: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """The rows of every slot as ``(first row, block)`` pairs, each block read straight into a
        fresh array of the stored dtype (no intermediate copy)."""
        self._refreshed(info, ds)
        blocks = []
        for lo, hi in self._ranges(slots):
            block = np.empty((hi - lo, *ds.shape[1:]), ds.dtype)
            if hi > lo:
                ds.read_direct(block, np.s_[lo:hi])
            blocks.append((lo, block))
        return blocks

    @staticmethod
    def _locate(starts: list[int], blocks: list[tuple[int, np.ndarray]], off: int) -> tuple[int, np.ndarray]:
        """The block holding row ``off`` (blocks are sorted by ``starts`` and cover every slot)."""
        return blocks[max(0, bisect.bisect_right(starts, off) - 1)]

    def load(self, feature: str, video_ids: Sequence[str] | None = None, dtype: Any = np.float32) -> list[np.ndarray]:
        """Every requested video's rows, read in bulk (one read when they are most of the file).
        With ``dtype=None`` the arrays are views of the stored rows (no conversion, no copy)."""
        info, ds = self._feature(feature)
        ids = list(self.videos if video_ids is None else video_ids)
        slots = self._slots(ids, info.name)
        blocks = self._read(info, ds, slots)
        if dtype is not None and np.dtype(dtype) != ds.dtype:
            blocks = [(lo, _cast(b, np.dtype(dtype))) for lo, b in blocks]
        if len(blocks) == 1:
            lo, block = blocks[0]
            return [block[o - lo:o - lo + r] for o, r in zip(slots[:, 0].tolist(), slots[:, 1].tolist())]
        out = []
        starts = [lo for lo, _ in blocks]
        for o, r in zip(slots[:, 0].tolist(), slots[:, 1].tolist()):
            lo, block = self._locate(starts, blocks, o)
            out.append(block[o - lo:o - lo + r])
        return out

    def batch(self, video_ids: Sequence[str], feature: str, length: int | None = None,
              dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """A padded ``(N, T, *shape)`` array and a ``(N, T)`` mask of rows holding decoded values
        (:meth:`mask`: padding and fill rows are False).

        ``T`` is ``length`` or the longest video; longer videos are cut, shorter ones zero-padded.
        The stored rows are read in bulk and converted once, straight into the padded array.
        """
        info, ds = self._feature(feature)
        ids = list(video_ids)
        slots = self._slots(ids, info.name)
        T = length if length is not None else int(slots[:, 1].max(initial=0))
        out = np.zeros((len(ids), T, *info.shape), np.dtype(dtype) if dtype is not None else ds.dtype)
        n = np.minimum(slots[:, 1], T)
        mask = np.arange(T) < np.minimum(n, slots[:, 2])[:, None]
        for i, v in enumerate(ids):  # fill rows inside the valid prefix (rare): the record's runs
            runs = self._records[v].get("invalid", {}).get(info.name)
            if runs:
                mask[i] &= runs_mask(T, T, runs)
        blocks = self._read(info, ds, slots)
        flat = out.reshape(len(ids) * T, *info.shape)
        offs, rows = slots[:, 0].tolist(), slots[:, 1].tolist()
        starts = [lo for lo, _ in blocks]
        i = 0
        while i < len(ids):
            lo, block = self._locate(starts, blocks, offs[i])
            j, end = i + 1, offs[i] + min(rows[i], T)
            if rows[i] == T:  # whole videos stored back to back: one conversion for the run
                while j < len(ids) and rows[j] == T and offs[j] == end and end + T <= lo + len(block):
                    end += T
                    j += 1
            _copy_into(flat[i * T:i * T + end - offs[i]], block[offs[i] - lo:end - lo])
            i = j
        return out, mask

    def dataset(self, features: Sequence[str], video_ids: Sequence[str] | None = None,
                length: int | None = None):
        """A ``torch.utils.data.Dataset`` of ``{feature: (T, *shape) tensor, feature + "_mask": (T,)}``.

        Arrays are loaded in bulk up front, so iterating it never touches the file.
        """
        from .dataset import CacheDataset

        ids = list(self.videos if video_ids is None else video_ids)
        return CacheDataset(ids, {f: self.batch(ids, f, length) for f in features})

    # -- text embeddings -----------------------------------------------------------------
    @property
    def text_encoders(self) -> list[str]:
        return sorted(self.f[TEXTS])

    def _text_maps(self, encoder: str) -> tuple[dict[str, int], dict[int, int], dict[int, str]]:
        if encoder not in self._texts:
            if encoder not in self.f[TEXTS]:
                raise KeyError(f"no text embeddings {encoder!r} in {self.path}; it has: "
                               f"{', '.join(self.text_encoders) or 'none'} (run `featpipe encode-text`)")
            g = self.f[TEXTS][encoder]
            g[INDEX].refresh()
            g[RECORDS].refresh()
            n = g[INDEX].shape[0]
            by_text: dict[str, int] = {}
            by_id: dict[int, int] = {}
            id_text: dict[int, str] = {}
            if n:
                idx = g[INDEX][:n]
                rows = g["data"].shape[0]
                for rec in decode_log(idx, g[RECORDS][: int((idx[:, 0] + idx[:, 1]).max())], self.path, g.name):
                    try:
                        start, count = rec["rows"]
                        if not (0 <= start and start + count <= rows and len(rec["items"]) <= count):
                            raise ValueError
                        for i, item in enumerate(rec["items"]):
                            row = start + i
                            by_text[str(item["text"])] = row
                            for qid in item.get("ids", []):
                                by_id[int(qid)] = row
                                id_text[int(qid)] = str(item["text"])
                    except (KeyError, TypeError, ValueError, AttributeError):
                        raise damaged(self.path, f"a record of {g.name} is not a text record: {str(rec)[:80]}") from None
            self._texts[encoder] = (by_text, by_id, id_text)
        return self._texts[encoder]

    def text_embeddings(self, encoder: str, question_ids: Iterable[int] | None = None,
                        texts: Iterable[str] | None = None, dtype: Any = np.float32) -> np.ndarray:
        """Embeddings ``(N, D)`` (or ``(N, *row shape)``) looked up by question id or by the (filled-in) text."""
        by_text, by_id, _ = self._text_maps(encoder)
        if (question_ids is None) == (texts is None):
            raise ValueError("give exactly one of question_ids or texts")
        try:
            rows = [by_id[int(q)] for q in question_ids] if question_ids is not None else [by_text[t] for t in texts]
        except KeyError as exc:
            raise KeyError(f"{exc.args[0]!r} has no {encoder!r} text embedding in {self.path}") from None
        ds = self.f[TEXTS][encoder]["data"]
        ds.refresh()
        if not rows:
            return np.zeros((0, *ds.shape[1:]), dtype)
        uniq, inverse = np.unique(np.asarray(rows), return_inverse=True)
        data = ds[uniq][inverse]  # h5py wants increasing, unique indices
        return data.astype(dtype, copy=False)

    def text_provenance(self, encoder: str) -> dict[str, Any]:
        """How a text table was made: encoder spec, weights identity, featpipe version."""
        self._text_maps(encoder)  # raises the helpful KeyError for an unknown encoder
        return dict(_attr(self.f[TEXTS][encoder], "provenance", {}))

    def text_items(self, encoder: str) -> dict[str, int]:
        """Every embedded text and its row."""
        return dict(self._text_maps(encoder)[0])

    def text_ids(self, encoder: str) -> dict[int, str]:
        """Every question id with an embedding, and the text it was embedded as."""
        return dict(self._text_maps(encoder)[2])

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        if self._shared is not None:
            self._shared.release()
            self._shared = None
            self._feats.clear()

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, videos={len(self._records)}, features={self.features})"


class _SharedFile:
    """One h5py File per cache file and process, shared by every :class:`Cache` open on it, with
    one handle per feature dataset. HDF5 2.0 shares an open file's state between opens anyway,
    and once ``H5Drefresh`` ran on one of two handles open on a dataset, every later bulk read of
    it in the process fails ("can't insert duplicate key"); two readers of one cache in a
    process (a script and its DataLoader's dataset) must not hold two handles."""

    _open: dict[tuple[int, int, int], "_SharedFile"] = {}
    _lock = threading.Lock()

    def __init__(self, key: tuple[int, int, int], f: h5py.File) -> None:
        self.key, self.f, self.users = key, f, 0
        self.handles: dict[str, h5py.Dataset] = {}

    @classmethod
    def acquire(cls, path: Path) -> "_SharedFile":
        st = path.stat()
        key = (os.getpid(), st.st_dev, st.st_ino)  # a forked child opens its own
        with cls._lock:
            for other in [k for k in cls._open if k[0] != key[0]]:
                # inherited through fork: the parent's handles would be second handles here
                inherited = cls._open.pop(other)
                inherited.handles.clear()
                inherited.f.close()
            shared = cls._open.get(key)
            if shared is None or not shared.f.id.valid:
                try:
                    f = h5py.File(path, "r", swmr=True, locking=False, rdcc_nbytes=0)
                except OSError as exc:
                    if "already open for write" in str(exc):
                        raise CacheError(f"{path} is being restructured by a writer (or one died there); "
                                         "retry, or rerun `featpipe extract` to recover it") from None
                    raise CacheError(f"{path} is not a readable HDF5 file: {exc}") from None
                shared = cls._open[key] = cls(key, f)
            shared.users += 1
            return shared

    def dataset(self, group: h5py.Group, name: str) -> h5py.Dataset:
        path = f"{group.name}/{name}"
        ds = self.handles.get(path)
        if ds is None or not ds.id.valid:
            ds = self.handles[path] = group[name]
        return ds

    def release(self) -> None:
        with self._lock:
            self.users -= 1
            if self.users <= 0:
                self._open.pop(self.key, None)
                self.handles.clear()
                self.f.close()


_GAP_ROWS = 256  # rows worth reading through to save an HDF5 call (under one chunk)


def _copy_into(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src`` with the dtype conversion. float16 -> float32 goes through torch's
    vectorised cast when torch is already imported (any training script): numpy converts
    float16 element by element, 4 to 10 times slower (bench/bench_read.py); torch is never
    imported just for this."""
    torch = sys.modules.get("torch")
    if (torch is not None and src.dtype == np.float16 and dst.dtype == np.float32 and src.size >= 1 << 16
            and dst.flags.c_contiguous and src.flags.c_contiguous):
        torch.from_numpy(dst).copy_(torch.from_numpy(src))
    else:
        dst[...] = src


def _cast(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    out = np.empty(block.shape, dtype)
    _copy_into(out, block)
    return out


def open_cache(path: str | Path) -> Cache:
    """Open a featpipe cache for reading (safe while another process is extracting into it)."""
    return Cache(path)
