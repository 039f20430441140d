"""The contracts between featpipe's stages: plain data that decoding, extractors, workers and
the cache all speak, so none of them depends on another's package.

- :class:`MediaNeeds`: extractor -> decoder (what to decode);
- :class:`Chunk`: decoder -> extractor (consecutive segments, decoded once);
- :class:`OutputSpec`: extractor -> cache (one array per video, its row shape and timeline);
- :class:`ExtractOptions`: command line -> extractors (options shared by all of them);
- :data:`AUDIO_RATE`: the one audio rate every audio extractor receives;
- :data:`BEATS_OUTPUT`: the name of the beat times the beat timeline pools by;
- :class:`ExtractorError`, :class:`WeightsError`: what an extractor (or the weights and model code
  under it) raises for a bad spec or missing weights, caught by the command line;
- :func:`worker_environ`: the environment featpipe's local Dask workers (extraction and study) start with.

This module imports nothing of featpipe; :mod:`featpipe.extractors` re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

AUDIO_RATE = 48_000
"""Every audio extractor receives audio at this rate; the decoder resamples once."""

BEATS_OUTPUT = "rhythm-beats"
"""The rhythm extractor's beat-time output: the beat timeline's boundaries, and never a head's input."""


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def worker_environ(threads: int) -> dict[str, str]:
    """The whole of ``distributed.nanny.pre-spawn-environ`` for featpipe's local workers: each
    library's thread count, and not Dask's default ``MALLOC_TRIM_THRESHOLD_=65536``. Setting that
    variable at all turns off glibc's adaptive mmap threshold, so every array over 128 KiB (a
    batch, an activation) is a fresh mmap whose pages the kernel maps and zeroes again: a study's
    runs spent a quarter of their CPU in the kernel and ran 2 to 2.5 times slower than the same
    training in one process (docs/performance.md, "Study")."""
    return {k: str(threads) for k in THREAD_VARS}


class ExtractorError(Exception):
    """A problem with one extractor spec (bad syntax, unknown model)."""


class WeightsError(ExtractorError):
    """Model weights are missing or unreadable. The message is one line: what and how to get it."""


@dataclass(frozen=True)
class OutputSpec:
    """One array an extractor writes per video.

    ``shape`` is the shape of one row (one segment, or one native frame when ``hop`` is set).
    Rows follow the common segment timeline (segment k covers [k/fps, (k+1)/fps)) unless
    ``hop`` is given, in which case row i is centred at ``start + i * hop`` seconds.
    """

    name: str
    shape: tuple[int, ...]
    modality: str  # "audio", "visual" or "text"
    dtype: str = "float16"
    hop: float | None = None
    start: float = 0.0
    window: float | None = None
    layout: str = ""  # human-readable description of the last axis, stored with the feature
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AudioCopy:
    """A copy of the audio as FFmpeg's own resampler (libswresample, what the ``ffmpeg`` command line
    uses, downmix and upmix included) makes it from the source's decoded frames: ``rate`` Hz,
    ``layout`` (``"stereo"``, ``"mono"``), ``sample_format`` (``"s16"``: 16-bit, as ``ffmpeg -f
    s16le`` writes; delivered as float32 ``value / 32768``). For extractors that must reproduce a
    tool reading audio through ffmpeg (moviepy: ``-ar 44100 -ac 2 -f s16le``), straight from the
    source rate, not through featpipe's 48 kHz audio."""

    rate: int
    layout: str = "stereo"
    sample_format: str = "s16"

    @property
    def channels(self) -> int:
        return {"mono": 1, "stereo": 2}[self.layout]


@dataclass(frozen=True)
class MediaNeeds:
    """What an extractor needs from the decoder.

    ``frame_positions`` are positions inside a segment, as fractions of its length (0.5 is
    the centre, MUSIC-AVQA's convention). ``frame_short_side`` is the smallest short side the
    extractor can work from; the decoder scales its frames down to it (never up).
    ``audio_context`` is how many seconds of audio the extractor needs beyond
    each edge of a chunk (zeros outside the recording). ``native_frames`` asks for frames at
    their displayed size, unscaled by the decoder, for extractors whose own preprocessing must
    see the original pixels (open_clip's transform, the field's resize rules). Every extractor
    receives frames at its own request (:attr:`frame_request`), whatever the others of a run ask:
    one decode converts each kept frame once per distinct request (:meth:`Chunk.for_needs`).
    ``frame_sizes`` is set only on merged needs (``featpipe.decode.merge_needs``): every distinct
    request of the run with the positions asked at it. ``audio_copies``: further copies of the
    audio made by FFmpeg's resampler from the source (:class:`AudioCopy`), each decoded once per run.
    """

    frame_positions: tuple[float, ...] = ()
    frame_short_side: int = 0
    native_frames: bool = False
    audio: bool = False
    audio_context: float = 0.0
    frame_sizes: tuple[tuple[int, tuple[float, ...]], ...] = ()
    audio_copies: tuple[AudioCopy, ...] = ()

    @property
    def video(self) -> bool:
        return bool(self.frame_positions)

    @property
    def frame_request(self) -> int:
        """The frames this extractor receives: 0 for native (display) size, else the short side."""
        return 0 if self.native_frames else self.frame_short_side

    def requests(self) -> dict[int, tuple[float, ...]]:
        """Frame request -> the positions decoded at it (one entry unless these needs are merged)."""
        if self.frame_sizes:
            return dict(self.frame_sizes)
        return {self.frame_request: self.frame_positions} if self.video else {}


