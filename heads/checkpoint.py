"""Head checkpoints: a directory with ``head.json`` and ``weights.safetensors``. No pickle.

``head.json`` holds everything needed to rebuild and check the head: format, task, model kind,
constructor arguments, hyperparameters, answer vocabulary or labels, question encoding, the
features with their cache provenance, and the training history. ``weights.safetensors`` holds
the tensors (model parameters and buffers, including the standardisation statistics; for the
linear probe: ``coef``, ``intercept``, ``classes``, ``mean``, ``std``). An AVQA head keeps its
question-only baseline in the ``baseline/`` subdirectory, in the same format.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .data import HeadError

FORMAT = "featpipe-head"
VERSION = 1
META = "head.json"
WEIGHTS = "weights.safetensors"


def save(path: str | Path, meta: dict[str, Any], tensors: dict[str, Any]) -> Path:
    """Write a checkpoint directory (replacing the two files if they exist)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise HeadError(f"{path} exists and is not a directory; a head is saved as a directory")
    path.mkdir(parents=True, exist_ok=True)
    flat = {k: (torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v.detach().cpu())
            .contiguous().clone() for k, v in tensors.items()}
    save_file(flat, str(path / WEIGHTS))
    (path / META).write_text(json.dumps({"format": FORMAT, "version": VERSION, **meta}, indent=1, default=_json))
    return path


def _json(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def load(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a checkpoint directory; anything else raises :class:`HeadError` with a one-line reason."""
    path = Path(path)
    meta_path, w_path = path / META, path / WEIGHTS
    if not meta_path.is_file() or not w_path.is_file():
        raise HeadError(f"{path} is not a featpipe head (expected {META} and {WEIGHTS} in a directory)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise HeadError(f"{meta_path}: not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise HeadError(f"{meta_path} is not a featpipe head description")
    if meta.get("version", 0) > VERSION:
        raise HeadError(f"{path} was written by a newer featpipe (head format {meta['version']})")
    return meta, load_file(str(w_path))


def remove(path: str | Path) -> None:
    """Delete a checkpoint subdirectory (only if it is one)."""
    path = Path(path)
    if (path / META).is_file():
        shutil.rmtree(path)
