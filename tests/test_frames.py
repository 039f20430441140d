"""The frame-level rule (featpipe/extractors/frames.py) and the shared resampling (rates.py).

A toy encoder whose frame is the mean of the samples of its receptive field makes every frame's
value its own centre time on a ramp, so placement, windows, pooling and chunking are checked
exactly, without a model.
"""

from __future__ import annotations

import numpy as np
import pytest

from featpipe.extractors import Chunk, ExtractOptions, ExtractorError
from featpipe.extractors import rates
from featpipe.extractors.frames import (
    FrameGeometry,
    FramewiseExtractor,
    conv_geometry,
    parse_layers,
    plan_windows,
    pool_segments,
    window_samples,
)

SR = 48_000


class Toy(FramewiseExtractor):
    """16 kHz, a (10, 3, 3) / (5, 2, 2) conv stack: frame = mean of its receptive field; 2 states."""

    name = "toy"
    option_specs = FramewiseExtractor.frame_options(2.0, 0.5, "all")
    kernels, strides = (10, 3, 3), (5, 2, 2)
    calls = 0

    @property
    def feature_name(self) -> str:
        return "toy"

    def geometry(self) -> FrameGeometry:
        return conv_geometry(16_000, self.kernels, self.strides)

    def n_states(self) -> int:
        return 2

    def dim(self) -> int:
        return 1

    def encode(self, batch: np.ndarray) -> np.ndarray:
        type(self).calls += len(batch)
        g = self.geometry()
        t = (batch.shape[1] - g.min_samples) // g.stride + 1
        idx = np.arange(t)[:, None] * g.stride + np.arange(g.min_samples)[None, :]
        mean = batch[:, idx].mean(axis=2)  # (B, T)
        return np.stack([mean, 2 * mean], axis=1)[..., None].astype(np.float32)


def chunk_of(audio: np.ndarray, first: int, count: int, seg: float, ctx: float) -> Chunk:
    """The chunk the decoder would deliver (zeros outside the recording)."""
    s, e = round((first * seg - ctx) * SR), round(((first + count) * seg + ctx) * SR)
    out = np.zeros((audio.shape[0], e - s), np.float32)
    lo, hi = max(s, 0), min(e, audio.shape[1])
    out[:, lo - s : hi - s] = audio[:, lo:hi]
    return Chunk("v", first, count, seg, audio.shape[1] / SR, audio=out, audio_context=ctx)


def toy(**opts) -> Toy:
    return Toy("", ExtractOptions(extra=tuple((k, str(v)) for k, v in opts.items())))


def test_conv_geometry_is_the_receptive_field_centre():
    g = conv_geometry(24_000, (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))  # wav2vec2 / HuBERT / MERT
    assert (g.stride, g.min_samples, g.offset) == (320, 400, 199.5) and g.frame_rate == 75.0
    assert conv_geometry(16_000, (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)).frame_rate == 50.0


def test_windows_tile_the_recording_on_one_grid():
    g = conv_geometry(16_000, (10, 3, 3), (5, 2, 2))  # stride 20
    length, hop, ctx = window_samples(2.0, 0.5, g)
    assert (length, hop, ctx) == (32_000, 16_000, 8_000)
    n = 16_000 * 7 + 123
    ws = plan_windows(n, 0, n, 2.0, 0.5, g)
    assert ws[0].start == 0 and all(w.start % 20 == 0 and w.start + w.length <= n for w in ws)
    assert [w.keep_lo for w in ws] == [j * hop for j in range(len(ws))] and ws[-1].keep_hi >= n
    for w in ws[1:]:  # every kept frame has the full context in its window; at the end it is shifted
        fits = w.keep_lo - ctx + length <= n
        assert w.length == length and (w.start == w.keep_lo - ctx if fits else w.start + length > n - 20)
    assert ws[-1].start + ws[-1].length > n - 20 and ws[-1].length == length  # shifted, not padded
    short = plan_windows(10_000, 0, 10_000, 2.0, 0.5, g)
    assert [(w.start, w.length) for w in short] == [(0, 10_000)]  # one window: the whole recording


def test_pool_segments_mean_and_nearest():
    centres = np.array([0.1, 0.2, 0.6, 1.7])
    frames = np.arange(4, dtype=np.float32).reshape(1, 4, 1)
    rows = pool_segments(centres, frames, 0, 4, 0.5)
    np.testing.assert_allclose(rows[:, 0, 0], [0.5, 2.0, 3.0, 3.0])  # [0,.5): mean; [1,1.5): nearest is 1.7
    assert pool_segments(np.zeros(0), np.zeros((1, 0, 1), np.float32), 0, 2, 1.0).shape == (2, 1, 1)


