"""Test-only extractor plugin (loaded through FEATPIPE_PLUGINS): a deterministic audio feature
that takes a while per chunk, so a test can kill a run in the middle."""

from __future__ import annotations

import os
import time

import numpy as np

from featpipe.extractors import register
from featpipe.extractors.base import Chunk, Extractor, MediaNeeds, OutputSpec


@register
class SlowExtractor(Extractor):
    name = "slow"
    summary = "test only: per-segment audio RMS, slowly"

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("slow", (2,), "audio")]

    def needs(self) -> MediaNeeds:
        return MediaNeeds(audio=True)

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        time.sleep(float(os.environ.get("FP_SLOW_SECONDS", "0.3")))
        rows = [np.sqrt((chunk.segment_audio(k) ** 2).mean(axis=1)).mean() for k in range(chunk.count)]
        return {"slow": np.stack([np.array(rows), np.arange(chunk.first, chunk.first + chunk.count)], axis=1)}