@dataclass
class Chunk:
    """Consecutive segments ``first .. first+count-1`` of one video, decoded once.

    ``frames[p]`` is a ``(count, H, W, 3)`` uint8 RGB array of the frames at position ``p``
    (a fraction of the segment) for every segment of the chunk; frames past the end of the
    video repeat the last decoded frame. A decode serving several frame requests keeps them in
    ``sized`` (request -> frames, see :attr:`MediaNeeds.frame_request`) and leaves ``frames``
    empty; :meth:`for_needs` gives the chunk one extractor receives.
    ``audio`` is ``(channels, samples)`` float32 at ``audio_rate`` Hz, channels kept (1 or 2),
    covering ``[t0 - audio_context, t1 + audio_context]`` where ``t0 = first * seg_len`` and
    ``t1 = (first + count) * seg_len``; samples outside the recording are zero.
    ``audio_copies[copy]`` is ``(channels, samples)`` float32 at ``copy.rate`` over the same time
    span (its first sample is absolute sample ``round((t0 - audio_context) * copy.rate)``).
    """

    video_id: str
    first: int
    count: int
    seg_len: float
    duration: float
    frames: dict[float, np.ndarray] = field(default_factory=dict)
    audio: np.ndarray | None = None
    audio_rate: int = AUDIO_RATE
    audio_context: float = 0.0
    sized: dict[int, dict[float, np.ndarray]] = field(default_factory=dict)
    audio_copies: dict[AudioCopy, np.ndarray] = field(default_factory=dict)

    def for_needs(self, needs: MediaNeeds) -> Chunk:
        """This chunk as an extractor with ``needs`` receives it: ``frames`` at its own request."""
        if not needs.video or not self.sized:
            return self
        return replace(self, frames=self.sized[needs.frame_request], sized={})

    @property
    def t0(self) -> float:
        return self.first * self.seg_len

    @property
    def t1(self) -> float:
        return (self.first + self.count) * self.seg_len

    def mono(self) -> np.ndarray:
        """Mono audio as the mean of the channels (not the 0.7071 sum some resamplers use)."""
        if self.audio is None:
            raise ValueError("this chunk has no audio")
        return self.audio.mean(axis=0)

    def segment_audio(self, k: int, context: float = 0.0) -> np.ndarray:
        """Audio of segment ``first + k`` widened by ``context`` seconds on each side.

        ``context`` must not exceed ``audio_context``. Returns ``(channels, samples)``.
        """
        if self.audio is None:
            raise ValueError("this chunk has no audio")
        if context > self.audio_context + 1e-9:
            raise ValueError(f"context {context}s exceeds the decoded {self.audio_context}s")
        per_seg = self.seg_len * self.audio_rate
        start = round((self.audio_context - context) * self.audio_rate + k * per_seg)
        stop = round((self.audio_context + context) * self.audio_rate + (k + 1) * per_seg)
        return self.audio[:, start:stop]


@dataclass(frozen=True)
class ExtractOptions:
    """Options shared by all extractors, set from the command line."""

    device: str = "cpu"
    batch_size: int = 32
    tokens: bool = False  # also store patch tokens (visual extractors that have them)
    weights: str | None = None  # explicit weights path for the extractors that take one
    weights_by: tuple[tuple[str, str], ...] = ()  # (extractor name or spec, path): --weights NAME=PATH
    extra: tuple[tuple[str, str], ...] = ()  # free-form key=value options

    def get(self, key: str, default: str | None = None) -> str | None:
        return dict(self.extra).get(key, default)

    def weights_for(self, name: str, spec: str) -> str | None:
        """The weights path given for extractor ``name``/``spec``, else the one given for all."""
        given = dict(self.weights_by)
        return given.get(spec) or given.get(name) or self.weights
