"""Decoding: segment counts, frames at segment centres, audio alignment and channels, seeking."""

from __future__ import annotations

import numpy as np
import pytest

from featpipe.decode import (DecodeError, DecodeParams, count_segments, frame_size, iter_chunks, merge_needs,
                             probe, use_seek)
from featpipe.extractors.base import MediaNeeds
from media import write_clip

NEEDS = MediaNeeds(frame_positions=(0.5,), frame_short_side=32, audio=True, audio_context=0.5)


def _decode(path, params, needs=NEEDS):
    info = probe(str(path))
    n, valid = count_segments(info.duration, params)
    return info, n, valid, list(iter_chunks(info, needs, params, "x", valid))


def test_count_segments_rules():
    p = DecodeParams(fps=1)
    assert count_segments(10.0078, p) == (10, 10)  # decoded AAC runs a little long
    assert count_segments(10.5, p) == (11, 11)  # a half segment is kept
    assert count_segments(10.2, p) == (10, 10)  # a short tail is dropped
    assert count_segments(0.3, p) == (1, 1)  # never fewer than one
    assert count_segments(5.0, DecodeParams(fps=1, max_seconds=8)) == (8, 5)
    assert count_segments(70.0, DecodeParams(fps=1, max_seconds=60)) == (60, 60)
    assert count_segments(4.0, DecodeParams(fps=2)) == (8, 8)


@pytest.mark.parametrize("seek", ["never", "always"])
def test_frames_are_the_ones_on_screen_at_segment_centres(tmp_path, seek):
    path = write_clip(tmp_path / "a.mp4", seconds=5, fps=10)
    info, n, valid, chunks = _decode(path, DecodeParams(fps=1, chunk_segments=2, seek=seek))
    assert (n, valid) == (5, 5)
    levels = np.concatenate([c.frames[0.5].mean(axis=(1, 2, 3)) for c in chunks])
    expected = [255 * t / 5 for t in (0.5, 1.5, 2.5, 3.5, 4.5)]
    np.testing.assert_allclose(levels, expected, atol=3)  # grey level encodes time; x264 adds a little noise
    assert [c.count for c in chunks] == [2, 2, 1]


def test_seek_is_chosen_only_when_keyframes_are_dense(tmp_path):
    dense = probe(str(write_clip(tmp_path / "d.mp4", seconds=3, fps=10, keyint=5)))
    sparse = probe(str(write_clip(tmp_path / "s.mp4", seconds=3, fps=10, keyint=30)))
    p = DecodeParams(fps=1)
    assert dense.keyframe_spacing == pytest.approx(0.5)
    assert use_seek(dense, MediaNeeds(frame_positions=(0.5,)), p)
    assert not use_seek(sparse, MediaNeeds(frame_positions=(0.5,)), p)
    assert not use_seek(dense, MediaNeeds(frame_positions=(0.1, 0.5)), p)  # several frames per segment


def test_audio_is_48k_with_channels_kept_and_context_zero_padded(tmp_path):
    path = write_clip(tmp_path / "a.mp4", seconds=3, fps=10, channels=2, rate=44100, freq=300)
    _, n, _, chunks = _decode(path, DecodeParams(fps=1, chunk_segments=16))
    (chunk,) = chunks
    assert chunk.audio.shape == (2, int((3 + 1.0) * 48000))
    lead = chunk.audio[:, : 24000]
    assert np.abs(lead).max() == 0.0  # context before t=0 is silence
    mid = chunk.segment_audio(1)
    rms = np.sqrt((mid ** 2).mean(axis=1))
    assert rms[0] == pytest.approx(0.8 / np.sqrt(2), rel=0.1)  # left gain 0.8, right 0.2
    assert rms[1] == pytest.approx(0.2 / np.sqrt(2), rel=0.1)
    spec = np.abs(np.fft.rfft(mid[0]))
    assert np.argmax(spec) * 48000 / mid.shape[1] == pytest.approx(300, abs=2)


def test_chunked_audio_equals_one_chunk(tmp_path):
    path = write_clip(tmp_path / "a.mp4", seconds=4, fps=10)
    *_, whole = _decode(path, DecodeParams(fps=1, chunk_segments=16))
    *_, parts = _decode(path, DecodeParams(fps=1, chunk_segments=1))
    for k, part in enumerate(parts):
        np.testing.assert_array_equal(part.segment_audio(0, 0.5), whole[0].segment_audio(k, 0.5))


def test_mono_and_surround_sources(tmp_path):
    mono = write_clip(tmp_path / "m.mp4", seconds=2, channels=1, rate=8000)
    surround = write_clip(tmp_path / "s.mp4", seconds=2, channels=6, rate=48000)
    assert _decode(mono, DecodeParams())[3][0].audio.shape[0] == 1
    assert _decode(surround, DecodeParams())[3][0].audio.shape[0] == 2


def test_missing_streams_fail_with_a_reason(tmp_path):
    audio_only = write_clip(tmp_path / "a.mp4", seconds=2, video=False)
    video_only = write_clip(tmp_path / "v.mp4", seconds=2, audio=False)
    with pytest.raises(DecodeError, match="no video stream"):
        _decode(audio_only, DecodeParams())
    with pytest.raises(DecodeError, match="no audio stream"):
        _decode(video_only, DecodeParams())
    # each works for the modality it has
    assert _decode(audio_only, DecodeParams(), MediaNeeds(audio=True))[3][0].audio is not None
    assert _decode(video_only, DecodeParams(), MediaNeeds(frame_positions=(0.5,)))[3][0].frames


def test_unreadable_files_fail_with_one_line(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video\n")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    for name in ("empty.mp4", "text.mp4", "noise.mp4"):
        with pytest.raises(DecodeError) as err:
            probe(str(tmp_path / name))
        assert "\n" not in str(err.value)


def test_frame_size_and_needs_merge():
    assert frame_size(640, 360, 224) == (398, 224)
    assert frame_size(100, 50, 224) == (100, 50)  # never scaled up
    merged = merge_needs([MediaNeeds(frame_positions=(0.5,), frame_short_side=224),
                          MediaNeeds(frame_positions=(0.1, 0.5), frame_short_side=64, audio=True, audio_context=0.5)])
    assert merged.frame_positions == (0.1, 0.5) and merged.frame_short_side == 224
    assert merged.audio and merged.audio_context == 0.5


def test_memory_is_bounded_by_a_chunk_not_the_video(tmp_path):
    """Peak numpy memory while decoding a 4x longer video stays about the same."""
    import tracemalloc

    def peak(seconds: float) -> int:
        path = write_clip(tmp_path / f"{seconds}.mp4", seconds=seconds, fps=5, size=(32, 32), rate=48000)
        info = probe(str(path))
        params = DecodeParams(fps=1, chunk_segments=4)
        _, valid = count_segments(info.duration, params)
        tracemalloc.start()
        for chunk in iter_chunks(info, NEEDS, params, "x", valid):
            del chunk
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    short, long = peak(20.0), peak(80.0)
    whole_long_audio = 80 * 48000 * 2 * 4
    assert long < 1.5 * short + 200_000
    assert long < whole_long_audio / 2  # holding the whole audio would need at least this
