"""A test-only extractor, registered through ``FEATPIPE_PLUGINS=distributed_plugin``.

``faults`` writes three deterministic numbers per segment (its index, the mean absolute audio
sample, the video's duration) and misbehaves on purpose, chosen by the video's file name:

* ``poison*``: ``os._exit(70)``, taking its worker process down (a decoder crash);
* ``hang*``: sleeps forever (a decode that never returns);
* ``slow*``: sleeps ``FEATPIPE_FAULTS_SLOW`` seconds (default 3), a window for kills to land in;
* every other video sleeps ``FEATPIPE_FAULTS_SLEEP`` seconds per chunk (default 0).

With ``FEATPIPE_FAULTS_MARK=<folder>``, each start of a video's work leaves a file there, so a
test can count, from outside the client, how many videos workers have started.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from featpipe.extractors import Chunk, Extractor, MediaNeeds, OutputSpec, register


@register
class Faults(Extractor):
    name = "faults"
    summary = "test only: deterministic numbers, crashes on poison*, hangs on hang*"

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("faults", (3,), "audio", dtype="float32")]

    def needs(self) -> MediaNeeds:
        return MediaNeeds(audio=True)

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        mark = os.environ.get("FEATPIPE_FAULTS_MARK")
        if mark and chunk.first == 0:
            Path(mark, f"{chunk.video_id}.{os.getpid()}.{time.time_ns()}").touch()
        if chunk.video_id.startswith("poison"):
            os._exit(70)
        if chunk.video_id.startswith("hang"):
            while True:
                time.sleep(3600)
        if chunk.video_id.startswith("slow"):
            time.sleep(float(os.environ.get("FEATPIPE_FAULTS_SLOW", "3")))
        else:
            time.sleep(float(os.environ.get("FEATPIPE_FAULTS_SLEEP", "0")))
        rows = np.zeros((chunk.count, 3), np.float32)
        for k in range(chunk.count):
            rows[k] = (chunk.first + k, np.abs(chunk.segment_audio(k)).mean(), chunk.duration)
        return {"faults": rows}
