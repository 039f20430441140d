"""``featpipe import``: folders of ``<video_id>.npy`` (a project's layout, or any) into a cache.

An imported feature is a normal cache feature on the common segment timeline, so heads, readers
and ``featpipe export`` use it like an extracted one. Its provenance says it was imported, from
which folder, with which file shape and dtype (``spec = "import:<name>"``, ``weights =
"imported"``); each video's record lists its files under ``imported``, which also keeps them when
``featpipe extract`` later adds features to that video (see ``CacheWriter.commit``).

A file goes on the timeline only when its row count is the cache's segment count (60 one-second
segments with ``--max-seconds 60``, the field's rule); otherwise it is refused with a one-line
reason and the rest are imported.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .. import __version__
from ..cache import CacheWriter, open_cache
from ..cache.layout import feature_name_problem
from ..extractors.base import OutputSpec
from .layouts import LAYOUTS, SEGMENTS
from .npyfile import read_header, safe_stem

FIELD_TIMELINE = {"fps": 1.0, "seg_len": 1.0, "max_seconds": float(SEGMENTS), "pad": "repeat"}
_AUDIO_WORDS = ("vggish", "audio", "openl3", "clap", "panns", "beats", "wav2vec", "mfcc", "mel")


class ImportSetupError(Exception):
    """The import cannot start (nothing was written); the message is one line."""


@dataclass(frozen=True)
class ImportSource:
    """One folder of ``<video_id>.npy`` that becomes cache feature ``name``."""

    name: str
    folder: Path
    modality: str
    layout: str | None = None
    distinct_tokens: bool = False  # refuse files whose tokens all repeat token 0


@dataclass
class ImportSummary:
    cache: Path
    imported: dict[str, int] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    videos: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        feats = ", ".join(f"{n} ({k} videos)" for n, k in self.imported.items()) or "nothing"
        return f"{self.cache}: imported {feats}; {len(self.refused)} file(s) refused, {self.seconds:.1f} s"


def guess_modality(name: str) -> str:
    return "audio" if any(w in name.lower() for w in _AUDIO_WORDS) else "visual"


def layout_sources(folder: str | Path, layout: str) -> list[ImportSource]:
    """The folders of ``layout`` present under ``folder`` (one per feature; text folders are skipped)."""
    lay = LAYOUTS[layout]
    root = Path(folder)
    out: list[ImportSource] = []
    for vf in lay.videos:
        path = root / vf.folder
        if path.is_dir() and vf.import_as not in {s.name for s in out}:
            out.append(ImportSource(vf.import_as, path, vf.modality, layout,
                                    distinct_tokens=vf.folder == "clip_patch-level_vit_b32"))
    if not out:
        raise ImportSetupError(f"{root} has none of the {layout} layout's folders "
                           f"({', '.join(vf.folder + '/' for vf in lay.videos)})")
    return out


def _scan(src: ImportSource, refused: list[str]) -> dict[str, Path]:
    """``<id>.npy`` files of the folder; a symlink leading out of the folder is refused, not followed."""
    if not src.folder.is_dir():
        raise ImportSetupError(f"{src.folder}: no such folder")
    root = src.folder.resolve()
    files: dict[str, Path] = {}
    for e in sorted(os.scandir(src.folder), key=lambda e: e.name):
        if not e.name.endswith(".npy") or e.name.startswith("."):
            continue
        path = Path(e.path)
        if e.is_symlink():
            target = path.resolve()
            if target.parent != root and root not in target.parents:
                refused.append(f"{path}: a symbolic link out of {src.folder}, not followed")
                continue
            path = target
        if path.is_file():
            files[Path(e.name).stem] = path
    return files


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of an .npy whose header is sound and whose data the file really holds."""
    try:
        shape, dtype = read_header(path)
        need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    except (OSError, ValueError, TypeError, EOFError, SyntaxError):
        return None
    return (tuple(shape), dtype) if need <= path.stat().st_size else None


def _row_shape(files: dict[str, Path], src: ImportSource, rows: int | None) -> tuple[tuple[int, ...], str]:
    """The row shape most of the folder's files have (among those whose header could be imported), so
    that one odd or refused file never sets the shape the others are checked against."""
    counts: Counter = Counter()
    for path in files.values():
        head = _header(path)
        if head is None:
            continue
        shape, dtype = head
        if len(shape) >= 1 and dtype.kind in "fiu" and shape[0] > 0 and (rows is None or shape[0] == rows):
            counts[(tuple(shape[1:]), dtype.name)] += 1
    if not counts:
        raise ImportSetupError(f"{src.folder}: no readable .npy file" + (f" of {rows} rows" if rows else ""))
    return counts.most_common(1)[0][0]


def _target_timeline(path: Path) -> dict | None:
    """The timeline to open the cache with: the field's for a new cache, the stored one otherwise."""
    if not path.exists() or path.stat().st_size == 0:
        return dict(FIELD_TIMELINE)
    with open_cache(path) as cache:
        stored = dict(cache.timeline)
    if not stored:
        return dict(FIELD_TIMELINE)
    if float(stored.get("fps", 0)) != 1.0:
        raise ImportSetupError(f"{path} has {stored.get('fps')} segments per second; imported files have one row "
                           "per second (use a cache made with --fps 1, or a new one)")
    return None


