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
from safetensors import safe_open
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


MAX_META_BYTES = 64 << 20
"""A ``head.json`` past this size is not one featpipe wrote (a head's vocabulary is kilobytes)."""


def read_meta(path: str | Path) -> dict[str, Any]:
    """``head.json`` as a dict, format and version checked; anything else is a one-line :class:`HeadError`.

    The fields are checked against the weights by :mod:`.restore` before anything is built."""
    path = Path(path)
    meta_path, w_path = path / META, path / WEIGHTS
    if not meta_path.is_file() or not w_path.is_file():
        raise HeadError(f"{path} is not a featpipe head (expected {META} and {WEIGHTS} in a directory)")
    try:
        if meta_path.stat().st_size > MAX_META_BYTES:
            raise HeadError(f"{meta_path}: {meta_path.stat().st_size} bytes, not a featpipe head description")
        meta = json.loads(meta_path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise HeadError(f"{meta_path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    except (ValueError, RecursionError) as exc:  # bad JSON, 4,300-digit numbers, nesting deeper than Python's stack
        raise HeadError(f"{meta_path}: not valid JSON ({str(exc).splitlines()[0][:100] or type(exc).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise HeadError(f"{meta_path} is not a featpipe head description")
    version = meta.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise HeadError(f"{meta_path}: version must be an integer, not {version!r:.40}")
    if version > VERSION:
        raise HeadError(f"{path} was written by a newer featpipe (head format {version})")
    return meta


def weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The tensors' shapes from ``weights.safetensors``' header, without reading the tensors."""
    w_path = Path(path) / WEIGHTS
    try:
        with safe_open(str(w_path), framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own errors for any damage
        raise HeadError(f"{w_path}: not a readable safetensors file ({str(exc).splitlines()[0][:100]})") from None


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``weights.safetensors`` (call :func:`weight_shapes` and check them first)."""
    w_path = Path(path) / WEIGHTS
    try:
        return load_file(str(w_path))
    except Exception as exc:  # noqa: BLE001 - as above
        raise HeadError(f"{w_path}: not a readable safetensors file ({str(exc).splitlines()[0][:100]})") from None


def load(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``head.json`` and the tensors, unchecked against each other (:mod:`.restore` checks them)."""
    meta = read_meta(path)
    weight_shapes(path)
    return meta, load_tensors(path)


def remove(path: str | Path) -> None:
    """Delete a checkpoint subdirectory (only if it is one)."""
    path = Path(path)
    if (path / META).is_file():
        shutil.rmtree(path)
