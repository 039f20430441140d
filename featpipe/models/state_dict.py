"""Reading published torch state-dict files safely (``weights_only=True``) and checking their layout.

Shared by the extractors whose weights are plain torch state dicts (VGGish's torch port,
torchvision's ResNet). Every problem becomes one :class:`StateDictError` line naming the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn


class StateDictError(ValueError):
    """A file that is not a readable state dict of the expected layout (one line)."""


def _numpy_globals() -> list:
    """What unpickling numpy arrays needs (some published files, e.g. torchvggish's PCA, hold them)."""
    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed: list = [core._reconstruct, np.ndarray, np.dtype, (core._reconstruct, "numpy.core.multiarray._reconstruct")]
    return allowed + [type(np.dtype(t)) for t in ("f4", "f8")]


def read(path: str | Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict file, via ``torch.load(weights_only=True)`` (numpy arrays allowed).

    ``mmap`` maps the tensors instead of reading them (a cheap look at names and shapes); files
    in torch's legacy (pre-1.6) format cannot be mapped and are read whole.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            obj = None
            if mmap:
                try:
                    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError:  # legacy format: no mmap
                    obj = None
            if obj is None:
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StateDictError(f"{path} is not a readable torch state-dict file ({first[:160]})") from None
    if not isinstance(obj, dict):
        raise StateDictError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {str(k): torch.as_tensor(v) for k, v in obj.items()}


def checked(state: dict[str, torch.Tensor], want: dict[str, torch.Tensor], path: str | Path,
            layout: str) -> dict[str, torch.Tensor]:
    """``state`` restricted to the keys of ``want``, after checking every key and shape is there."""
    missing = sorted(set(want) - set(state))
    if missing:
        more = " ..." if len(missing) > 3 else ""
        raise StateDictError(f"{path} lacks {', '.join(missing[:3])}{more} (expected {layout})")
    for k, v in want.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise StateDictError(f"{path}: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)} ({layout})")
    return {k: state[k] for k in want}


def check_file(path: str | Path, build: Callable[[], nn.Module], layout: str) -> None:
    """Check ``path`` holds every tensor of ``build()`` with its shape; cheap (meta model, mmap)."""
    with torch.device("meta"):  # shapes only, no memory
        want = build().state_dict()
    checked(read(path, mmap=True), want, path, layout)


def load_into(model: nn.Module, path: str | Path, layout: str) -> nn.Module:
    """Load ``path`` into ``model`` (float32), strictly by the model's keys and shapes; eval mode."""
    want = model.state_dict()
    state = checked(read(path), want, path, layout)
    model.load_state_dict({k: v.to(want[k].dtype) for k, v in state.items()})
    return model.eval()
