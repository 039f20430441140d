"""Extractor registry: extractors are found by the name before the first ``:`` of a spec.

Adding an extractor is one new module that subclasses :class:`Extractor` and decorates it
with :func:`register`. Built-in modules are listed in :data:`BUILTIN` (spec name -> module, the one
place that says where a built-in lives); third-party ones register through the
``featpipe.extractors`` entry-point group or the ``FEATPIPE_PLUGINS`` environment variable
(comma-separated module names, imported in the client and in every worker).
"""

from __future__ import annotations

import importlib
import os
from importlib import metadata

from .base import (
    AUDIO_RATE,
    Chunk,
    ExtractOptions,
    Extractor,
    ExtractorError,
    MediaNeeds,
    Option,
    OutputSpec,
    WeightsError,
)

__all__ = [
    "AUDIO_RATE",
    "Chunk",
    "ExtractOptions",
    "Extractor",
    "ExtractorError",
    "MediaNeeds",
    "Option",
    "OutputSpec",
    "WeightsError",
    "available",
    "BUILTIN",
    "build",
    "extractor_class",
    "register",
    "resolve_device",
]

_REGISTRY: dict[str, type[Extractor]] = {}
BUILTIN: dict[str, str] = {
    "priors": "priors", "motion": "motion", "clip": "clip", "openl3": "openl3", "clap": "clap", "tome": "tome",
    "tome14": "tome", "rhythm": "rhythm", "vggish": "vggish", "resnet18-14x14": "resnet18_14x14",
    "r2plus1d-18": "r2plus1d_18", "ast": "ast", "mert": "mert", "hf-audio": "hf_audio",
    "beats": "beats",
}
"""Spec name of each built-in extractor -> its module under ``featpipe/extractors/``, imported only when
a run names it (workers need not import torch for ``priors``)."""
_loaded = False
_PLUGINS: set[str] = set()  # FEATPIPE_PLUGINS modules imported so far


def register(cls: type[Extractor]) -> type[Extractor]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def _import_builtin(module: str) -> None:
    try:
        importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as exc:  # a built-in whose optional dependency is absent
        if not (exc.name and exc.name.startswith(__name__)):
            raise


def _load_plugins() -> None:
    """Third-party extractors: entry points (once) and FEATPIPE_PLUGINS (each module once; the
    variable is read on every call, so a value set after the first build still counts)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for ep in metadata.entry_points(group="featpipe.extractors"):
            ep.load()
    for mod in filter(None, (m.strip() for m in os.environ.get("FEATPIPE_PLUGINS", "").split(","))):
        if mod not in _PLUGINS:
            importlib.import_module(mod)
            _PLUGINS.add(mod)


def _load_all() -> None:
    for mod in dict.fromkeys(BUILTIN.values()):
        _import_builtin(mod)
    _load_plugins()


def available() -> dict[str, type[Extractor]]:
    """All registered extractors by name."""
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"clip:ViT-B-32/openai"`` into ``("clip", "ViT-B-32/openai")``."""
    name, _, args = spec.strip().partition(":")
    return name.strip().lower(), args.strip()


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` where torch sees a GPU, else ``cpu``; other names pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _find(name: str) -> type[Extractor] | None:
    if name in BUILTIN:  # import only what is used
        _import_builtin(BUILTIN[name])
    _load_plugins()
    if name not in _REGISTRY:
        _load_all()
    return _REGISTRY.get(name)


def extractor_class(name: str) -> type[Extractor]:
    """The registered class of extractor ``name`` (a spec's name part), importing only its module when
    it is a built-in; every module (built-in and plugin) only when the name is unknown to them."""
    cls = _find(name.strip().lower())
    if cls is None:
        raise ExtractorError(f"unknown extractor {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return cls


def build(spec: str, options: ExtractOptions | None = None) -> Extractor:
    """Build the extractor for ``spec`` (cheap: the model is loaded later by ``load``)."""
    name, args = parse_spec(spec)
    cls = _find(name)
    if cls is None:
        raise ExtractorError(f"unknown extractor {name!r} in spec {spec!r}; known: {', '.join(sorted(_REGISTRY))}")
    return cls(args, options or ExtractOptions())
