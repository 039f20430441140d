"""The decoder's audio copies (``MediaNeeds.audio_copies``): FFmpeg's resampler from the source frames,
on the same timeline as the 48 kHz audio, chunk by chunk."""

from __future__ import annotations

import av
import numpy as np
from media import write_clip

from featpipe.contracts import AudioCopy, MediaNeeds
from featpipe.decode import DecodeParams, count_segments, iter_chunks, merge_needs, probe

COPY = AudioCopy(44100, "stereo", "s16")


def decode(path, chunk_segments: int, ctx: float = 0.3):
    info = probe(str(path))
    params = DecodeParams(fps=1.0, chunk_segments=chunk_segments)
    _, valid = count_segments(info.duration, params)
    needs = merge_needs([MediaNeeds(audio=True, audio_context=ctx), MediaNeeds(audio=True, audio_copies=(COPY,))])
    assert needs.audio_copies == (COPY,)
    return list(iter_chunks(info, needs, params, "v", valid))


def ffmpeg_copy(path) -> np.ndarray:
    """The source through one PyAV resampler (what ``ffmpeg -ar 44100 -ac 2 -f s16le`` writes), / 32768."""
    with av.open(str(path)) as c:
        r = av.AudioResampler(format="s16", layout="stereo", rate=44100)
        out = [o.to_ndarray() for f in c.decode(audio=0) for o in r.resample(f)]
        out += [o.to_ndarray() for o in r.resample(None)]
    return np.concatenate(out, axis=1).reshape(-1, 2).T / 32768.0


def test_copy_is_ffmpegs_resampling_on_the_same_timeline(tmp_path):
    path = write_clip(tmp_path / "a.mp4", seconds=4.0, rate=22050, channels=1, freq=700.0)
    chunks = decode(path, 16)
    (whole,) = chunks
    got = whole.audio_copies[COPY]
    ctx = whole.audio_context
    lo = round(ctx * 44100)  # the copy's column of time 0
    ref = ffmpeg_copy(path)
    n = min(ref.shape[1], round(3.9 * 44100))
    np.testing.assert_array_equal(got[:, lo : lo + n], ref[:, :n])  # mono source: ffmpeg's upmix, bit for bit
    assert np.allclose(got[0], got[1]) and np.abs(got[:, :lo]).max() == 0  # zeros before time 0
    # the same instants as the 48 kHz audio: a 700 Hz tone of the same phase, 0.7071 x the mono level
    t48 = np.arange(whole.audio.shape[1]) / 48000 - ctx
    t44 = np.arange(got.shape[1]) / 44100 - ctx
    mid48, mid44 = (t48 > 1) & (t48 < 3), (t44 > 1) & (t44 < 3)
    p48 = np.angle(np.sum(whole.audio[0][mid48] * np.exp(-2j * np.pi * 700 * t48[mid48])))
    p44 = np.angle(np.sum(got[0][mid44] * np.exp(-2j * np.pi * 700 * t44[mid44])))
    assert abs(np.angle(np.exp(1j * (p48 - p44)))) < 2 * np.pi * 700 * 20e-6  # within 20 us
    ratio = np.abs(got[0][mid44]).max() / np.abs(whole.audio[0][mid48]).max()
    assert abs(ratio - 0.7071) < 0.01


def test_copy_chunked_equals_whole_and_gaps_stay_aligned(tmp_path):
    path = write_clip(tmp_path / "g.mp4", seconds=5.0, rate=48000, channels=2, audio_gap=(2.0, 2.6))
    whole = decode(path, 16)[0]
    parts = decode(path, 2)
    ctx = whole.audio_context
    for c in parts:
        a0 = round((c.t0 - ctx) * 44100) - round(-ctx * 44100)  # offset into the whole chunk's copy
        want = whole.audio_copies[COPY][:, a0 : a0 + c.audio_copies[COPY].shape[1]]
        np.testing.assert_array_equal(c.audio_copies[COPY][:, : want.shape[1]], want)
    # the hole is silence in both tracks at the same time
    t48 = np.arange(whole.audio.shape[1]) / 48000 - ctx
    t44 = np.arange(whole.audio_copies[COPY].shape[1]) / 44100 - ctx
    for t, x in ((t48, whole.audio), (t44, whole.audio_copies[COPY])):
        gap = (t > 2.1) & (t < 2.5)
        assert np.abs(x[:, gap]).max() == 0 and np.abs(x[:, (t > 1.5) & (t < 1.9)]).max() > 0.1
