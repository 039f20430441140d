"""Whose fault a failed video is: the file's (a sentence about the media) or featpipe's (a bug).

Only the media's own errors may become a video's reason: FFmpeg's errors and the decoder's
documented checks (:class:`~featpipe.decode.DecodeError`), an extractor's documented checks
(:class:`~featpipe.extractors.ExtractorError`), and failing to read the file. Anything else (an
AttributeError from a PyAV API that changed under featpipe, a shape mismatch) is featpipe's bug:
its reason says so, the traceback goes to the worker's log and the run's report, and
:class:`RepeatGuard` stops the run when the same bug fails several videos in a row.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path

import av

from ..contracts import ExtractorError
from ..decode import DecodeError

MEDIA_ERRORS = (DecodeError, ExtractorError, av.error.FFmpegError, OSError, MemoryError)
"""Exceptions that say something about the input (or the machine), not about featpipe's code."""

INTERNAL_REPEATS = 3
"""The same internal error failing this many videos in a row stops the run (exit 2)."""


@dataclass(frozen=True)
class Failure:
    """A failed video's one-line ``reason``; for featpipe's own bugs, ``internal`` (the error's type and
    where it was raised, equal for the same bug on every video) and ``detail`` (the traceback)."""

    reason: str
    internal: str = ""
    detail: str = ""


def _where(exc: BaseException) -> traceback.FrameSummary | None:
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    return frames[-1] if frames else None


def describe(exc: BaseException) -> Failure:
    """The failure an exception stands for (see the module's docstring for whose fault it is)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(exc, (DecodeError, ExtractorError)):  # sentences about the media or the setup
        return Failure(text)
    where = _where(exc)
    loc = f" (at {where.name}:{where.lineno})" if where else ""
    said = f"{type(exc).__name__}: {text}{loc}"
    if isinstance(exc, MEDIA_ERRORS):
        return Failure(said)
    site = f"{Path(where.filename).name}:{where.lineno}" if where else "?"
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return Failure(f"{said}: an internal error in featpipe, not a problem of this file; please report it "
                   "(the traceback is in the run's report)", internal=f"{type(exc).__name__} at {site}",
                   detail=detail)


class RepeatGuard:
    """Counts videos failed in a row by the same internal error; :meth:`see` says when to stop the run.

    A committed video ends the streak; a media failure neither ends nor extends it.
    """

    def __init__(self, repeats: int = INTERNAL_REPEATS):
        self.repeats = repeats
        self.last, self.count, self.reason = "", 0, ""

    def see(self, ok: bool, internal: str = "", reason: str = "") -> bool:
        if ok:
            self.last, self.count = "", 0
        elif internal:
            self.count = self.count + 1 if internal == self.last else 1
            self.last, self.reason = internal, reason
        return self.count >= self.repeats

    def message(self, report: str) -> str:
        return (f"stopped: the same internal error failed {self.count} videos in a row ({self.last}). This is a bug "
                f"in featpipe, not in your videos: please report it with the traceback in {report}. Every video "
                "committed so far is kept; rerun after a fix to resume.")
