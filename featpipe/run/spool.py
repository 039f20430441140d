"""Streaming a video's rows to the cache: written to disk chunk by chunk, copied in blocks.

A worker computes a video's rows chunk by chunk (16 or more segments at a time). With a
:class:`SpoolSink` each chunk's rows, already cast to the storage dtype, go straight to one file
per output in the run's spool folder ``<cache>.spool/``, so a worker holds one chunk of a video,
not the whole video (a 60 s video of ResNet-18 14x14 maps is 24 MiB float32). What the worker
sends back is a :class:`Spooled` reference per output (path, dtype, computed shape and the
*take* plan of :mod:`featpipe.decode.rows`); the client's writer copies ``data[off + i] =
rows[take[i]]`` in blocks of about :data:`BLOCK_BYTES` (:meth:`Spooled.read`) and then the file
is deleted. :class:`MemorySink` is the same interface in memory (tests, benchmarks and runs
whose workers cannot see the client's disk).

File names are made from the run id, the submission counter, a random token of the try and the
output's index, never from a video id or a feature name. :class:`SpoolFolder` is the client's
side: it removes what a killed run left (the cache's writer lock says no other run is live),
checks that workers write where the client reads, forgets a submission's files and removes the
folder at the end.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..decode.rows import take_rows

BLOCK_BYTES = 4 << 20
"""About how many bytes of rows a reader holds at once (the writer's and the beat pooling's blocks)."""
SUFFIX = ".rows"
_FILE = re.compile(r"[0-9a-f]{12}-\d+-[0-9a-f]{8}-[0-9a-z]+\.rows|check-[0-9a-f]{32}")  # what this module writes


class SpoolError(OSError):
    """A spooled output cannot be read back (its file is gone or short); the message is one line."""


def block_rows(row_shape: tuple[int, ...], itemsize: int, budget: int | None = None) -> int:
    """Rows of ``row_shape`` and ``itemsize`` that fit in ``budget`` bytes (:data:`BLOCK_BYTES`); at least 1."""
    row = max(1, int(np.prod(row_shape, dtype=np.int64)) * itemsize)
    return max(1, (BLOCK_BYTES if budget is None else budget) // row)


@dataclass(frozen=True)
class Spooled:
    """One output of one video in a spool file: ``computed`` rows as written, and the stored rows'
    ``take`` plan (stored row ``i`` is computed row ``take[i]``, zeros where it is -1). Picklable
    and small: the rows stay on disk."""

    path: str
    dtype: str
    computed: tuple[int, ...]  # (rows in the file, *row shape)
    take: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        """The stored rows' shape, as an array's (``shape[0]`` is what the cache stores)."""
        return (int(self.take.shape[0]), *self.computed[1:])

    def blocks(self, rows: int | None = None) -> list[tuple[int, int]]:
        """``(lo, hi)`` stored-row ranges of at most ``rows`` rows (default: :data:`BLOCK_BYTES` worth)."""
        step = rows or block_rows(self.computed[1:], np.dtype(self.dtype).itemsize)
        n = self.shape[0]
        return [(lo, min(n, lo + step)) for lo in range(0, n, step)]

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Stored rows ``lo:hi``: each distinct computed row they take is read once, by contiguous runs."""
        dt, row = np.dtype(self.dtype), tuple(self.computed[1:])
        take = self.take[lo:hi]
        out = np.zeros((take.shape[0], *row), dt)
        own = take >= 0
        if not own.any():
            return out
        need = np.unique(take[own])
        got = np.empty((need.shape[0], *row), dt)
        size = int(np.prod(row, dtype=np.int64)) * dt.itemsize
        breaks = np.flatnonzero(np.diff(need) != 1) + 1
        try:
            with open(self.path, "rb") as f:
                if os.fstat(f.fileno()).st_size != self.computed[0] * size:
                    raise SpoolError(f"spool file {Path(self.path).name} holds "
                                     f"{os.fstat(f.fileno()).st_size} bytes, not {self.computed[0] * size}")
                for a, b in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [need.shape[0]]])):
                    f.seek(int(need[a]) * size)
                    got[a:b] = np.frombuffer(f.read(int(b - a) * size), dt).reshape(int(b - a), *row)
        except FileNotFoundError:
            raise SpoolError(f"spool file {Path(self.path).name} is gone") from None
        out[own] = got[np.searchsorted(need, take[own])]
        return out

    def remove(self) -> None:
        unlink_quietly(self.path)


