"""How videos are decoded (the parameters stored as provenance) and the decoder's one error type."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import av

from ..contracts import AUDIO_RATE


class DecodeError(Exception):
    """The media cannot be used; the message is one sentence about the media, meant for the report."""


@dataclass(frozen=True)
class DecodeParams:
    """How videos are turned into segments; stored with every video as provenance."""

    fps: float = 1.0
    max_seconds: float | None = None  # fixes the number of segments to max_seconds * fps
    pad: str = "repeat"  # how short videos reach max_seconds: "repeat" the last segment, or "zero"
    chunk_segments: int = 16
    seek: str = "auto"  # "auto", "always" or "never"
    skip: str = "auto"  # "auto": skip non-reference frames far from every target (decode.video.SkipWindow); "never"
    min_decoded: float = 0.5  # a stream decoding less than this share of its stated duration fails
    max_bad_packets: float = 0.05  # a stream with a larger share of undecodable packets fails
    video_stream: int | None = None  # stream index to use (None: the best non-cover video stream)
    audio_stream: int | None = None  # stream index to use (None: the default, else the best audio stream)
    extra: dict = field(default_factory=dict)

    @property
    def seg_len(self) -> float:
        return 1.0 / self.fps

    @property
    def fixed_segments(self) -> int | None:
        """Segments every video stores when ``max_seconds`` fixes them (at least one), else None."""
        return max(1, round(self.max_seconds * self.fps)) if self.max_seconds else None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["audio_rate"] = AUDIO_RATE
        d["pyav"] = av.__version__
        return d
