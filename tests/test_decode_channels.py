"""Audio with 9 and 10 channels of PCM (issue #22): FFmpeg has no default layout for 9, so no channel is
known to be left or right and swresample refuses to turn it into stereo; featpipe mixes such channels to
their mean first instead of counting every packet as undecodable. Files are written here with PyAV."""

from __future__ import annotations

import av
import numpy as np
import pytest

from featpipe.contracts import AUDIO_RATE, MediaNeeds
from featpipe.decode import DecodeParams, count_segments, iter_chunks, probe
from featpipe.decode.timeline import DecodeStats

RATE, SECONDS = 48000, 2


def write_pcm(path, channels: int) -> np.ndarray:
    """PCM s16 with channel c a sine of 100 * (c + 1) Hz at 0.05 amplitude; returns (channels, n) float."""
    layout = av.AudioLayout(f"{channels} channels").name
    t = np.arange(RATE * SECONDS) / RATE
    x = np.stack([0.05 * np.sin(2 * np.pi * 100 * (c + 1) * t) for c in range(channels)])
    pcm = np.round(x * 32767).astype(np.int16)
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=RATE, layout=layout)
        for i in range(0, pcm.shape[1], 4800):
            block = pcm[:, i : i + 4800]
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(block.T).reshape(1, -1), format="s16", layout=layout)
            fr.sample_rate, fr.pts = RATE, i
            for pk in s.encode(fr):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    return pcm.astype(np.float32) / 32768


@pytest.mark.parametrize("channels", [9, 10])
@pytest.mark.parametrize("ext", ["wav", "mkv"])
def test_many_channel_pcm_decodes(tmp_path, channels, ext):
    path = tmp_path / f"pcm{channels}.{ext}"
    x = write_pcm(path, channels)
    info = probe(str(path))
    assert info.audio_channels == channels
    params = DecodeParams(fps=1)
    stats = DecodeStats()
    chunks = list(
        iter_chunks(info, MediaNeeds(audio=True), params, "x", count_segments(info.duration, params)[0], stats)
    )
    out = np.concatenate([c.audio for c in chunks], axis=1)
    assert stats.audio.bad == 0
    assert out.shape[0] == 2 and abs(out.shape[1] - SECONDS * AUDIO_RATE) <= 2048
    got = out[:, 4800:-4800]
    assert float(np.abs(got).max()) > 0.01  # sound, not the silence of skipped packets
    if channels == 9:  # no layout: the mean of the channels (none is known to be left or right) in both
        want = float(np.sqrt((x.mean(axis=0) ** 2).mean()))
        assert np.allclose(got[0], got[1], atol=1e-4)
        assert abs(float(np.sqrt((got[0] ** 2).mean())) - want) < 0.05 * want


def test_nine_channels_reach_an_audio_copy_too(tmp_path):
    """A copy an extractor asks for (another rate and layout, its own resampler) gets the mixed frames."""
    from featpipe.contracts import AudioCopy
    from featpipe.decode.audio import audio_blocks
    from featpipe.decode.packets import StreamTally

    path = tmp_path / "pcm9.wav"
    write_pcm(path, 9)
    info = probe(str(path))
    tally = StreamTally("audio", info.duration)
    copy = [b for i, b in audio_blocks(info, tally, (AudioCopy(16000, "mono", "s16"),)) if i == 1]
    samples = sum(b if isinstance(b, int) else b.shape[1] for b in copy)
    assert tally.bad == 0 and abs(samples - SECONDS * 16000) <= 1024
    assert max(float(np.abs(b).max()) for b in copy if not isinstance(b, int)) > 0.01
