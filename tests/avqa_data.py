"""The real MUSIC-AVQA val/test question files shipped in tests/data/music-avqa (see its README).

They are stored gzip-compressed; :func:`real_file` decompresses one, once per test process, into
a temporary folder removed at exit, and returns the path of the plain JSON file that
``featpipe.avqa.load_questions`` and the CLI read.
"""

from __future__ import annotations

import atexit
import functools
import gzip
import shutil
import tempfile
from pathlib import Path

DATA = Path(__file__).parent / "data" / "music-avqa"
NAMES = ("avqa-val.json", "avqa-test.json")


@functools.cache
def _folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="featpipe-avqa-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def real_file(name: str) -> Path:
    """The decompressed copy of ``tests/data/music-avqa/<name>.gz`` (``name`` in :data:`NAMES`)."""
    if name not in NAMES:
        raise ValueError(f"no real MUSIC-AVQA file {name!r} in {DATA}; have {', '.join(NAMES)}")
    out = _folder() / name
    out.write_bytes(gzip.decompress((DATA / f"{name}.gz").read_bytes()))
    return out
