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
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..contracts import AUDIO_RATE, AudioCopy, Chunk, ExtractOptions, ExtractorError, MediaNeeds, OutputSpec, WeightsError

__all__ = ["AUDIO_RATE", "AudioCopy", "Chunk", "ExtractOptions", "Extractor", "ExtractorError", "MediaNeeds", "Option",
           "OutputSpec", "WeightsError"]  # the contracts are re-exported: extractor modules import them from here


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
    preload: ClassVar[tuple[str, ...]] = ()
    """Third-party modules :meth:`load` imports (e.g. ``("torch", "open_clip")``): a warm fork server
    imports them once before it forks local workers (:func:`featpipe.run.cluster.preload_modules`)."""

    def __init__(self, args: str, options: ExtractOptions) -> None:
        self.args = args
        self.options = options

    def opt(self, key: str) -> Any:
        """The typed value of declared option ``key`` (its default when not set).

        ``--set NAME.key=value`` (e.g. ``mert.window=5``) sets it for this extractor only and wins
        over a plain ``--set key=value``, which every extractor declaring ``key`` reads.
        """
        if key not in self.option_specs:
            raise KeyError(f"{type(self).__name__} declares no option {key!r}")
        scoped = f"{self.name}.{key}"
        raw = self.options.get(scoped)
        return self.option_specs[key].parse(scoped if raw is not None else key,
                                            raw if raw is not None else self.options.get(key))

    def resolved_options(self) -> dict[str, Any]:
        """Every declared option with its typed value: what a feature's identity records."""
        return {k: self.opt(k) for k in sorted(self.option_specs)}

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.args}" if self.args else self.name

    @property
    def weights_path(self) -> str | None:
        """``--weights`` for this extractor: ``--weights NAME=PATH`` (or ``SPEC=PATH``), else a plain ``--weights PATH``."""
        return self.options.weights_for(self.name, self.spec)

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
