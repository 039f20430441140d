"""An extraction run's settings (:class:`ExtractConfig`, the one home of every default of
``featpipe extract``), what it reports back (:class:`RunSummary`), and how it fails as a whole
(:class:`PipelineError`).

The command line takes its defaults from here; the decode defaults are
:class:`featpipe.decode.DecodeParams`'s, the extractor defaults :class:`featpipe.contracts.ExtractOptions`'s,
and the tries and time limits :class:`featpipe.run.retry.TryPolicy`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..contracts import ExtractOptions
from ..decode import DecodeParams
from .beat_timeline import Timeline
from .retry import TryPolicy

LOCAL_WORKERS = 2
"""Worker processes of the local cluster when no scheduler is given (``--workers``)."""
WORKER_WAIT = 60.0
"""Seconds to wait for a first worker to join an external scheduler."""


@dataclass(frozen=True)
class FeatureNames:
    """The name each output is stored under: its own, or the ``--name`` variant's (the one place
    that applies the renaming; :func:`featpipe.run.plan.variant_names` builds it)."""

    renamed: dict[str, str] = field(default_factory=dict)  # output name -> feature name

    def __call__(self, output: str) -> str:
        return self.renamed.get(output, output)

    def keyed(self, by_output: dict) -> dict:
        """``by_output`` with its keys (output names) as stored."""
        return {self(k): v for k, v in by_output.items()}


class PipelineError(Exception):
    """The run as a whole cannot go on (bad spec, missing weights, lost scheduler)."""


@dataclass
class ExtractConfig:
    """What to extract, from which videos, into which cache, on which cluster."""

    inputs: list[str]
    cache: Path
    visual: tuple[str, ...] = ()
    audio: tuple[str, ...] = ()
    params: DecodeParams = field(default_factory=DecodeParams)
    options: ExtractOptions = field(default_factory=ExtractOptions)
    workers: int = LOCAL_WORKERS
    scheduler: str | None = None
    dtype: str | None = None  # None: each output's own dtype (float16 for embeddings)
    max_in_flight: int | None = None  # None: two per worker thread
    try_policy: TryPolicy = field(default_factory=TryPolicy)  # worker deaths tolerated, per-video time limit
    worker_wait: float = WORKER_WAIT
    names: tuple[tuple[str, str], ...] = ()  # (spec or extractor name, or "" for the only one; feature name)
    timeline: Timeline = field(default_factory=Timeline)  # fixed seconds, or beats[:N] (featpipe.run.beat_timeline)
    stream: bool = True  # rows stream to <cache>.spool/ chunk by chunk (featpipe.run.spool); False: in memory
    tls_ca_file: str | None = None  # tls:// scheduler: CA, certificate, key (run.cluster.security)
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        # The command line checks these with click's types; library callers get the same bounds.
        if self.workers < 1:
            raise PipelineError(f"workers must be at least 1, not {self.workers}")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise PipelineError(f"max_in_flight must be at least 1, not {self.max_in_flight}")


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (video_id, path, reason)
    segments: int = 0
    seconds: float = 0.0
    report: Path | None = None
    dashboard: str | None = None
    peak_in_flight: int = 0  # most videos submitted and not yet committed at once
    streamed: bool | None = None  # whether rows came through the spool (None: no video was run)

    @property
    def ok(self) -> bool:
        return not self.failed
