"""Test-only visual extractor (loaded through FEATPIPE_PLUGINS): where the colours of a frame lie.

Row k is the mean RGB of the top, bottom, left and right thirds of segment k's centre frame at
its native (displayed) size, then its height and width; with ``--set big=1`` every value is
70000 (finite in float32, inf in float16), for the storage-dtype check.
"""

from __future__ import annotations

import numpy as np

from featpipe.extractors import register
from featpipe.extractors.base import Chunk, Extractor, MediaNeeds, Option, OutputSpec


@register
class LayoutExtractor(Extractor):
    name = "layout"
    summary = "test only: mean colour of the frame's top, bottom, left and right thirds"
    option_specs = {"big": Option(bool, False, "emit 70000 everywhere")}

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("layout", (14,), "visual")]

    def needs(self) -> MediaNeeds:
        return MediaNeeds(frame_positions=(0.5,), native_frames=True)

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        f = chunk.frames[0.5].astype(np.float32)
        n, h, w = f.shape[:3]
        parts = [f[:, : h // 3], f[:, -(h // 3):], f[:, :, : w // 3], f[:, :, -(w // 3):]]
        rows = np.concatenate([p.mean(axis=(1, 2)) for p in parts] + [np.full((n, 1), h), np.full((n, 1), w)], axis=1)
        return {"layout": np.full_like(rows, 70000.0) if self.opt("big") else rows.astype(np.float32)}
