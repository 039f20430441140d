"""The extractor interface: what every feature extractor declares and implements.

An extractor is built from a spec string (``"clip:ViT-B-32/openai"``, ``"priors"``), declares
what it needs from the decoder (:class:`MediaNeeds`) and what it writes to the cache
(:class:`OutputSpec`), and turns one :class:`Chunk` of consecutive segments into arrays.

Life cycle, and where each step runs:

1. ``Extractor(args, options)`` and :meth:`Extractor.check`: on the client, before any video is
   touched. ``check`` resolves weights and raises :class:`WeightsError` with a one-line message
   when they are missing. It must stay cheap (no model build).
2. :meth:`Extractor.load`: once per worker process (models load once per worker, not per video).
3. :meth:`Extractor.extract`: once per chunk of every video, on the worker.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

AUDIO_RATE = 48_000
"""Every audio extractor receives audio at this rate; the decoder resamples once."""


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
class MediaNeeds:
    """What an extractor needs from the decoder.

    ``frame_positions`` are positions inside a segment, as fractions of its length (0.5 is
    the centre, MUSIC-AVQA's convention). ``frame_short_side`` is the smallest short side the
    extractor can work from; the decoder scales frames down to the largest any extractor asks
    for (never up). ``audio_context`` is how many seconds of audio the extractor needs beyond
    each edge of a chunk (zeros outside the recording). ``native_frames`` asks for frames at
    their displayed size, unscaled by the decoder, for extractors whose own preprocessing must
    see the original pixels (open_clip's transform, the field's resize rules); when any extractor
    of a run asks for it, every extractor receives native frames.
    """

    frame_positions: tuple[float, ...] = ()
    frame_short_side: int = 0
    native_frames: bool = False
    audio: bool = False
    audio_context: float = 0.0

    @property
    def video(self) -> bool:
        return bool(self.frame_positions)


@dataclass
class Chunk:
    """Consecutive segments ``first .. first+count-1`` of one video, decoded once.

    ``frames[p]`` is a ``(count, H, W, 3)`` uint8 RGB array of the frames at position ``p``
    (a fraction of the segment) for every segment of the chunk; frames past the end of the
    video repeat the last decoded frame.
    ``audio`` is ``(channels, samples)`` float32 at ``audio_rate`` Hz, channels kept (1 or 2),
    covering ``[t0 - audio_context, t1 + audio_context]`` where ``t0 = first * seg_len`` and
    ``t1 = (first + count) * seg_len``; samples outside the recording are zero.
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
class Option:
    """One ``--set key=value`` option an extractor declares: its type, default and help.

    ``type`` is ``str``, ``int``, ``float`` or ``bool`` (``1/0/true/false/yes/no``);
    ``choices`` restricts the value. ``affects_output`` is False only for options that change
    speed or memory but never the stored values (they stay out of the feature's identity).
    """

    type: type = str
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] = ()
    affects_output: bool = True

    def parse(self, key: str, raw: str | None) -> Any:
        """The typed value of ``raw`` (the default when ``None``); one-line ExtractorError otherwise."""
        if raw is None:
            return self.default
        text = str(raw).strip()
        try:
            if self.type is bool:
                low = text.lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(text)
                value: Any = low in ("1", "true", "yes", "on")
            elif self.type in (int, float):
                value = self.type(text)
            else:
                value = text
        except ValueError:
            raise ExtractorError(f"{key}={raw!r} is not a valid {self.type.__name__}") from None
        if self.choices and value not in self.choices:
            raise ExtractorError(f"{key}={raw!r}; use one of {', '.join(map(str, self.choices))}")
        return value


@dataclass(frozen=True)
class ExtractOptions:
    """Options shared by all extractors, set from the command line."""

    device: str = "cpu"
    batch_size: int = 32
    tokens: bool = False  # also store patch tokens (visual extractors that have them)
    weights: str | None = None  # explicit weights path for the extractors that take one
    extra: tuple[tuple[str, str], ...] = ()  # free-form key=value options

    def get(self, key: str, default: str | None = None) -> str | None:
        return dict(self.extra).get(key, default)


class Extractor(ABC):
    """Base class. Subclasses set ``name`` and register with ``@register``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for ``featpipe models``
    spec_help: ClassVar[str] = ""  # e.g. "clip:<model>/<pretrained tag or checkpoint>"
    examples: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[str] = "1"
    """Changes whenever the stored values would change for the same input (part of the identity)."""
    option_specs: ClassVar[dict[str, Option]] = {}
    """The ``--set`` keys this extractor reads, typed, with defaults (read them with :meth:`opt`)."""

    def __init__(self, args: str, options: ExtractOptions) -> None:
        self.args = args
        self.options = options

    def opt(self, key: str) -> Any:
        """The typed value of declared option ``key`` (its default when not set)."""
        if key not in self.option_specs:
            raise KeyError(f"{type(self).__name__} declares no option {key!r}")
        return self.option_specs[key].parse(key, self.options.get(key))

    def resolved_options(self) -> dict[str, Any]:
        """Every declared option with its typed value: what a feature's identity records."""
        return {k: self.opt(k) for k in sorted(self.option_specs)}

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.args}" if self.args else self.name

    @abstractmethod
    def outputs(self) -> list[OutputSpec]:
        """The arrays this extractor writes; cheap (no model build)."""

    @abstractmethod
    def needs(self) -> MediaNeeds:
        """What the decoder must deliver to :meth:`extract`."""

    def check(self) -> None:
        """Resolve weights on the client; raise :class:`WeightsError` when they are missing."""

    def weights_identity(self) -> str:
        """sha256 of the weight file, ``"random-init"``, or ``"none"`` for weight-free ones."""
        return "none"

    def load(self, device: str) -> None:
        """Build the model on ``device``. Called once per worker process."""

    @abstractmethod
    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        """Arrays for one chunk, keyed by output name.

        For timeline outputs: ``chunk.count`` rows. For outputs with their own ``hop``: the
        rows whose centres fall in ``[chunk.t0, chunk.t1)``.
        """
