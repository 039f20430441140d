"""Clear the HDF5 superblock's write flags after a writer was killed.

HDF5 (superblock versions 2 and 3) records "open for write / SWMR write" in the superblock's
file-consistency flags and refuses to open such a file for writing again ("may use h5clear").
A SWMR writer that dies leaves a consistent file (SWMR orders its metadata flushes for readers)
with those flags set. featpipe's writer holds the file's lock (:mod:`featpipe.cache.lock`), so
when it finds the flags set it knows the previous writer is dead and clears them, as ``h5clear
-s`` does: set the flags byte to 0 and recompute the superblock checksum (Jenkins lookup3, as the
HDF5 file-format specification prescribes). Nothing else in the file is touched, and nothing is
cleared while another descriptor holds the lock (a live writer).

The superblock also states the file's end (its end-of-file address). A file shorter than that was
cut (an interrupted copy or download): :func:`truncation` says so before HDF5 is asked to open it,
because a SWMR reader skips HDF5's own check and retries reads past the end for ever.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import h5py

from .check import decode_log
from .layout import FEATURES, INDEX, RECORDS, TEXTS, VIDEOS, CacheError
from .lock import FileLock, LockError

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MASK = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, the checksum of HDF5 metadata blocks."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _MASK
    i = 0
    while length - i > 12:
        x, y, z = struct.unpack_from("<III", data, i)
        a, b, c = (a + x) & _MASK, (b + y) & _MASK, (c + z) & _MASK
        a = (a - c) & _MASK; a ^= _rot(c, 4); c = (c + b) & _MASK  # noqa: E702
        b = (b - a) & _MASK; b ^= _rot(a, 6); a = (a + c) & _MASK  # noqa: E702
        c = (c - b) & _MASK; c ^= _rot(b, 8); b = (b + a) & _MASK  # noqa: E702
        a = (a - c) & _MASK; a ^= _rot(c, 16); c = (c + b) & _MASK  # noqa: E702
        b = (b - a) & _MASK; b ^= _rot(a, 19); a = (a + c) & _MASK  # noqa: E702
        c = (c - b) & _MASK; c ^= _rot(b, 4); b = (b + a) & _MASK  # noqa: E702
        i += 12
    tail = data[i:]
    if not tail:
        return c
    tail = tail + b"\0" * (12 - len(tail))  # zero bytes add nothing, as in the byte-wise switch
    x, y, z = struct.unpack("<III", tail)
    a, b, c = (a + x) & _MASK, (b + y) & _MASK, (c + z) & _MASK
    c ^= b; c = (c - _rot(b, 14)) & _MASK  # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & _MASK  # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & _MASK  # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & _MASK  # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & _MASK  # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & _MASK  # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & _MASK  # noqa: E702
    return c


def _superblock(fh) -> tuple[int, int, int]:
    """(offset, version, size of offsets) of the superblock; searched at 0, 512, 1024, ..."""
    size = os.fstat(fh.fileno()).st_size
    pos = 0
    while pos + 12 <= size:
        fh.seek(pos)
        head = fh.read(12)
        if head[:8] == _SIGNATURE:
            return pos, head[8], head[9]
        pos = 512 if pos == 0 else pos * 2
    raise OSError("not an HDF5 file (no superblock signature)")


def write_flags(path: str | Path) -> int:
    """The superblock's file-consistency flags (0 when the file was closed cleanly)."""
    with open(path, "rb") as fh:
        pos, version, _ = _superblock(fh)
        if version < 2:
            return 0
        fh.seek(pos + 11)
        return fh.read(1)[0]


def end_of_file(path: str | Path) -> tuple[int, int]:
    """(the end of file the superblock states, counted from the file's start; the file's size)."""
    with open(path, "rb") as fh:
        pos, version, offsets = _superblock(fh)
        size = os.fstat(fh.fileno()).st_size
        if version < 2:  # the byte after the version is another version there; offsets' size is at 13
            fh.seek(pos + 13)
            offsets = fh.read(1)[0]
        if offsets not in (2, 4, 8):
            raise OSError(f"{path}: superblock states {offsets}-byte addresses; the file is damaged")
        fmt = {2: "<H", 4: "<I", 8: "<Q"}[offsets]
        # versions 2 and 3: signature, version, offsets, lengths, flags (12 bytes); then base,
        # extension, end of file. Versions 0 and 1: 24 (28) bytes of versions, sizes, K values and
        # flags; then base, free space, end of file.
        fh.seek(pos + (12 if version >= 2 else 28 if version == 1 else 24))
        fields = fh.read(3 * offsets)
        if len(fields) < 3 * offsets:
            raise OSError(f"{path}: the HDF5 superblock is cut short; the file is damaged")
        base, eof = struct.unpack_from(fmt, fields, 0)[0], struct.unpack_from(fmt, fields, 2 * offsets)[0]
    return base + eof, size


