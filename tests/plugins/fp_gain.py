"""Test-only extractor plugin (FEATPIPE_PLUGINS=fp_gain) with declared options: ``gain`` changes
the stored values, ``threads`` does not (it stays out of the feature's identity)."""

from __future__ import annotations

import numpy as np

from featpipe.extractors import register
from featpipe.extractors.base import Chunk, Extractor, MediaNeeds, Option, OutputSpec


@register
class GainExtractor(Extractor):
    name = "gain"
    summary = "test only: per-segment audio RMS times --set gain"
    version = "1"
    option_specs = {
        "gain": Option(float, 1.0, "factor on the RMS"),
        "threads": Option(int, 1, "speed only", affects_output=False),
    }

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("gain", (1,), "audio", dtype="float32")]

    def needs(self) -> MediaNeeds:
        return MediaNeeds(audio=True)

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        rms = [np.sqrt((chunk.segment_audio(k) ** 2).mean()) for k in range(chunk.count)]
        return {"gain": self.opt("gain") * np.array(rms, np.float32)[:, None]}
