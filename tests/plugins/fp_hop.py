"""Test-only audio extractor (FEATPIPE_PLUGINS=fp_hop) with its own hop: the RMS of every 0.25 s
window, row i centred at 0.125 + 0.25 i seconds (like OpenL3's ``native=1`` rows, but tiny)."""

from __future__ import annotations

import numpy as np

from featpipe.decode import rows_before
from featpipe.extractors import register
from featpipe.extractors.base import Chunk, Extractor, MediaNeeds, OutputSpec

HOP, START = 0.25, 0.125


@register
class HopExtractor(Extractor):
    name = "hop"
    summary = "test only: audio RMS per 0.25 s window (its own hop)"
    version = "1"

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("hop", (1,), "audio", dtype="float32", hop=HOP, start=START, window=HOP)]

    def needs(self) -> MediaNeeds:
        return MediaNeeds(audio=True)

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        x = chunk.mono()
        first, stop = rows_before(chunk.t0, HOP, START), rows_before(chunk.t1, HOP, START)
        rows = []
        for i in range(first, stop):
            lo = round((START + i * HOP - HOP / 2 - chunk.t0 + chunk.audio_context) * chunk.audio_rate)
            w = x[max(lo, 0):lo + round(HOP * chunk.audio_rate)]
            rows.append(np.sqrt((w ** 2).mean()) if w.size else 0.0)
        return {"hop": np.asarray(rows, np.float32).reshape(-1, 1)}
