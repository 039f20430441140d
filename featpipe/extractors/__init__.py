"""Extractor registry: extractors are found by the name before the first ``:`` of a spec.

Adding an extractor is one new module that subclasses :class:`Extractor` and decorates it
with :func:`register`. Built-in modules are listed in ``_BUILTIN``; third-party ones register
through the ``featpipe.extractors`` entry-point group or the ``FEATPIPE_PLUGINS`` environment
variable (comma-separated module names, imported in the client and in every worker).
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
    "build",
    "register",
]

_REGISTRY: dict[str, type[Extractor]] = {}
_BUILTIN = ("priors", "motion", "clip", "openl3", "clap", "tome", "rhythm", "vggish", "resnet18_14x14", "mert", "ast",
            "hf_audio",
            "r2plus1d_18")
_loaded = False
_PLUGINS: set[str] = set()  # FEATPIPE_PLUGINS modules imported so far


def register(cls: type[Extractor]) -> type[Extractor]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def _import_builtin(name: str) -> None:
    try:
        importlib.import_module(f"{__name__}.{name}")
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
    for mod in _BUILTIN:
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


def build(spec: str, options: ExtractOptions | None = None) -> Extractor:
    """Build the extractor for ``spec`` (cheap: the model is loaded later by ``load``)."""
    name, args = parse_spec(spec)
    module = name.replace("-", "_")  # spec `resnet18-14x14` lives in module resnet18_14x14
    if module in _BUILTIN:  # import only what is used: workers need not load torch for `priors`
        _import_builtin(module)
    _load_plugins()
    if name not in _REGISTRY:
        _load_all()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ExtractorError(f"unknown extractor {name!r} in spec {spec!r}; known: {known}")
    return _REGISTRY[name](args, options or ExtractOptions())
