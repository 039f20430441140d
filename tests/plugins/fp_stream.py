"""Test-only extractor plugin (FEATPIPE_PLUGINS=fp_stream) for streamed rows (tests/test_stream.py):
distinct rows per segment from its audio, an output with its own hop, and values past float16's
range from a chosen segment on."""

from __future__ import annotations

import numpy as np

from featpipe.extractors import register
from featpipe.extractors.base import Chunk, Extractor, MediaNeeds, Option, OutputSpec


@register
class StreamRows(Extractor):
    name = "streamrows"
    summary = "test only: per-segment audio statistics, wide rows, a 0.5 s hop output, optional overflow"
    version = "1"
    option_specs = {
        "width": Option(int, 16, "values per row"),
        "overflow_from": Option(int, -1, "segments from this one on hold 1e6 (inf as float16); -1: none"),
    }

    def outputs(self) -> list[OutputSpec]:
        w = self.opt("width")
        return [OutputSpec("streamrows", (w, 2), "audio"),
                OutputSpec("streamrows-hop", (w,), "audio", hop=0.5, start=0.0)]

    def needs(self) -> MediaNeeds:
        return MediaNeeds(audio=True)

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        w, cut = self.opt("width"), self.opt("overflow_from")
        ramp = np.linspace(0.5, 1.5, w, dtype=np.float32)
        seg, half = [], []
        for k in range(chunk.count):
            a = chunk.segment_audio(k)
            rms = float(np.sqrt((a ** 2).mean())) if a.size else 0.0
            value = 1e6 if 0 <= cut <= chunk.first + k else rms + (chunk.first + k)
            seg.append(np.stack([ramp * value, ramp * (chunk.first + k)], axis=1))
            n = a.shape[1] // 2
            for part in (a[:, :n], a[:, n:]):
                half.append(ramp * float(np.abs(part).mean() if part.size else 0.0) + (chunk.first + k))
        return {"streamrows": np.stack(seg).astype(np.float32), "streamrows-hop": np.stack(half).astype(np.float32)}
