"""One decode, several frame requests: each request's frames are those a decode for it alone gives,
upright and at display size (sample aspect ratio and display matrix applied before any size)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from featpipe.contracts import MediaNeeds
from featpipe.decode import DecodeParams, iter_chunks, merge_needs, probe
from media import write_clip

NATIVE = MediaNeeds(frame_positions=(0.5,), native_frames=True)
SMALL = MediaNeeds(frame_positions=(0.25, 0.5), frame_short_side=16)


def _frames(path: str, needs: MediaNeeds) -> list:
    return list(iter_chunks(probe(path), needs, DecodeParams(chunk_segments=2), "v", 2))


def test_each_request_gets_the_frames_of_its_own_decode_upright(tmp_path) -> None:
    # coded 64x32 with 2:1 pixels (displayed 128x32), filmed upright on a phone (turned clockwise)
    path = str(write_clip(tmp_path / "r.mp4", seconds=2, fps=10, size=(64, 32), pattern="halves", rotation=-90,
                          sar=Fraction(2, 1)))
    (both,) = _frames(path, merge_needs([NATIVE, SMALL]))
    (native,), (small,) = _frames(path, NATIVE), _frames(path, SMALL)
    big, little = both.for_needs(NATIVE).frames, both.for_needs(SMALL).frames
    assert sorted(big) == [0.5] and sorted(little) == [0.25, 0.5]  # each request only at its positions
    assert big[0.5].shape == (2, 128, 32, 3) and little[0.5].shape == (2, 64, 16, 3)
    for got, alone in ((big, native.frames), (little, small.frames)):
        for p in alone:
            np.testing.assert_array_equal(got[p], alone[p])
    for f in (big[0.5][0], little[0.25][0]):  # red on top, blue below: turned and stretched first
        h = f.shape[0]
        assert f[: h // 2 - 2].mean(axis=(0, 1))[0] > 240 and f[h // 2 + 2:].mean(axis=(0, 1))[2] > 240
