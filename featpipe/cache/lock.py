"""One writer per cache *file*: an exclusive ``flock`` on the ``.h5`` itself.

A lock on ``<path>.lock`` only guards one spelling of the path: a second run reaching the same
file through a symlink, a hard link, a bind mount or ``dir/../cache.h5`` took another lock file
and wrote into the same HDF5 file at once. ``flock`` locks belong to the file (the inode), so
every name of the file meets the same lock. HDF5's own file locking stays off (``locking=False``):
featpipe's readers never lock, and the writer's lock is this one.

Two rules follow from ``flock``'s semantics: the lock is held on a descriptor of our own, which
HDF5 opening and closing its own descriptors never releases; and a lock taken by the same process
through another descriptor conflicts too, so code that holds the lock passes it on
(:func:`featpipe.cache.recover.clear_write_flags` takes it) instead of locking again.
On NFS, Linux maps ``flock`` to a whole-file POSIX lock, which protects against other machines
but not against a second writer inside the same process.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path


class LockError(OSError):
    """Another process writes the file (or the file cannot be locked); the message is one line."""


class FileLock:
    """An exclusive, non-blocking ``flock`` on the file at ``path`` (created, empty, when absent).

    ``exclusive_create`` refuses a file that exists (``merge`` placing its output). The lock is
    released by :meth:`release` (or when the process dies: a killed writer never leaves it held).
    """

    def __init__(self, path: str | Path, exclusive_create: bool = False) -> None:
        self.path = Path(path)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        if exclusive_create:
            flags |= os.O_EXCL
        try:
            self.fd = os.open(self.path, flags, 0o666)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise
            raise LockError(f"{self.path} cannot be opened for writing ({exc.strerror})") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            self.fd = -1
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockError(
                    f"{self.path} is being written by another featpipe process "
                    "(perhaps through another name of the same file)"
                ) from None
            raise LockError(f"{self.path} cannot be locked ({exc.strerror})") from None
        st = os.fstat(self.fd)
        self.inode = (st.st_dev, st.st_ino)

    def size(self) -> int:
        """The locked file's size now."""
        return os.fstat(self.fd).st_size

    def still_named(self) -> bool:
        """Whether ``path`` still names the locked file (nothing was renamed over it meanwhile)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.inode

    def release(self) -> None:
        if self.fd >= 0:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = -1

    def __enter__(self) -> "FileLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def locked_elsewhere(path: str | Path) -> bool:
    """Whether some descriptor (another process's, or another of ours) holds the file's lock now."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we just took
    return False
