"""Real-world media through the decoder: B-frames, rotation, non-square pixels, covers, several
audio streams, a late start, audio gaps, truncated and corrupted files; valid counts and values.

Every fixture is written here with PyAV (tests/media.py); expected values come from what was
written (grey level = time, colours, sine frequencies), or from an independent naive decode.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from featpipe.decode import DecodeError, DecodeParams, DecodeStats, count_segments, iter_chunks, probe
from featpipe.extractors.base import AUDIO_RATE, MediaNeeds
from media import corrupt_packet, truncate, write_clip, write_pcm_frames

FRAMES = MediaNeeds(frame_positions=(0.5,))
NATIVE = MediaNeeds(frame_positions=(0.5,), native_frames=True)
AUDIO = MediaNeeds(audio=True)
BOTH = MediaNeeds(frame_positions=(0.5,), audio=True)


def decode(path, needs=BOTH, params=DecodeParams(fps=1, chunk_segments=4)):
    """(info, chunks, verdict) for ``path``, through the same calls the worker makes."""
    info = probe(str(path), params)
    planned, _ = count_segments(info.duration, params)
    stats = DecodeStats()
    chunks = list(iter_chunks(info, needs, params, "x", planned, stats))
    return info, chunks, stats.verdict(params)


def levels(chunks) -> np.ndarray:
    return np.concatenate([c.frames[0.5].mean(axis=(1, 2, 3)) for c in chunks])


def audio_of(chunks) -> np.ndarray:
    return np.concatenate([c.audio for c in chunks], axis=1)


def naive_last_time(path, kind: str) -> float:
    """End of the last frame an independent, plain PyAV loop decodes (stops at the first error)."""
    end = 0.0
    with av.open(str(path)) as c:
        s = getattr(c.streams, kind)[0]
        try:
            for f in c.decode(s):
                dur = f.samples / f.sample_rate if kind == "audio" else float(1 / s.average_rate)
                end = max(end, f.time + dur)
        except av.error.FFmpegError:
            pass
    return end


@pytest.mark.parametrize("seek", ["never", "always"])
def test_b_frames_give_the_frames_on_screen(tmp_path, seek):
    path = write_clip(tmp_path / "b.mp4", seconds=6, fps=10, preset="medium", keyint=10)
    with av.open(str(path)) as c:  # the fixture really has B-frames
        assert any(f.pict_type == av.video.frame.PictureType.B for f in c.decode(video=0))
    _, chunks, verdict = decode(path, FRAMES, DecodeParams(fps=1, chunk_segments=4, seek=seek))
    np.testing.assert_allclose(levels(chunks), [255 * (k + 0.5) / 6 for k in range(6)], atol=3)
    assert verdict.stored == 6 and verdict.valid == {"visual": 6}


@pytest.mark.parametrize("rotation, top, bottom, left, right", [
    (-90, "red", "blue", None, None),  # a phone filmed upright: stored landscape, turned clockwise
    (90, "blue", "red", None, None),
    (180, None, None, "blue", "red"),
])
def test_display_matrix_turns_frames_upright(tmp_path, rotation, top, bottom, left, right):
    path = write_clip(tmp_path / "r.mp4", seconds=2, fps=10, size=(64, 32), pattern="halves", rotation=rotation)
    info, chunks, _ = decode(path, NATIVE)
    frame = chunks[0].frames[0.5][0].astype(int)
    colour = {"red": (255, 0, 0), "blue": (0, 0, 255)}
    turned = rotation in (90, -90)
    assert frame.shape == ((64, 32, 3) if turned else (32, 64, 3))
    assert (info.display_width, info.display_height) == ((32, 64) if turned else (64, 32))
    h, w = frame.shape[:2]
    parts = {"top": frame[: h // 2 - 2], "bottom": frame[h // 2 + 2:],
             "left": frame[:, : w // 2 - 2], "right": frame[:, w // 2 + 2:]}
    for where, name in (("top", top), ("bottom", bottom), ("left", left), ("right", right)):
        if name is not None:
            np.testing.assert_allclose(parts[where].reshape(-1, 3).mean(0), colour[name], atol=12)
    assert info.facts()["rotation"] == {-90: 90, 90: 270, 180: 180}[rotation]


def test_mirror_and_scaled_frames_are_upright_too(tmp_path):
    path = write_clip(tmp_path / "m.mkv", seconds=2, fps=10, size=(64, 32), pattern="halves", hflip=True)
    info, chunks, _ = decode(path, FRAMES)
    frame = chunks[0].frames[0.5][0].astype(int)
    assert info.facts()["mirrored"] and frame[:, :28].mean(axis=(0, 1))[2] > 240  # blue now on the left
    rot = write_clip(tmp_path / "s.mp4", seconds=2, fps=10, size=(128, 64), pattern="halves", rotation=-90)
    _, chunks, _ = decode(rot, MediaNeeds(frame_positions=(0.5,), frame_short_side=32))
    small = chunks[0].frames[0.5][0].astype(int)
    assert small.shape == (64, 32, 3)  # short side 32 of the displayed 64x128
    assert small[:28].mean(axis=(0, 1))[0] > 240 and small[36:].mean(axis=(0, 1))[2] > 240


def test_non_square_pixels_reach_extractors_at_display_size(tmp_path):
    path = write_clip(tmp_path / "sar.mp4", seconds=2, fps=10, size=(32, 32), pattern="halves", sar=Fraction(2, 1))
    info, chunks, _ = decode(path, NATIVE)
    frame = chunks[0].frames[0.5][0].astype(int)
    assert (info.display_width, info.display_height) == (64, 32) and frame.shape == (32, 64, 3)
    assert frame[:, :28].mean(axis=(0, 1))[0] > 240 and frame[:, 36:].mean(axis=(0, 1))[2] > 240


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_cover_picture_is_never_the_video(tmp_path, ext):
    path = write_clip(tmp_path / f"c.{ext}", seconds=3, fps=10, cover=True)
    info, chunks, verdict = decode(path, FRAMES)
    assert info.video_codec == "h264" and (info.width, info.height) == (64, 48)
    np.testing.assert_allclose(levels(chunks), [255 * (k + 0.5) / 3 for k in range(3)], atol=3)
    assert verdict.valid == {"visual": 3}


def test_default_audio_stream_is_chosen_and_an_index_can_pick_another(tmp_path):
    path = write_clip(tmp_path / "two.mkv", seconds=3, fps=10, second_audio=True, freq=300)
    info, chunks, _ = decode(path, AUDIO)
    assert info.audio_channels == 1  # the second stream: mono, 880 Hz, marked default
    mid = audio_of(chunks)[0, AUDIO_RATE: 2 * AUDIO_RATE]
    assert np.argmax(np.abs(np.fft.rfft(mid))) == pytest.approx(880, abs=2)
    first = next(s.index for s in av.open(str(path)).streams.audio)
    info, chunks, _ = decode(path, AUDIO, DecodeParams(fps=1, audio_stream=first))
    assert info.audio_channels == 2
    mid = audio_of(chunks)[0, AUDIO_RATE: 2 * AUDIO_RATE]
    assert np.argmax(np.abs(np.fft.rfft(mid))) == pytest.approx(300, abs=2)
    with pytest.raises(DecodeError, match="not a video stream"):
        probe(str(path), DecodeParams(video_stream=first))


def test_a_stream_starting_late_stays_on_the_timeline(tmp_path):
    path = write_clip(tmp_path / "late.mp4", seconds=5, fps=10, video_start=2.5, audio_seconds=7.5)
    _, chunks, verdict = decode(path, BOTH)
    got = levels(chunks)
    assert len(got) == 8
    # before 2.5 s the first frame is held; at 3.5 s the frame written 1.0 s into the video shows
    np.testing.assert_allclose(got[[0, 1]], 0, atol=3)
    shown = [min(round((k + 0.5 - 2.5) * 10), 49) for k in range(3, 8)]  # frame index on screen (50 frames)
    np.testing.assert_allclose(got[3:], [255 * (i / 10) / 5 for i in shown], atol=3)
    assert verdict.valid == {"visual": 8, "audio": 8}
    assert verdict.streams["video"]["start"] == pytest.approx(2.5)


def test_audio_gap_is_silence_and_later_audio_keeps_its_time(tmp_path):
    path = write_clip(tmp_path / "gap.mp4", seconds=5, fps=10, channels=1, freq=250, audio_gap=(2.0, 3.0))
    _, chunks, verdict = decode(path, AUDIO)
    x = audio_of(chunks)[0]
    a = verdict.streams["audio"]
    assert a["gaps"] == 1 and a["gap_seconds"] == pytest.approx(1.0, abs=0.03)
    assert np.abs(x[int(2.1 * AUDIO_RATE): int(2.9 * AUDIO_RATE)]).max() < 1e-3
    t = np.arange(int(3.5 * AUDIO_RATE), int(4.5 * AUDIO_RATE)) / AUDIO_RATE
    ref = 0.8 * np.sin(2 * np.pi * 250 * t)  # what was written at those times: same phase, not shifted
    seg = x[int(3.5 * AUDIO_RATE): int(4.5 * AUDIO_RATE)]
    assert np.corrcoef(seg, ref)[0, 1] > 0.99
    assert verdict.valid == {"audio": 5}


def test_overlapping_audio_is_trimmed_and_later_audio_keeps_its_time(tmp_path):
    path = write_pcm_frames(tmp_path / "ov.mkv", [0.0, 0.5, 0.9, 1.4, 1.9, 3.0])  # 0.1 s overlap, a 0.6 s gap
    _, chunks, verdict = decode(path, AUDIO)
    a = verdict.streams["audio"]
    assert a["overlap_seconds"] == pytest.approx(0.1, abs=0.002) and a["gaps"] == 1
    assert a["gap_seconds"] == pytest.approx(0.6, abs=0.002) and verdict.valid == {"audio": 4}  # ends at 3.5 s
    x = audio_of(chunks)[0]
    for lo, hi in ((0.0, 2.4), (3.0, 3.5)):  # every sample where its timestamp says
        t = np.arange(int(lo * AUDIO_RATE), int(hi * AUDIO_RATE)) / AUDIO_RATE
        np.testing.assert_allclose(x[int(lo * AUDIO_RATE): int(hi * AUDIO_RATE)], 0.5 * np.sin(2 * np.pi * 200 * t),
                                   atol=2e-3)
    assert np.abs(x[int(2.41 * AUDIO_RATE): int(2.99 * AUDIO_RATE)]).max() == 0


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_truncated_file_commits_only_what_decodes(tmp_path, ext):
    full = write_clip(tmp_path / f"full.{ext}", seconds=20, fps=10, options={"movflags": "faststart"} if ext == "mp4" else None)
    cut = truncate(full, tmp_path / f"cut.{ext}", 0.75)
    info, chunks, verdict = decode(cut, BOTH)
    assert info.duration == pytest.approx(20, abs=0.1)  # the header still promises 20 s
    for kind, modality in (("video", "visual"), ("audio", "audio")):
        end = naive_last_time(cut, kind)
        assert 10 < end < 19.5
        assert verdict.valid[modality] == int(np.floor(end + 0.5))  # segments whose centre decoded
        assert verdict.streams[kind]["stated"] == pytest.approx(20, abs=0.1)
        assert verdict.streams[kind]["end"] == pytest.approx(end, abs=0.05)
    assert verdict.stored == max(verdict.valid.values()) < 20
    assert sum(c.count for c in chunks) <= verdict.stored + 4  # decoding stopped with the data


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_file_with_little_decodable_data_fails_with_both_numbers(tmp_path, ext):
    full = write_clip(tmp_path / f"full.{ext}", seconds=20, fps=10, options={"movflags": "faststart"} if ext == "mp4" else None)
    cut = truncate(full, tmp_path / f"cut.{ext}", 0.3)
    with pytest.raises(DecodeError, match=r"decoded \d+\.\d\d s of the 20\.\d\d s the file states") as err:
        decode(cut, BOTH)
    assert "\n" not in str(err.value)
    looser = DecodeParams(fps=1, min_decoded=0.2)
    _, _, verdict = decode(cut, BOTH, looser)
    assert verdict.valid["audio"] < verdict.valid["visual"] < 20


@pytest.mark.parametrize("ext, kind", [("mp4", "audio"), ("mkv", "audio"), ("mp4", "video"), ("mkv", "video")])
def test_a_corrupt_packet_is_skipped_and_counted(tmp_path, ext, kind):
    src = write_clip(tmp_path / f"s.{ext}", seconds=6, fps=10, preset="medium", channels=1, freq=250)
    bad = tmp_path / f"bad.{ext}"
    at = corrupt_packet(src, bad, kind, 2.0)
    with av.open(str(bad)) as c, pytest.raises(av.error.FFmpegError):  # what failed the whole video before
        for _ in c.decode(getattr(c.streams, kind)[0]):
            pass
    _, chunks, verdict = decode(bad, BOTH)
    s = verdict.streams[kind]
    assert s["bad_packets"] >= 1 and verdict.valid == {"visual": 6, "audio": 6}
    got = levels(chunks)  # frames around the skipped packet stay on the timeline
    ok = [k for k in range(6) if not (at - 1 < k + 0.5 < at + 1)] if kind == "video" else range(6)
    np.testing.assert_allclose(got[ok], [255 * (k + 0.5) / 6 for k in ok], atol=3)
    if kind == "audio":  # the lost frame is a hole of silence; the sine after it keeps its phase
        assert s["gaps"] >= 1 and s["gap_seconds"] < 0.1
        x = audio_of(chunks)[0]
        t = np.arange(int(4 * AUDIO_RATE), int(5 * AUDIO_RATE)) / AUDIO_RATE
        assert np.corrcoef(x[int(4 * AUDIO_RATE): int(5 * AUDIO_RATE)], np.sin(2 * np.pi * 250 * t))[0, 1] > 0.99
    strict = DecodeParams(fps=1, max_bad_packets=0.0)
    with pytest.raises(DecodeError, match=f"of \\d+ {kind} packets could not be decoded"):
        decode(bad, BOTH, strict)


def test_tail_segment_counts_only_when_its_centre_was_recorded():
    p = DecodeParams(fps=1)
    assert count_segments(10.49, p) == (10, 10)  # centre of segment 10 (10.5 s) not recorded
    assert count_segments(10.5, p) == (11, 11)
    assert count_segments(10.3, p) == (10, 10)  # the old quarter-segment rule kept this one
    assert count_segments(0.2, p) == (1, 1)


def test_stream_without_decoder_fails_with_a_sentence(tmp_path):
    path = write_clip(tmp_path / "v.mp4", seconds=2, fps=10, audio=False)
    with pytest.raises(DecodeError, match="no audio stream"):
        decode(path, BOTH)


def test_hop_outputs_use_one_rounding_rule_for_stored_and_valid_rows():
    from featpipe.decode import rows_before

    assert rows_before(10.0, 0.1) == 100  # centres 0.0 .. 9.9
    assert rows_before(10.0, 0.1, 0.05) == 100  # centres 0.05 .. 9.95
    assert rows_before(9.96, 0.1) == 100 and rows_before(9.9, 0.1) == 99  # a centre at the end is not before it
    assert rows_before(0.0, 0.1) == 0


def test_extractors_needing_no_media_get_the_stated_segments(tmp_path):
    path = write_clip(tmp_path / "a.mp4", seconds=4, fps=10)
    _, chunks, verdict = decode(path, MediaNeeds())
    assert sum(c.count for c in chunks) == 4 and verdict.stored == 4 and verdict.valid == {}