def import_features(cache_path: str | Path, sources: Sequence[ImportSource], dtype: str = "float16",
                    on_start: Callable[[int], None] | None = None,
                    on_file: Callable[[], None] | None = None) -> ImportSummary:
    """Import every ``source`` folder into ``cache_path`` (created if absent); one commit per video."""
    t0 = time.perf_counter()
    cache_path = Path(cache_path)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ImportSetupError(f"two folders would become the same feature: {sorted({n for n in names if names.count(n) > 1})}")
    for name in names:
        why = feature_name_problem(name)
        if why:
            raise ImportSetupError(why)
    summary = ImportSummary(cache_path, {s.name: 0 for s in sources})
    scans = [(s, _scan(s, summary.refused)) for s in sources]
    timeline = _target_timeline(cache_path)
    rows = _timeline_rows(timeline)
    heads = {s.name: _row_shape(files, s, rows) for s, files in scans}
    with CacheWriter(cache_path, timeline) as writer:
        for s, files in scans:
            row, src_dtype = heads[s.name]
            spec = OutputSpec(s.name, row, s.modality, layout=f"imported from {s.folder.resolve()}",
                              attrs={"imported": True, "layout": s.layout})
            prov = {"spec": f"import:{s.name}", "weights": "imported", "featpipe": __version__,
                    "imported": {"from": str(s.folder.resolve()), "layout": s.layout, "files": len(files),
                                 "file_shape": [None, *row], "file_dtype": src_dtype, "at": time.time()}}
            writer.ensure_feature(spec, prov, dtype)
        writer.start()
        seg = writer.timeline.get("max_seconds")
        expected = int(round(float(seg) * float(writer.timeline.get("fps", 1.0)))) if seg else None
        ids = sorted({v for _, files in scans for v in files})
        if on_start:
            on_start(sum(len(f) for _, f in scans))
        for vid in ids:
            _import_video(writer, vid, scans, heads, expected, summary, on_file, dtype)
    summary.videos = len(ids)
    summary.seconds = time.perf_counter() - t0
    return summary


def _timeline_rows(timeline: dict | None) -> int | None:
    """Rows per video a timeline fixes (``None``: the stored timeline decides, read when writing)."""
    if not timeline or not timeline.get("max_seconds"):
        return None
    return int(round(float(timeline["max_seconds"]) * float(timeline.get("fps", 1.0))))


def _import_video(writer: CacheWriter, vid: str, scans, heads, expected: int | None, summary: ImportSummary,
                  on_file, dtype: str = "float16") -> None:
    old = writer.records.get(vid)
    want = expected if expected is not None else (old or {}).get("segments")
    arrays: dict[str, np.ndarray] = {}
    notes: dict[str, dict] = {}
    for s, files in scans:
        path = files.get(vid)
        if path is None:
            continue
        if on_file:
            on_file()
        arr, reason = _load(path)
        if arr is not None:
            reason = _refusal(arr, heads[s.name][0], want, vid, s, dtype)
        if reason:
            summary.refused.append(f"{path}: {reason}")
            continue
        want = want or arr.shape[0]
        arrays[s.name] = arr
        notes[s.name] = {"from": str(path.resolve()), "shape": list(arr.shape), "dtype": arr.dtype.name}
    if not arrays:
        return
    rows = next(iter(arrays.values())).shape[0]
    if old is not None:
        record = {k: v for k, v in old.items() if k not in ("features", "committed", "featpipe", "imported", "invalid")}
    else:
        record = {"video_id": vid, "source": {"imported": notes[next(iter(notes))]["from"]}, "duration": None,
                  "segments": rows, "valid": rows, "media": {}, "decode": {}}
    record["imported"] = notes
    writer.commit(record, arrays)
    for name in arrays:
        summary.imported[name] += 1


def _load(path: Path) -> tuple[np.ndarray | None, str | None]:
    """The file's array, or why not (an .npz under an .npy name, a header promising more than the file)."""
    with open(path, "rb") as fh:
        if fh.read(4) == b"PK\x03\x04":  # np.load would open an .npz archive whatever the name
            return None, "an .npz archive named .npy, not one array"
    if _header(path) is None:
        return None, "not a readable .npy (its header is damaged, or states more data than the file holds)"
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        return None, f"not a readable .npy ({' '.join(str(exc).split())})"
    if not isinstance(arr, np.ndarray):
        getattr(arr, "close", lambda: None)()
        return None, "not one array"
    if arr.ndim == 0:
        return None, "a 0-d array (one value), not rows"
    return arr, None


def _refusal(arr: np.ndarray, row: tuple[int, ...], want: int | None, vid: str, s: ImportSource,
             dtype: str = "float16") -> str | None:
    if not safe_stem(vid):
        return "its name cannot be a video id"
    if arr.dtype.kind not in "fiu":
        return f"dtype {arr.dtype} is not numeric"
    if tuple(arr.shape[1:]) != row:
        return f"rows of {tuple(arr.shape[1:])}, most of the folder's files have {row}"
    if want is not None and arr.shape[0] != want:
        return (f"{arr.shape[0]} rows, the cache's timeline has {want} one-second segments per video; "
                "not on the same timeline, not imported")
    if arr.shape[0] == 0:
        return "no rows"
    if not np.isfinite(arr).all():
        return "contains NaN or infinity"
    with np.errstate(over="ignore"):
        stored = arr.astype(dtype)
    if not np.isfinite(stored).all():  # what extract refuses too: never store inf
        big = float(np.abs(arr).max())
        return f"values up to {big:.4g} are past {dtype}'s range ({float(np.finfo(dtype).max):g}); import with --dtype float32"
    if s.distinct_tokens and arr.ndim == 3 and arr.shape[1] > 1 and np.array_equal(arr[:, 1:], np.broadcast_to(arr[:, :1], arr[:, 1:].shape)):
        return ("every token repeats token 0 (the CLS), as PSTP-Net's released extract_patch-level_feat.py "
                "writes them: no patch features to import")
    return None
