""".npy files written so that a crash never leaves a half file under the final name.

A file is written under a hidden temporary name in the same folder, then renamed over the final
name (``os.replace`` is atomic on POSIX). A file that already holds exactly the bytes we would
write (same header: shape, dtype, order; same data) is left alone, so a rerun after ``kill -9``
rewrites nothing it finished. :class:`WriteIndex` remembers the sha256, size and mtime of every
file written, so that check needs no read of the file while it is untouched since.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
from functools import lru_cache
from pathlib import Path

import numpy as np

_TMP = re.compile(r"^\..+\.npy\.(\d+)\.tmp$")
_SAFE = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,200}$")


def safe_stem(name: str) -> bool:
    """Whether an id from the data may become a file name (no separators, no '..', no hidden names)."""
    return bool(_SAFE.match(name)) and ".." not in name


@lru_cache(maxsize=64)
def _header(shape: tuple[int, ...], dtype: str) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": shape})
    return buf.getvalue()


def npy_bytes(arr: np.ndarray) -> tuple[bytes, memoryview]:
    """The header and data of ``arr`` as ``np.save`` writes them (C order)."""
    arr = np.ascontiguousarray(arr)
    return _header(tuple(int(s) for s in arr.shape), arr.dtype.str), memoryview(arr).cast("B")


def same_content(path: Path, header: bytes, data: memoryview) -> bool:
    """Whether ``path`` already holds exactly ``header + data``."""
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size != len(header) + data.nbytes:  # a symlink is replaced
            return False
        with open(path, "rb") as fh:
            if fh.read(len(header)) != header:
                return False
            return data == fh.read()
    except OSError:
        return False


def write_atomic(path: Path, header: bytes, data: memoryview) -> None:
    """Write under ``.<name>.<pid>.tmp`` in the same folder, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(header)
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class WriteIndex:
    """``<root>/.featpipe-export.jsonl``: one line per written file (relative path, size,
    mtime_ns, sha256). A file whose size and mtime still match its line and whose digest is the
    digest of the new bytes is unchanged without being read. Lines cut by a crash are ignored."""

    NAME = ".featpipe-export.jsonl"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / self.NAME
        self.entries: dict[str, tuple[int, int, str]] = {}
        if self.path.is_symlink():  # planted: never read or appended through; replaced on close
            self.path.unlink()
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    e = json.loads(line)
                    self.entries[e["p"]] = (int(e["s"]), int(e["m"]), str(e["h"]))
                except (ValueError, KeyError, TypeError):
                    continue
        self._fh = None

    def _key(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def unchanged(self, path: Path, size: int, digest: str) -> bool:
        entry = self.entries.get(self._key(path))
        if entry is None or entry[0] != size or entry[2] != digest:
            return False
        try:
            st = path.lstat()  # a symlink is never "unchanged": it is replaced by a file
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == size and st.st_mtime_ns == entry[1]

    def record(self, path: Path, size: int, digest: str) -> None:
        st = path.stat()
        key = self._key(path)
        self.entries[key] = (size, st.st_mtime_ns, digest)
        if self._fh is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
            self._fh = os.fdopen(fd, "a", encoding="utf-8")
        self._fh.write(json.dumps({"p": key, "s": size, "m": st.st_mtime_ns, "h": digest}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        """Rewrite the index with one line per file (reruns append), atomically."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            lines = "".join(json.dumps({"p": k, "s": s, "m": m, "h": h}) + "\n"
                            for k, (s, m, h) in sorted(self.entries.items()))
            write_atomic(self.path, lines.encode(), memoryview(b""))


def put(path: Path, arr: np.ndarray, force: bool = False, index: WriteIndex | None = None) -> bool:
    """Write ``arr`` to ``path`` unless it already holds it; returns whether it wrote."""
    header, data = npy_bytes(arr)
    size = len(header) + data.nbytes
    digest = None
    if index is not None:
        h = hashlib.sha256(header)
        h.update(data)
        digest = h.hexdigest()
    if not force:
        if index is not None and index.unchanged(path, size, digest):
            return False
        if same_content(path, header, data):
            if index is not None:
                index.record(path, size, digest)
            return False
    write_atomic(path, header, data)
    if index is not None:
        index.record(path, size, digest)
    return True


def clean_temporaries(folder: Path) -> int:
    """Remove temporaries that exports no longer running left in ``folder``; returns how many."""
    n = 0
    if folder.is_dir():
        for entry in os.scandir(folder):
            m = _TMP.match(entry.name)
            if m and not _alive(int(m.group(1))):
                os.unlink(entry.path)
                n += 1
    return n


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours from an earlier call in this process: not being written now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a .npy file without reading its data."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            arr = np.load(path, mmap_mode="r")
            return tuple(arr.shape), arr.dtype
    return tuple(shape), dtype
