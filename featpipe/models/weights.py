"""Weight files shared by all extractors: where they live, how they are found and identified.

Resolution order in :func:`find_weights`:

1. an explicit path (``--weights PATH``: a file, or a folder holding the file);
2. an extractor-specific environment variable naming such a path, when the extractor has one;
3. the weights folder: ``$FEATPIPE_WEIGHTS``, by default ``~/.cache/featpipe/weights``;
4. a download from the extractor's official URL on first use, into the weights folder
   (temp file + rename, so an interrupted download never leaves a half file behind).
   ``FEATPIPE_NO_DOWNLOAD=1`` turns downloads off.

When all of these fail, :class:`~featpipe.extractors.WeightsError` is raised with one line that
names the file, the spec, and how to provide the file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import socket
import shutil
import tempfile
import urllib.request
from pathlib import Path

from ..contracts import WeightsError

log = logging.getLogger(__name__)

ENV_DIR = "FEATPIPE_WEIGHTS"
ENV_NO_DOWNLOAD = "FEATPIPE_NO_DOWNLOAD"
DEFAULT_DIR = Path("~/.cache/featpipe/weights")
_HASH_MEMO = "sha256-memo.json"
_DOWNLOAD_TIMEOUT_S = 30.0


def weights_dir() -> Path:
    """The folder weight files are looked for and downloaded into (not created here)."""
    env = os.environ.get(ENV_DIR, "").strip()
    return Path(env).expanduser() if env else DEFAULT_DIR.expanduser()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file, memoised by (path, size, mtime) in the weights folder.

    The memo is a small JSON file in :func:`weights_dir`; it lets a 1 GB checkpoint be hashed
    once rather than on every run. An unreadable or unwritable memo only costs a re-hash.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = str(p)
    stamp = [st.st_size, st.st_mtime_ns]
    memo_path = weights_dir() / _HASH_MEMO
    memo = _read_memo(memo_path)
    hit = memo.get(key)
    if isinstance(hit, dict) and hit.get("stamp") == stamp and isinstance(hit.get("sha256"), str):
        return hit["sha256"]

    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()

    memo = _read_memo(memo_path)  # re-read: another process may have added entries meanwhile
    memo[key] = {"stamp": stamp, "sha256": digest}
    try:
        _atomic_write_text(memo_path, json.dumps(memo, indent=0, sort_keys=True))
    except OSError as exc:  # read-only folder: hashing still works, just not memoised
        log.debug("sha256 memo not written to %s: %s", memo_path, exc)
    return digest


def find_weights(
    filename: str,
    explicit: str | os.PathLike[str] | None = None,
    env_var: str | None = None,
    url: str | None = None,
    spec: str = "",
    also: tuple[Path, ...] = (),
) -> Path:
    """Path of the weight file ``filename``; see the module docstring for the search order.

    ``url`` may end in ``.gz`` when ``filename`` does not: the download is then decompressed
    on the fly (the official OpenL3 files are published gzipped). ``spec`` only improves the
    error message. ``also``: further folders searched after the weights folder, before any
    download (e.g. :func:`torch_hub_checkpoints`, where torch's own loaders keep the file).
    """
    what = f"{spec} needs weight file {filename}" if spec else f"weight file {filename} is needed"
    folder = weights_dir()

    if explicit:
        found = _lookup(Path(explicit).expanduser(), filename)
        if found is None:
            raise WeightsError(f"{what}, but --weights {explicit} is neither that file nor a folder holding it")
        return found

    if env_var and os.environ.get(env_var, "").strip():
        value = os.environ[env_var].strip()
        found = _lookup(Path(value).expanduser(), filename)
        if found is None:
            raise WeightsError(f"{what}, but {env_var}={value} is neither that file nor a folder holding it")
        return found

    candidate = folder / filename
    if candidate.is_file():
        return candidate
    for extra in also:
        if (extra / filename).is_file():
            return extra / filename

    why = "not found"
    if url and os.environ.get(ENV_NO_DOWNLOAD, "").strip() not in ("", "0"):
        why = f"not found and downloads are off ({ENV_NO_DOWNLOAD})"
    elif url:
        try:
            return _download(url, candidate)
        except (OSError, ValueError, EOFError) as exc:  # URLError is an OSError; bad gzip is OSError/EOFError
            why = f"not found and the download failed ({_one_line(exc)})"

    how = f"pass --weights PATH or put it in {folder} (env {ENV_DIR}"
    how += f" or {env_var})" if env_var else ")"
    how += "".join(f" or {extra}" for extra in also)
    if url:
        gz = " and gunzip it" if url.endswith(".gz") and not filename.endswith(".gz") else ""
        how += f"; get it from {url}{gz}"
    raise WeightsError(f"{what}: {why}; {how}")


def _lookup(path: Path, filename: str) -> Path | None:
    if path.is_file():
        return path
    if path.is_dir() and (path / filename).is_file():
        return path / filename
    return None


def _download(url: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.warning("downloading %s -> %s", url, dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
            src = resp
            if url.endswith(".gz") and dest.suffix != ".gz":
                src = gzip.GzipFile(fileobj=resp)
            shutil.copyfileobj(src, out, length=1 << 20)
        os.replace(tmp, dest)  # atomic: readers see either no file or the whole file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _read_memo(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def online(host: str = "huggingface.co") -> bool:
    """Whether downloads may be tried: not switched off, and the host's name resolves.

    A DNS lookup fails at once on an offline machine, where a download would retry for a minute.
    ``HF_HUB_OFFLINE=1`` and ``FEATPIPE_NO_DOWNLOAD=1`` switch downloads off.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get(ENV_NO_DOWNLOAD, "0") not in ("", "0"):
        return False
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def torch_hub_checkpoints() -> Path:
    """``torch.hub.get_dir()/checkpoints``: where torchvision and ``torch.hub`` keep downloaded weights."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"
