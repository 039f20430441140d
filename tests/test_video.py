"""The per-video algorithm on its own, without Dask, and the try policy's numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featpipe.contracts import Chunk, ExtractOptions, MediaNeeds, OutputSpec
from featpipe.decode import DecodeParams, count_segments, iter_chunks, merge_needs, probe
from featpipe.extractors import build
from featpipe.extractors.base import Extractor
from featpipe.run.retry import TRIES, TryPolicy
from featpipe.run.extract_video import VideoJob, process_video
from media import write_clip

NO_DASK = """
import json
import sys
sys.modules["dask"] = sys.modules["distributed"] = None  # any import of Dask now raises ImportError
from featpipe.contracts import ExtractOptions
from featpipe.decode import DecodeParams
from featpipe.run.extract_video import VideoJob, process_video
import numpy as np
r = process_video(VideoJob("v", sys.argv[1], ("priors", "motion"), ExtractOptions(),
                           DecodeParams(max_seconds=4, chunk_segments=1)))
assert r.ok, r.reason
np.savez(sys.argv[2], **r.arrays)
print(json.dumps({"valid": r.valid, "segments": r.segments}))
"""


def _whole_video(path: Path, spec: str, params: DecodeParams) -> np.ndarray:
    """The extractor on the whole video in one chunk, straight from the decoder (no prefetch, no padding)."""
    ext = build(spec, ExtractOptions())
    ext.load("cpu")
    info = probe(str(path))
    _, valid = count_segments(info.duration, params)
    (chunk,) = iter_chunks(info, merge_needs([ext.needs()]), DecodeParams(chunk_segments=1000), "v", valid)
    return next(iter(ext.extract(chunk).values()))


def test_process_video_runs_without_dask_and_equals_whole_video_extraction(tmp_path) -> None:
    clip = write_clip(tmp_path / "v.mp4", seconds=2.6, fps=10, freq=330.0)
    out = tmp_path / "arrays.npz"
    done = subprocess.run([sys.executable, "-c", NO_DASK, str(clip), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts == {"valid": {"priors": 3, "motion": 3}, "segments": 4}  # 2.6 s: 3 segments, padded to 4
    arrays = dict(np.load(out))
    for name in ("priors", "motion"):
        whole = _whole_video(clip, name, DecodeParams(max_seconds=4))
        got = arrays[name].astype(np.float32)
        assert got.shape[0] == 4
        # one chunk per segment through the prefetch thread == one chunk for the whole video
        np.testing.assert_allclose(got[:3], whole.astype(np.float16).astype(np.float32), rtol=0, atol=0)
        np.testing.assert_array_equal(got[3], got[2])  # MUSIC-AVQA's padding: the last segment repeats


class _Rows(Extractor):
    """A test extractor whose row count can be made wrong on purpose."""

    name = "rows"

    def __init__(self, extra_rows: int = 0) -> None:
        super().__init__("", ExtractOptions())
        self.extra_rows = extra_rows

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("rows", (2,), "audio", dtype="float32")]

    def needs(self) -> MediaNeeds:
        return MediaNeeds(audio=True)

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        k = np.arange(chunk.first, chunk.first + chunk.count + self.extra_rows, dtype=np.float32)
        return {"rows": np.stack([k, np.full_like(k, chunk.count)], axis=1)}


@pytest.mark.parametrize("pad", ["repeat", "zero"])
def test_process_video_with_given_extractors_pads_to_the_timeline(tmp_path, pad) -> None:
    clip = write_clip(tmp_path / "v.mp4", seconds=3.0)
    job = VideoJob("v", str(clip), ("rows",), ExtractOptions(), DecodeParams(max_seconds=5, pad=pad, chunk_segments=2))
    r = process_video(job, load=lambda spec, options: _Rows())
    assert r.ok, r.reason
    assert r.valid == {"rows": 3} and r.segments == 5
    want_tail = [[2, 1], [2, 1]] if pad == "repeat" else [[0, 0], [0, 0]]
    assert r.arrays["rows"].tolist() == [[0, 2], [1, 2], [2, 1], *want_tail]  # chunks of 2: counts 2, 2, 1
    assert r.info["media"]["audio_channels"] == 2 and r.info["duration"] == pytest.approx(3.0, abs=0.05)


def test_process_video_turns_any_error_into_a_one_line_reason(tmp_path) -> None:
    clip = write_clip(tmp_path / "v.mp4", seconds=2.0)
    job = VideoJob("v", str(clip), ("rows",), ExtractOptions(), DecodeParams())
    r = process_video(job, load=lambda spec, options: _Rows(extra_rows=1))
    assert not r.ok and r.arrays == {}
    assert r.reason.startswith("ValueError: rows gave 3 rows for 2 segments") and "\n" not in r.reason
    missing = process_video(VideoJob("v", str(tmp_path / "none.mp4"), ("rows",), ExtractOptions(), DecodeParams()),
                            load=lambda spec, options: _Rows())
    assert not missing.ok and "\n" not in missing.reason and missing.reason


def test_each_visual_extractor_receives_frames_at_its_own_size(tmp_path, tiny_clip) -> None:
    clip = write_clip(tmp_path / "v.mp4", seconds=2.0, size=(320, 240))
    clip_spec = f"clip:{tiny_clip}/random"

    def run(*specs):
        r = process_video(VideoJob("v", str(clip), specs, ExtractOptions(), DecodeParams()))
        assert r.ok, r.reason
        return r.arrays

    alone, clip_alone, both = run("motion"), run(clip_spec), run("motion", clip_spec)
    # beside a native-frame CLIP, motion still gets its 64-pixel frames: bit-identical values
    np.testing.assert_array_equal(both["motion"], alone["motion"])
    (name,) = clip_alone
    np.testing.assert_array_equal(both[name], clip_alone[name])  # and CLIP its native ones
    # the decode behind it: one chunk holds each request's frames, only at the positions asked there
    motion, tiny = build("motion", ExtractOptions()), build(clip_spec, ExtractOptions())
    needs = merge_needs([motion.needs(), tiny.needs()])
    assert needs.requests() == {0: (0.5,), 64: motion.needs().frame_positions}
    (chunk,) = iter_chunks(probe(str(clip)), needs, DecodeParams(chunk_segments=10), "v", 2)
    assert chunk.frames == {} and sorted(chunk.sized) == [0, 64]
    assert chunk.for_needs(tiny.needs()).frames[0.5].shape == (2, 240, 320, 3)
    assert chunk.for_needs(motion.needs()).frames[0.1].shape == (2, 64, 85, 3)


def test_a_video_gets_three_tries_each_with_a_time_limit() -> None:
    policy = TryPolicy()
    assert TRIES == policy.tries == 3
    assert not policy.gives_up(earlier_tries=2) and policy.gives_up(earlier_tries=3)  # the 4th start stops
    assert policy.resubmit(tries=2, killed_answers=1) and not policy.resubmit(tries=3, killed_answers=1)
    assert not policy.resubmit(tries=1, killed_answers=7)  # a scheduler that keeps answering KilledWorker
    assert policy.limit(None) == 60.0 and policy.limit(6.0) == 120.0  # 60 s + 10 x the duration
    assert policy.scheduler_config() == {"distributed.scheduler.allowed-failures": 2}
    assert not TryPolicy(video_timeout=None).timed and not TryPolicy(video_timeout=0).timed
    assert "died 3 times" in policy.death_reason(3)
    with pytest.raises(ValueError):
        TryPolicy(video_timeout=-1)
