"""Test-only plugin (FEATPIPE_PLUGINS=fp_broken): featpipe's own bugs, injected on purpose.

``FP_BROKEN=decode`` makes the decoder's display-matrix read raise the AttributeError that PyAV
18.1.1 caused (its ``frame.side_data`` began to yield keys), on every video, in the client and in
every worker. The ``broken`` extractor raises an AttributeError in ``extract`` (a bug in an
extractor's code), except on the videos whose ids ``FP_BROKEN_GOOD`` lists (comma-separated; zeros there).
"""

from __future__ import annotations

import os

import numpy as np

import featpipe.decode.streams as _streams
from featpipe.extractors import register
from featpipe.extractors.base import Chunk, Extractor, MediaNeeds, OutputSpec

if os.environ.get("FP_BROKEN") == "decode":
    def _keys_not_objects(frame):
        raise AttributeError("'av.sidedata.sidedata.Type' object has no attribute 'type'")

    _streams.display_matrix_side_data = _keys_not_objects


@register
class BrokenExtractor(Extractor):
    name = "broken"
    summary = "test only: raises AttributeError in extract (a bug in an extractor)"
    version = "1"

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("broken", (1,), "audio", dtype="float32")]

    def needs(self) -> MediaNeeds:
        return MediaNeeds(audio=True)

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        if chunk.video_id in os.environ.get("FP_BROKEN_GOOD", "").split(","):
            return {"broken": np.zeros((chunk.count, 1), np.float32)}
        return {"broken": chunk.no_such_attribute}