def truncation(path: str | Path) -> str | None:
    """One line saying the file is shorter than its superblock states, or None when it is whole."""
    try:
        stated, size = end_of_file(path)
    except OSError:
        return None  # not HDF5 or damaged otherwise: opening it says what
    if size >= stated:
        return None
    return (f"{path} is truncated: {size} bytes of the {stated} its HDF5 superblock states (an interrupted "
            "copy or download?); copy it again")


def clear_write_flags(path: str | Path, lock: FileLock | None = None) -> bool:
    """Clear the write flags of a file whose writer died; True when something was cleared.

    ``lock`` is the caller's :class:`~featpipe.cache.lock.FileLock` on this file (a writer that
    holds it); without one the lock is taken here. A file whose lock another descriptor holds has
    a live writer: :class:`~featpipe.cache.lock.LockError`, and nothing is touched.
    """
    if lock is None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such file")
        with FileLock(path) as own:
            return clear_write_flags(path, own)
    st = os.stat(path)
    if (st.st_dev, st.st_ino) != lock.inode or lock.fd < 0:
        raise LockError(f"{path}: the lock given is not held on this file")
    with open(path, "r+b") as fh:
        pos, version, offsets = _superblock(fh)
        if version < 2:
            return False
        fh.seek(pos)
        block = bytearray(fh.read(12 + 4 * offsets + 4))
        if block[11] == 0:
            return False
        body = block[:-4]
        (stored,) = struct.unpack("<I", block[-4:])
        if lookup3(bytes(body)) != stored:
            raise OSError(f"{path}: superblock checksum mismatch; the file is damaged")
        body[11] = 0
        fh.seek(pos + 11)
        fh.write(b"\0")
        fh.seek(pos + len(body))
        fh.write(struct.pack("<I", lookup3(bytes(body))))
        fh.flush()
        os.fsync(fh.fileno())
        return True


def _chunks_past(ds, rows: int, end: int) -> bool:
    """Whether any chunk holding one of the first ``rows`` rows of ``ds`` lies past byte ``end``."""
    if ds.chunks is None:
        offset = ds.id.get_offset()
        return offset is not None and offset + ds.id.get_storage_size() > end
    for i in range(ds.id.get_num_chunks()):
        info = ds.id.get_chunk_info(i)
        if info.chunk_offset[0] < rows and info.byte_offset + info.size > end:
            return True
    return False


def committed_past(path: str | Path, end: int) -> str | None:
    """The first committed part of a cache that lies past byte ``end`` (None: everything committed lies
    before it). Opened without SWMR, so a metadata block past ``end`` is a checksum error, not a wait."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            logs = [f[VIDEOS]] + [f[TEXTS][n] for n in f[TEXTS]]
            extents: dict[str, int] = {}
            for g in logs:
                idx = g[INDEX][:]
                size = int((idx[:, 0] + idx[:, 1]).max()) if len(idx) else 0
                for name, rows in ((g[INDEX].name, len(idx)), (g[RECORDS].name, size)):
                    if _chunks_past(f[name], rows, end):
                        return name
                for rec in decode_log(idx, g[RECORDS][:size], path, g.name):
                    if "rows" in rec:
                        extents[f"{g.name}/data"] = max(extents.get(f"{g.name}/data", 0), sum(rec["rows"]))
                    for name, (off, rows, *_) in rec.get("features", {}).items():
                        key = f"/{FEATURES}/{name}/data"
                        extents[key] = max(extents.get(key, 0), off + rows)
                    if "bounds" in rec:
                        key = f"/{VIDEOS}/bounds"
                        extents[key] = max(extents.get(key, 0), sum(rec["bounds"]))
            for name, rows in extents.items():
                if _chunks_past(f[name], rows, end):
                    return name
    except Exception as exc:  # noqa: BLE001 - any failure to read what was committed: not recoverable here
        return f"its structure ({' '.join(str(exc).split())[:120]})"
    return None


def recover_dead_writer(path: str | Path, lock: FileLock) -> None:
    """Clear a dead writer's flags (``lock``: ours, on this file); when it died extending the file (a
    full disk), extend it to the end its superblock states, provided nothing committed lies past the
    old end (else the file was cut: :class:`CacheError`, and its size is put back)."""
    clear_write_flags(path, lock)
    stated, size = end_of_file(path)
    if size >= stated:
        return
    os.truncate(path, stated)  # what the dead writer's last flush failed to do; the tail is unused
    past = committed_past(path, size)
    if past:
        os.truncate(path, size)
        raise CacheError(f"{truncation(path)} ({past} lies past its end)")


def detach(f) -> None:
    """After a failed write, point HDF5's descriptor of ``f`` at a scratch file in memory: HDF5 retries
    its failed flush when its objects are let go and at close (at exit a failure there crashes the
    interpreter), and that flush must not reach the cache, which stays as last committed."""
    try:
        fd = int(f.id.get_vfd_handle())
        scratch = os.memfd_create("featpipe-detached") if hasattr(os, "memfd_create") else os.open(os.devnull, os.O_RDWR)
        os.dup2(scratch, fd)
        os.close(scratch)
    except (OSError, RuntimeError, ValueError):
        pass
