"""What the client sends to Dask workers: the task of one video, and the pre-flight check.

:func:`run_video` is :func:`featpipe.run.extract_video.process_video` inside the run's fault bounds: it
counts its try first (:mod:`featpipe.run.retry` says how a video is tried), then announces "start"
and, once probed, the duration, which the client's watchdog turns into a time limit. Only a
crash of the process itself escapes a task; Dask then runs the video again elsewhere, and the
try counter stops it after the bound, whatever the scheduler's own setting. With a spool target the
task streams the video's rows to files in the client's ``<cache>.spool/`` (:mod:`featpipe.run.spool`)
and returns references; the pre-flight check tells whether this worker can.
"""

from __future__ import annotations

import os
import sys

from .. import __version__, extractors
from ..contracts import ExtractOptions
from .loaded_extractors import get_extractor
from .spool import SpoolSink, SpoolTarget, write_check
from .retry import TryCounter
from .extract_video import VideoJob, VideoResult, one_line, process_video


def run_video(job: VideoJob, counter: TryCounter | None = None, spool: SpoolTarget | None = None) -> VideoResult:
    """The task the client submits for one video (``tries`` None: no counting, no announcements;
    ``spool`` None: the rows come back in memory).

    Outside a Dask worker (a test calling it directly) it is just :func:`process_video`.
    """
    from distributed import get_worker

    sink = SpoolSink(spool) if spool is not None else None  # one per try: its files are this try's
    try:
        worker = get_worker()
        key = worker.get_current_task()
    except ValueError:  # not on a Dask worker
        return process_video(job, sink=sink)
    use_thread_budget()
    if counter is None:
        return process_video(job, sink=sink)
    refused = counter.refused()
    if refused:  # the earlier tries all killed their worker: do not kill one more
        return VideoResult(job.video_id, job.path, ok=False, reason=refused)

    def announce(stage: str, **extra) -> None:
        if counter.topic:
            worker.log_event(counter.topic, {"key": key, "stage": stage, "worker": worker.address, **extra})

    announce("start")
    horizon = job.params.max_seconds  # the decode never goes past it, so neither does the time limit
    return process_video(job, on_probe=lambda info: announce(
        "probed", duration=min(info.duration, horizon) if horizon else info.duration), sink=sink)


def use_thread_budget() -> None:
    """On a worker: torch's intra-op threads follow the worker's ``OMP_NUM_THREADS`` (the cluster's budget).

    torch may have been imported before that variable was set (a fork server preloads it), and a
    plugin may have changed it; setting it again is cheap.
    """
    threads = os.environ.get("OMP_NUM_THREADS", "")
    torch = sys.modules.get("torch")
    if torch is not None and threads.isdigit() and int(threads) > 0 and torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))


def load_check(specs: tuple[str, ...], options: ExtractOptions) -> str | None:
    """Run as a task on each worker before any video: load every extractor as its videos will
    (kept by :mod:`featpipe.loaded`, so the first video does not load them again). None, or why
    one cannot be loaded (a checkpoint that exists but is damaged): the run stops once, not
    video by video. A task, not ``Client.run``: loading a model takes seconds, which would
    block the worker's event loop."""
    use_thread_budget()
    for spec in specs:
        try:
            get_extractor(spec, options)
        except Exception as exc:  # noqa: BLE001 - reported to the client as one line
            return f"cannot load {spec}: {one_line(exc)}"
    return None


def worker_check(specs: tuple[str, ...], options: ExtractOptions, sample: str | None,
                 spool: str | None = None) -> tuple[str, str | None, str | None]:
    """Run on every worker before a run: (featpipe version, None or why this worker cannot work, the
    name of the check file it wrote into the ``spool`` folder or None when it cannot write there)."""
    check = write_check(spool) if spool is not None else None
    if sample is not None and not os.access(sample, os.R_OK):
        return __version__, f"cannot read {sample} (workers need the same video paths as the client)", check
    use_thread_budget()
    try:
        for spec in specs:
            extractors.build(spec, options)
    except Exception as exc:  # noqa: BLE001 - reported to the client as one line
        return __version__, f"{one_line(exc)} (workers need the client's FEATPIPE_* environment)", check
    return __version__, None, check
