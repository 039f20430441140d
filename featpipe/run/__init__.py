"""The extraction run (``featpipe extract``): videos in, complete records committed to the cache.

On the client: :mod:`.config` (``ExtractConfig``: every default), :mod:`.inputs` (files -> video
ids), :mod:`.plan` (build and check extractors, decide what each video still lacks, the report),
:mod:`.cluster` (the Dask client; local workers forked warm, :mod:`.preload`), :mod:`.dispatch`
(submit, commit through the one cache writer, resubmit or fail as :mod:`.retry` says; removes
spool files, :mod:`.spool`).

On a worker: :mod:`.worker` (the Dask tasks) runs :mod:`.extract_video` (one video: decode once,
every extractor per chunk, :mod:`.prefetch` one chunk ahead, the beat timeline of
:mod:`.beat_timeline`), with extractors loaded once per process (:mod:`.loaded_extractors`), and
writes rows to spool files the client's writer copies.

Entry points: :func:`run_extract` (what the CLI calls) and :func:`process_video` (one video,
no Dask: tests and benchmarks). Imported lazily so that a worker importing
``featpipe.run.worker`` does not import the client's side.
"""

from __future__ import annotations

__all__ = ["ExtractConfig", "PipelineError", "RunSummary", "VideoJob", "VideoResult", "process_video", "run_extract"]

_HOME = {
    "ExtractConfig": "config",
    "PipelineError": "config",
    "RunSummary": "config",
    "run_extract": "plan",
    "VideoJob": "extract_video",
    "VideoResult": "extract_video",
    "process_video": "extract_video",
}


def __getattr__(name: str):
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(name)
