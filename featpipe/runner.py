"""Running an extraction for the command line: progress bar, summary, exit code."""

from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm

from .cache import CacheError
from .cluster import TIMEOUT_PER_SECOND, VIDEO_TIMEOUT
from .decode import DecodeParams
from .extractors.base import ExtractOptions, ExtractorError
from .inputs import InputError
from .pipeline import ExtractConfig, PipelineError, RunSummary, run_extract


def _parse_extra(extra: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        pairs.append((key.strip(), value.strip()))
    return tuple(sorted(pairs))


def print_summary(summary: RunSummary) -> None:
    rate = len(summary.done) / summary.seconds if summary.seconds else 0.0
    click.echo(f"done {len(summary.done)}, skipped {len(summary.skipped)}, failed {len(summary.failed)} "
               f"in {summary.seconds:.1f} s ({rate:.2f} videos/s, {summary.segments} segments)", err=True)
    for vid, path, reason in summary.failed:
        click.echo(f"  failed {vid} ({path}): {reason}", err=True)
    click.echo(f"report: {summary.report}", err=True)


def run(*, inputs: list[str], cache: Path, visual, audio, fps: float, max_seconds, pad: str, workers: int,
        scheduler, device: str, batch_size: int, tokens: bool, weights, dtype, extra, quiet: bool,
        video_timeout: float = VIDEO_TIMEOUT, video_timeout_scale: float = TIMEOUT_PER_SECOND,
        max_in_flight: int | None = None, decode_options: dict | None = None) -> int:
    """Run ``featpipe extract``; returns the exit code (0 ok, 1 some videos failed, 2 setup error).

    A lost scheduler also exits 2, with a message; what was committed stays and a rerun resumes.
    """
    if fps <= 0:
        raise click.BadParameter("must be positive", param_hint="--fps")
    if video_timeout < 0 or video_timeout_scale < 0:
        raise click.BadParameter("must be >= 0 (0 turns the time limit off)", param_hint="--video-timeout")
    if max_in_flight is not None and max_in_flight < 1:
        raise click.BadParameter("must be at least 1", param_hint="--max-in-flight")
    options = ExtractOptions(device=device, batch_size=batch_size, tokens=tokens, weights=weights,
                             extra=_parse_extra(extra))
    cfg = ExtractConfig(inputs=inputs, cache=cache, visual=tuple(visual), audio=tuple(audio),
                        params=DecodeParams(fps=fps, max_seconds=max_seconds, pad=pad, **(decode_options or {})),
                        options=options,
                        workers=workers, scheduler=scheduler, dtype=dtype, max_in_flight=max_in_flight,
                        video_timeout=video_timeout or None, timeout_per_second=video_timeout_scale)
    bar: dict = {}

    def on_start(total: int, todo: int, dashboard: str | None) -> None:
        if dashboard:
            click.echo(f"dask dashboard: {dashboard}", err=True)
        bar["tqdm"] = tqdm(total=total, initial=total - todo, unit="video", disable=quiet, dynamic_ncols=True,
                           desc="extract")
        bar["segments"] = 0
        bar["failed"] = 0

    def on_progress(kind: str, result) -> None:
        t = bar.get("tqdm")
        if t is None or kind == "skipped":
            return
        bar["segments"] += result.segments if result is not None else 0
        bar["failed"] += kind == "failed"
        t.update(1)
        t.set_postfix(segments=bar["segments"], failed=bar["failed"], refresh=False)

    try:
        summary = run_extract(cfg, on_progress=on_progress, on_start=on_start)
    except (ExtractorError, CacheError, InputError, PipelineError) as exc:
        click.echo(f"featpipe: error: {exc}", err=True)
        return 2
    finally:
        if "tqdm" in bar:
            bar["tqdm"].close()
    print_summary(summary)
    return 0 if summary.ok else 1