def test_parse_layers():
    assert parse_layers("all", 13) == tuple(range(13)) and parse_layers("last", 13) == (12,)
    assert parse_layers("0, 6,12", 13) == (0, 6, 12)
    for bad in ("13", "x", "1,1", "-1", ""):
        with pytest.raises(ExtractorError):
            parse_layers(bad, 13)


def test_rows_are_the_mean_centre_time_of_the_frames_in_each_segment():
    n = round(7.3 * SR)
    ramp = (np.arange(n) / SR).astype(np.float64)
    audio = np.stack([ramp, ramp]).astype(np.float32)
    ext = toy()
    ctx = ext.needs().audio_context
    seg = 0.25
    count = int(np.ceil(7.3 / seg))
    rows = ext.extract(chunk_of(audio, 0, count, seg, ctx))["toy"]
    assert rows.shape == (count, 2, 1)
    # independent: frame i of the 16 kHz recording reads samples 20i .. 20i+39 (1 + 9 + 2*5 + 2*10),
    # centred on sample 20i + 19.5
    n16 = round(7.3 * 16_000)
    c = (20 * np.arange((n16 - 40) // 20 + 1) + 19.5) / 16_000
    want = np.array([c[(c >= k * seg) & (c < (k + 1) * seg)].mean() for k in range(count)])
    inner = slice(1, count - 1)  # the ramp's edges meet the resampler's zeros outside the recording
    np.testing.assert_allclose(rows[inner, 0, 0], want[inner], atol=2e-5)
    np.testing.assert_allclose(rows[:, 1, 0], 2 * rows[:, 0, 0], rtol=1e-6)
    # half a frame off would be seen: 10 samples at 16 kHz = 0.6 ms, against a tolerance of 0.02 ms
    assert np.abs(want[inner] + 10 / 16_000 - rows[inner, 0, 0]).min() > 3e-4


@pytest.mark.parametrize("chunk_len", [1, 3, 5])
def test_chunked_equals_whole_and_windows_are_encoded_once(chunk_len):
    rng = np.random.default_rng(0)
    audio = rng.uniform(-0.5, 0.5, (2, round(9.1 * SR))).astype(np.float32)
    ext = toy(layers="last")
    ctx = ext.needs().audio_context
    whole = ext.extract(chunk_of(audio, 0, 10, 1.0, ctx))["toy"]
    assert whole.shape == (10, 1)
    Toy.calls = 0
    ext2 = toy(layers="last")
    parts = np.concatenate(
        [ext2.extract(chunk_of(audio, k, min(chunk_len, 10 - k), 1.0, ctx))["toy"] for k in range(0, 10, chunk_len)]
    )
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-9)  # float32 sums in another order
    n16 = round(9.1 * 16_000)
    distinct = {(w.start, w.length) for w in plan_windows(n16, 0, n16, 2.0, 0.5, ext.geometry())}
    assert Toy.calls == len(distinct)  # each window encoded once (the last two share one shifted window)


def test_options_shapes_and_scoped_keys():
    ext = toy()
    [out] = ext.outputs()
    assert out.shape == (2, 1) and out.attrs["layers"] == [0, 1] and out.attrs["hop_s"] == 1.0
    assert toy(layers="last").outputs()[0].shape == (1,)
    scoped = Toy("", ExtractOptions(extra=(("window", "3"), ("toy.window", "4"))))
    assert scoped.window_s == 4.0
    for bad in ({"window": 1, "context": 0.5}, {"window": -1}, {"layers": "7"}):
        with pytest.raises(ExtractorError):
            toy(**bad).outputs()


def test_resampled_once_per_chunk_and_rate():
    audio = np.random.default_rng(1).uniform(-0.5, 0.5, (2, SR * 3)).astype(np.float32)
    chunk = chunk_of(audio, 0, 3, 1.0, 0.5)
    before = rates.calls["resampled"]
    a, n0 = rates.audio_at(chunk, 16_000)
    b, _ = rates.audio_at(chunk, 16_000)
    c, m0 = rates.audio_at(chunk, 24_000)
    assert a is b and rates.calls["resampled"] - before == 2
    assert n0 == -8000 and m0 == -12000 and not a.flags.writeable
    # an anti-aliased resampler on an absolute grid: a 1 kHz tone lands where it should
    tone = np.sin(2 * np.pi * 1000 * np.arange(SR * 2) / SR).astype(np.float32)
    y, y0 = rates.resample(tone[101:], 101, 24_000)
    t = (y0 + np.arange(len(y))) / 24_000
    np.testing.assert_allclose(y[200:-200], np.sin(2 * np.pi * 1000 * t[200:-200]), atol=1e-4)
    # nothing above the new Nyquist frequency survives (aliasing): 13 kHz at 24 kHz
    hi = np.sin(2 * np.pi * 13_000 * np.arange(SR) / SR)
    assert np.abs(rates.resample(hi, 0, 24_000)[0][500:-500]).max() < 1e-3
