"""Clear the HDF5 superblock's write flags after a writer was killed.

HDF5 (superblock versions 2 and 3) records "open for write / SWMR write" in the superblock's
file-consistency flags and refuses to open such a file for writing again ("may use h5clear").
A SWMR writer that dies leaves a consistent file (SWMR orders its metadata flushes for readers)
with those flags set. featpipe's writer holds its own lock file, so when it finds the flags set
it knows the previous writer is dead and clears them, as ``h5clear -s`` does: set the flags
byte to 0 and recompute the superblock checksum (Jenkins lookup3, as the HDF5 file-format
specification prescribes). Nothing else in the file is touched.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

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


def clear_write_flags(path: str | Path) -> bool:
    """Clear the write flags of a file whose writer died; True when something was cleared.

    Only call this while holding the cache's writer lock: it asserts no writer is alive.
    """
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