def unlink_quietly(path: str | Path) -> None:
    """Delete ``path``; one already gone is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read_rows(src: np.ndarray | Spooled, lo: int, hi: int) -> np.ndarray:
    """Stored rows ``lo:hi`` of an output held in memory or spooled."""
    return src[lo:hi] if isinstance(src, np.ndarray) else src.read(lo, hi)


class MemorySink:
    """Where :func:`featpipe.run.extract_video.process_video` puts rows by default: in memory, the take applied
    on return (what tests and benchmarks read)."""

    def __init__(self) -> None:
        self._parts: dict[str, list[np.ndarray]] = {}
        self._open: dict[str, tuple[tuple[int, ...], np.dtype]] = {}

    def open(self, key: str, row_shape: tuple[int, ...], dtype) -> None:
        self._parts[key], self._open[key] = [], (tuple(row_shape), np.dtype(dtype))

    def add(self, key: str, rows: np.ndarray) -> None:
        self._parts[key].append(rows)

    def rows(self, key: str) -> int:
        return sum(p.shape[0] for p in self._parts[key])

    def stored(self, key: str, take: np.ndarray | None) -> np.ndarray:
        """The stored rows (``take`` None: the rows as added)."""
        row, dt = self._open[key]
        parts = self._parts.pop(key)
        arr = np.concatenate(parts) if parts else np.zeros((0, *row), dt)
        return arr if take is None else take_rows(arr, take)

    def discard(self) -> None:
        self._parts.clear()


@dataclass(frozen=True)
class SpoolTarget:
    """Where one submission's spool files go (sent with the task): the folder and ``<run>-<submission>``."""

    folder: str
    prefix: str


class SpoolSink:
    """Rows written to one spool file per output as each chunk comes; the sink holds no rows."""

    def __init__(self, target: SpoolTarget) -> None:
        self.target = target
        self.token = uuid.uuid4().hex[:8]  # this try's: a rerun of the same task never writes into its files
        self._files: dict[str, tuple[str, object, tuple[int, ...], np.dtype]] = {}
        self._rows: dict[str, int] = {}
        self._paths: list[str] = []

    def open(self, key: str, row_shape: tuple[int, ...], dtype) -> None:
        if not re.fullmatch(r"[0-9a-z]+", key):
            raise ValueError(f"spool key {key!r}: lowercase letters and digits only")
        path = os.path.join(self.target.folder, f"{self.target.prefix}-{self.token}-{key}{SUFFIX}")
        self._paths.append(path)
        self._files[key] = (path, open(path, "wb"), tuple(row_shape), np.dtype(dtype))
        self._rows[key] = 0

    def add(self, key: str, rows: np.ndarray) -> None:
        _, f, _, dt = self._files[key]
        f.write(np.ascontiguousarray(rows, dt).reshape(-1).view(np.uint8))  # type: ignore[attr-defined] # no copy
        self._rows[key] += int(rows.shape[0])

    def rows(self, key: str) -> int:
        return self._rows[key]

    def stored(self, key: str, take: np.ndarray | None) -> Spooled:
        path, f, row, dt = self._files.pop(key)
        f.close()  # type: ignore[attr-defined]
        n = self._rows[key]
        plan = np.arange(n, dtype=np.int64) if take is None else np.asarray(take, np.int64)
        return Spooled(path, dt.name, (n, *row), plan)

    def discard(self) -> None:
        """Close and delete every file of this sink (a failed try leaves nothing behind)."""
        for _, f, _, _ in self._files.values():
            f.close()  # type: ignore[attr-defined]
        self._files.clear()
        for path in self._paths:
            unlink_quietly(path)


class SpoolFolder:
    """The client's side of the spool: ``<cache>.spool/``, one run at a time (the cache's writer lock)."""

    def __init__(self, cache: str | Path) -> None:
        self.path = Path(f"{cache}.spool").absolute()

    def open(self) -> "SpoolFolder":
        """Remove a killed run's leftovers and make the folder."""
        self.clean()
        self.path.mkdir(exist_ok=True)
        return self

    def target(self, prefix: str) -> SpoolTarget:
        return SpoolTarget(str(self.path), prefix)

    def files(self) -> list[Path]:
        """The files in the folder that this module writes (anything else there is left alone)."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if _FILE.fullmatch(p.name) and p.is_file())

    def delete_submission(self, prefix: str) -> None:
        """Delete every file of one submission (its tries that died, timed out or failed)."""
        for p in self.files():
            if p.name.startswith(prefix + "-"):
                unlink_quietly(p)

    def visible(self, name: str) -> bool:
        """Whether a check file a worker wrote (:func:`write_check`) is here, whole; it is deleted."""
        p = self.path / name
        try:
            ok = _FILE.fullmatch(name) is not None and p.read_bytes() == name.encode()
        except OSError:
            return False
        unlink_quietly(p)
        return ok

    def clean(self) -> None:
        for p in self.files():
            unlink_quietly(p)

    def close(self) -> None:
        """Delete what is left and the folder (kept when something else was put in it)."""
        self.clean()
        try:
            self.path.rmdir()
        except OSError:
            pass


def write_check(folder: str) -> str | None:
    """On a worker: write a check file into the client's spool folder; its name, or None when this
    worker cannot (the folder is not there: another machine's disk)."""
    name = f"check-{uuid.uuid4().hex}"
    try:
        with open(os.path.join(folder, name), "xb") as f:  # never creates the folder
            f.write(name.encode())
    except OSError:
        return None
    return name
