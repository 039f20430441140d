"""Decoding less: non-reference frames far from every target are skipped, and that never moves a
sampled frame (each stays the one on screen at its target, at most one frame period before it)."""

from __future__ import annotations

import numpy as np
import pytest

from featpipe.contracts import MediaNeeds
from featpipe.decode import TAIL_KEEP, DecodeParams, DecodeStats, iter_chunks, probe
from featpipe.decode.packets import StreamTally
from featpipe.decode.video import SkipWindow, VideoSource, skip_window
from media import write_clip

FPS = 30
POSITIONS = (0.1, 0.31, 0.5, 0.72, 0.9)  # five targets a second, on and between frame times


@pytest.fixture(scope="module")
def bframes(tmp_path_factory):
    """6 s at 30 fps, x264 medium (B-frames, some of them non-reference), a keyframe every 5 s."""
    path = write_clip(tmp_path_factory.mktemp("skip") / "b.mp4", seconds=6.0, fps=FPS, size=(96, 64),
                      preset="medium", keyint=5 * FPS)
    return str(path)


def test_the_rule_decodes_every_frame_that_can_be_on_screen_at_a_target() -> None:
    period = 1 / FPS
    rule = SkipWindow(1.0, (0.5,), period)
    for i in range(10 * FPS):
        t = i * period
        on_screen = any(t <= k + 0.5 < t + period for k in range(11))
        if on_screen:
            assert rule.needed(t, period), t
    needed = sum(rule.needed(i * period, period) for i in range(10 * FPS))
    assert needed <= 2 * 10 + 1  # about two frames a target: the rest may be skipped
    assert not rule.needed(0.2, period) and rule.needed(0.49, period) and not rule.needed(0.6, period)
    # a long frame (variable frame rate) that covers a target is kept, however early it starts
    assert rule.needed(0.2, 0.35) and not rule.needed(0.2, 0.2)
    assert SkipWindow(1.0, (0.5,), period, tail=9.0).needed(9.2, period)  # the stated end: decoded
    assert SkipWindow(0.05, (0.5,), period).needed(0.01, period)  # targets denser than frames: decode all


def _sample(path: str, params: DecodeParams, seek: bool):
    info = probe(path, params)
    needs = MediaNeeds(frame_positions=POSITIONS)
    v = VideoSource(info, [0], seek, StreamTally("video", info.video_stated),
                    skip_window(info, needs, params, TAIL_KEEP))
    frames, times, targets = [], [], []
    for k in range(int(info.duration)):
        for p in POSITIONS:
            targets.append(k + p)
            frames.append(v.frames_at(k + p, [0])[0])
            times.append(v.shown_time)
    v.close()
    return frames, np.array(times), np.array(targets), v.decoded


@pytest.mark.parametrize("seek", [False, True])
def test_skipping_decodes_less_and_samples_the_same_frames(bframes, seek) -> None:
    ref, ref_t, targets, all_decoded = _sample(bframes, DecodeParams(skip="never"), seek)
    got, got_t, _, decoded = _sample(bframes, DecodeParams(), seek)
    assert decoded < 0.9 * all_decoded, (decoded, all_decoded)  # non-reference frames were skipped
    period = 1 / FPS
    assert np.all(targets - got_t >= -1e-6) and np.all(targets - got_t < period), targets - got_t
    np.testing.assert_array_equal(got_t, ref_t)
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)


def test_skipping_keeps_the_honest_counts(bframes) -> None:
    def run(params: DecodeParams):
        info = probe(bframes, params)
        stats = DecodeStats()
        chunks = list(iter_chunks(info, MediaNeeds(frame_positions=(0.5,), audio=True), params, "v", 6, stats))
        return np.concatenate([c.frames[0.5] for c in chunks]), stats

    ref, ref_stats = run(DecodeParams(skip="never", chunk_segments=4))
    got, stats = run(DecodeParams(chunk_segments=4))
    np.testing.assert_array_equal(got, ref)
    assert stats.verdict(DecodeParams()).valid == ref_stats.verdict(DecodeParams()).valid == {"visual": 6, "audio": 6}
    assert stats.video.end == pytest.approx(ref_stats.video.end) and stats.video.packets == ref_stats.video.packets
    # the covered time too: skipped packets close the gaps between decoded frames, no holes appear
    np.testing.assert_allclose(stats.video.covered.array(), ref_stats.video.covered.array())
    assert stats.verdict(DecodeParams()).masks["visual"].all()


def test_packets_taken_without_a_frame_stay_a_hole() -> None:
    from featpipe.decode.packets import Coverage

    frames = Coverage(join=0.02)
    for t in np.arange(0, 1.0, 0.12):  # decoded reference frames
        frames.add(t, t + 0.04)
    frames.add(2.0, 3.0)  # decoded again after the stretch below
    skipped = Coverage(join=0.01)
    for t in np.arange(0.04, 1.0, 0.04):  # skipped frames between them: their gaps close
        if round(t / 0.04) % 3:
            skipped.add(t, t + 0.04)
    for t in np.arange(1.04, 2.0, 0.12):  # a stretch of skipped packets with no decoded frame: stays a hole
        skipped.add(t, t + 0.08)
    frames.fill(skipped)
    assert [[round(a, 2), round(b, 2)] for a, b in frames.spans] == [[0.0, 1.0], [2.0, 3.0]]


def test_decoder_threads_follow_a_one_thread_budget(bframes, monkeypatch) -> None:
    """A worker with one compute thread (OMP_NUM_THREADS=1) decodes on one thread, with the same
    frames; elsewhere FFmpeg's frame threads."""
    params = DecodeParams()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    info = probe(bframes, params)
    v = VideoSource(info, [0], False, StreamTally("video", info.video_stated))
    assert v.stream.codec_context.thread_count == 0 and "AUTO" in str(v.stream.thread_type)
    v.close()
    many = _sample(bframes, params, False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    v = VideoSource(info, [0], False, StreamTally("video", info.video_stated))
    assert v.stream.codec_context.thread_count == 1
    v.close()
    one = _sample(bframes, params, False)
    for a, b in zip(many[0], one[0]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(many[1], one[1])
