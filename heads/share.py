"""How a study's arrays reach the Dask workers, once for all arms and seeds.

Every feature is read from the cache once, in the client (:func:`.arms.load_inputs`). Then:

- on a LocalCluster (the default), each feature's array and mask are written to ``.npy`` files in
  a temporary folder inside the study's output, the client drops its copies, and every worker
  memory-maps the files read-only: one copy in the operating system's page cache, shared by the
  client and all workers (and backed by the file, so it is never swapped);
- on a running cluster (``--scheduler``), whose workers may be other machines, each array is
  scattered once, as its own piece of data: arms naming the same feature share it on a worker.

On a worker, :func:`arm_arrays` builds an arm's inputs from those (views; a concatenation only for
a stream of several features, :func:`.arms.assemble`) and keeps the last arm's, so its seeds on
that worker build nothing again; it keeps one arm at a time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .arms import ArmSpec, Inputs, assemble, question_arrays

_PREFIX = ".arrays-"
_MEMO: dict[tuple[str, str], dict] = {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale(out: Path) -> None:
    """Remove array folders left in ``out`` by a study that was killed (its process is gone)."""
    for d in out.glob(f"{_PREFIX}*"):
        pid = d.name[len(_PREFIX) :].split("-")[0]
        if d.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def array_folder(out: Path) -> tempfile.TemporaryDirectory:
    out.mkdir(parents=True, exist_ok=True)
    clear_stale(out)
    return tempfile.TemporaryDirectory(prefix=f"{_PREFIX}{os.getpid()}-", dir=out)


def share(client: Any, inputs: Inputs, folder: Path | None) -> tuple[dict, Any]:
    """``(features, questions)`` to give the runs: with ``folder``, paths of memory-mapped ``.npy``
    files (and ``inputs.segs`` is emptied: the client keeps no copy); else futures of scattered arrays."""
    questions = client.scatter([question_arrays(inputs)], hash=False)[0]
    feats: dict[str, tuple] = {}
    for i, (name, (x, mask)) in enumerate(inputs.segs.items()):
        if folder is None:
            feats[name] = tuple(client.scatter([x, mask], hash=False))
        else:
            paths = (folder / f"{i}-x.npy", folder / f"{i}-mask.npy")
            np.save(paths[0], x)
            np.save(paths[1], mask)
            feats[name] = tuple(str(p) for p in paths)
    if folder is not None:
        inputs.segs = {}
    return feats, questions


def _open(x: Any) -> np.ndarray:
    return np.load(x, mmap_mode="r") if isinstance(x, str) else x


def arm_arrays(token: str, arm: str, spec: ArmSpec, feats: dict, questions: dict) -> dict:
    """The arm's per-split arrays on this worker (kept for the arm's next seed; one arm at a time)."""
    key = (token, arm)
    if key not in _MEMO:
        _MEMO.clear()  # before building the next arm: never two arms' concatenations at once
        opened = {n: tuple(_open(p) for p in feats[n]) for n in spec.features}
        _MEMO[key] = assemble(spec, opened, questions)
    return _MEMO[key]


def forget() -> None:
    """Drop the kept arm (run on every worker of a long-lived cluster when a study ends)."""
    _MEMO.clear()
