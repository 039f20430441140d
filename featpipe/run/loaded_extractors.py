"""Extractors built and loaded once per process, not once per video.

A worker process keeps every extractor it has loaded, keyed by spec and options, for the rest of
its life; a restarted worker starts empty and reloads on its next video, unless it was forked
from a warm fork server that loaded the run's extractors already (:mod:`featpipe.run.preload`).
"""

from __future__ import annotations

from .. import extractors
from ..contracts import ExtractOptions
from ..extractors import Extractor, resolve_device

_EXTRACTORS: dict[tuple[str, ExtractOptions], Extractor] = {}


def get_extractor(spec: str, options: ExtractOptions) -> Extractor:
    """The loaded extractor for ``spec`` in this process (built and loaded on first use)."""
    key = (spec, options)
    if key not in _EXTRACTORS:
        ext = extractors.build(spec, options)
        ext.load(resolve_device(options.device))
        _EXTRACTORS[key] = ext
    return _EXTRACTORS[key]
