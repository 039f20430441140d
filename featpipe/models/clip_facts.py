"""open_clip's published facts, read on the client without importing the ``open_clip`` package.

``import open_clip`` costs about 5 CPU-s (it imports torchvision, timm and ``torch._dynamo``), and
the client of ``featpipe extract`` needs none of that to plan a run: the workers build the model
through open_clip's own factory. What the client needs is data open_clip publishes:

- the model configs: the JSON files in the installed package's ``model_configs/`` folder (found
  with :func:`importlib.util.find_spec`, which does not import the package) and the folders or
  files of ``FEATPIPE_OPENCLIP_CONFIGS``, scanned as ``open_clip.add_model_config`` does;
- the pretrained tags: open_clip's own ``pretrained`` module (its table and functions), executed
  from the installed file under a private package name, so the package's ``__init__`` does not
  run (that module imports only ``constants``, ``version``, ``safetensors`` and ``huggingface_hub``);
- the preprocessing defaults of ``open_clip.transform.PreprocessCfg`` and the merge rule of
  ``merge_preprocess_dict`` (mirrored below; tests/test_clip_facts.py compares them with
  open_clip's for every installed config and tag, and each worker compares the model it built
  with what the client declared);
- the image tower's class and embedding width where the config alone says it (open_clip's
  ``_build_vision_tower`` dispatch); otherwise the caller builds the tower on ``meta``.

Where ``open_clip`` is already imported in this process (a worker, a test, the text encoder), its
own functions answer, so configs registered in-process and patched tags are seen.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
import re
import sys
import types
from pathlib import Path
from typing import Any

_PRIVATE = "_featpipe_open_clip_facts"  # the private package name open_clip's modules are run under
# open_clip.transform.PreprocessCfg's fields and defaults (mean/std from open_clip.constants)
_PREPROCESS_DEFAULTS = {
    "size": 224,
    "mode": "RGB",
    "mean": None,
    "std": None,
    "interpolation": "bicubic",
    "resize_mode": "shortest",
    "fill_color": 0,
}
_CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg")  # what open_clip requires of a model config file


def open_clip_loaded() -> bool:
    return "open_clip" in sys.modules


def _package_dir() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'open_clip'", name="open_clip")
    return Path(list(spec.submodule_search_locations)[0])


def _module(name: str) -> types.ModuleType:
    """open_clip's module ``name`` (``pretrained``, ``constants``): the imported one when open_clip is
    loaded, else the installed file run under :data:`_PRIVATE`."""
    if open_clip_loaded():
        return importlib.import_module(f"open_clip.{name}")
    if _PRIVATE not in sys.modules:
        pkg = types.ModuleType(_PRIVATE)
        pkg.__path__ = [str(_package_dir())]  # relative imports resolve here; open_clip/__init__ never runs
        sys.modules[_PRIVATE] = pkg
    return importlib.import_module(f"{_PRIVATE}.{name}")


def pretrained():
    """open_clip's ``pretrained`` module: ``get_pretrained_cfg``, ``list_pretrained_tags_by_model``,
    ``download_pretrained``."""
    return _module("pretrained")


def _natural_key(text: str) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", text.lower())]


def _configs() -> dict[str, dict]:
    """open_clip's registry as its rescan builds it: built-ins, then each registered path (a later
    file of the same name wins), only files holding embed_dim, vision_cfg and text_cfg."""
    paths = [_package_dir() / "model_configs"]
    paths += [Path(p) for p in os.environ.get("FEATPIPE_OPENCLIP_CONFIGS", "").split(os.pathsep) if p]
    found: dict[str, dict] = {}
    for p in paths:
        files = [p] if p.is_file() and p.suffix == ".json" else sorted(p.glob("*.json")) if p.is_dir() else []
        for f in files:
            with open(f, encoding="utf-8") as fh:
                cfg = json.load(fh)
            if all(k in cfg for k in _CONFIG_KEYS):
                found[f.stem] = cfg
    return dict(sorted(found.items(), key=lambda kv: _natural_key(kv[0])))


def _open_clip():
    from .clip_config import register_configs

    register_configs()
    return sys.modules["open_clip"]


def model_config(name: str) -> dict | None:
    """What ``open_clip.get_model_config(name)`` returns for a registered name (None when unknown)."""
    if open_clip_loaded():
        return _open_clip().get_model_config(name)
    return copy.deepcopy(_configs().get(name))


def model_names() -> list[str]:
    """``open_clip.list_models()``: every registered config name, in open_clip's order."""
    if open_clip_loaded():
        return _open_clip().list_models()
    return list(_configs())


def preprocess_defaults() -> dict[str, Any]:
    """``asdict(open_clip.transform.PreprocessCfg())``."""
    consts = _module("constants")
    return {**_PREPROCESS_DEFAULTS, "mean": consts.OPENAI_DATASET_MEAN, "std": consts.OPENAI_DATASET_STD}


def merge_preprocess(base: dict, overlay: dict | None) -> dict:
    """``open_clip.transform.merge_preprocess_dict``: the overlay's non-None PreprocessCfg fields over ``base``."""
    out = {k: v for k, v in base.items() if k in _PREPROCESS_DEFAULTS}
    out.update({k: v for k, v in (overlay or {}).items() if k in _PREPROCESS_DEFAULTS and v is not None})
    return out


def tower_from_config(model_cfg: dict) -> tuple[str, int] | None:
    """(tower class, embedding width) of ``model_cfg``'s image tower where the config alone says it.

    open_clip's ``_build_vision_tower`` makes a ``TimmModel`` when ``timm_model_name`` is set (its
    trunk's class is timm's to say), a ``ModifiedResNet`` when ``layers`` is a list, else a
    ``VisionTransformer``; both of the latter project to ``embed_dim``. A timm tower, an attentional
    pooler (CoCa) or a multimodal config gets None: the caller builds the tower on ``meta``.
    """
    vision = model_cfg.get("vision_cfg") or {}
    if vision.get("timm_model_name") or vision.get("attentional_pool") or "multimodal_cfg" in model_cfg:
        return None
    family = "ModifiedResNet" if isinstance(vision.get("layers"), (list, tuple)) else "VisionTransformer"
    return family, int(model_cfg["embed_dim"])
