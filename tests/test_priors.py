"""priors: synthetic signals with known answers, built straight into Chunk objects."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featpipe.extractors import dsp
from featpipe.extractors import AUDIO_RATE as R
from featpipe.extractors import Chunk, ExtractorError, build
from featpipe.extractors.priors import CONTEXT_S, DIM, LAYOUT, N_FFT, N_ILD, SLICES, Priors


@pytest.fixture(scope="module")
def ex() -> Priors:
    e = build("priors")
    assert isinstance(e, Priors)
    return e


def chunk(sig: np.ndarray, first: int = 0, count: int | None = None, seg_len: float = 1.0,
          ctx: float = CONTEXT_S) -> Chunk:
    """What the decoder hands over: segments first..first+count-1 plus ``ctx`` s each side,
    zeros outside the recording."""
    sig = np.atleast_2d(sig).astype(np.float32)
    total = sig.shape[1] / R
    if count is None:
        count = int(round(total / seg_len)) - first
    a0, a1 = round((first * seg_len - ctx) * R), round(((first + count) * seg_len + ctx) * R)
    audio = np.zeros((sig.shape[0], a1 - a0), np.float32)
    lo, hi = max(a0, 0), min(a1, sig.shape[1])
    audio[:, lo - a0 : hi - a0] = sig[:, lo:hi]
    return Chunk("v", first, count, seg_len, total, audio=audio, audio_context=ctx)


def sine(freq: float, seconds: float, amp: float = 0.5) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * R)) / R)


def feat(f: np.ndarray, name: str) -> np.ndarray:
    return f[:, SLICES[name]]


def test_layout_matches_output(ex: Priors) -> None:
    assert [a for _, a, _ in LAYOUT] == [0] + [b for _, _, b in LAYOUT[:-1]]  # contiguous
    (spec,) = ex.outputs()
    assert spec.name == "priors" and spec.shape == (DIM,) and spec.dtype == "float16"
    assert json.loads(spec.attrs["layout"]) == [list(t) for t in LAYOUT]
    assert spec.layout.split()[0] == "rms_db[0:1]" and spec.layout.endswith(f"stereo[{DIM - 1}:{DIM}]")
    assert ex.needs().audio and ex.needs().audio_context == CONTEXT_S and not ex.needs().video
    out = ex.extract(chunk(sine(440, 3)))
    assert set(out) == {"priors"} and out["priors"].shape == (3, DIM)
    assert out["priors"].dtype == np.float32


def test_sine_440_chroma_centroid_and_mel(ex: Priors) -> None:
    f = ex.compute(chunk(sine(440, 2)))
    chroma = feat(f, "chroma")
    assert np.all(chroma.argmax(axis=1) == 9)  # A
    assert np.all(chroma[:, 9] > 0.8)
    np.testing.assert_allclose(chroma.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(feat(f, "centroid_khz"), 0.44, atol=0.005)
    np.testing.assert_allclose(feat(f, "rms_db"), 20 * np.log10(0.5 / np.sqrt(2)), atol=0.01)
    fb = dsp.mel_filterbank(40, N_FFT, R, 20.0, 20_000.0)
    band = fb[round(440 * N_FFT / R)].argmax()
    assert np.all(feat(f, "logmel_db").argmax(axis=1) == band)
    assert np.all(feat(f, "flatness") < 0.01)
    assert np.all(feat(f, "stereo") == 0) and np.all(feat(f, "ild_db") == 0)
    # an E (class 4) is told apart from its neighbours too
    assert np.all(feat(ex.compute(chunk(sine(329.63, 1))), "chroma").argmax(axis=1) == 4)


def test_k_weighted_loudness_calibration(ex: Priors) -> None:
    # BS.1770: a full-scale 997 Hz sine in one channel reads -3.01 LKFS
    f = ex.compute(chunk(sine(997, 2, amp=1.0)))
    np.testing.assert_allclose(feat(f, "loudness_lkfs"), -3.01, atol=0.05)
    # ... and the same in both channels of a stereo file +3 dB (channel powers add)
    s = sine(997, 2, amp=1.0)
    np.testing.assert_allclose(feat(ex.compute(chunk(np.stack([s, s]))), "loudness_lkfs"), 0.0, atol=0.05)


@pytest.mark.parametrize("stereo", [False, True])
def test_silence_is_finite(ex: Priors, stereo: bool) -> None:
    c = chunk(np.zeros((2 if stereo else 1, 3 * R)))
    out = ex.extract(c)["priors"]
    assert np.all(np.isfinite(out))
    f = ex.compute(c)
    assert np.all(feat(f, "rms_db") == dsp.DB_FLOOR)
    assert np.all(feat(f, "onset_count") == 0) and np.all(feat(f, "chroma") == 0)
    assert np.all(feat(f, "ild_db") == 0) and np.all(feat(f, "lr_corr") == 0)
    assert np.all(feat(f, "stereo") == float(stereo))


def test_louder_input_adds_the_expected_db(ex: Priors) -> None:
    rng = np.random.default_rng(1)
    x = 0.05 * rng.standard_normal((2, 3 * R)) + sine(440, 3, amp=0.1)
    quiet, loud = ex.compute(chunk(x)), ex.compute(chunk(4 * x))
    gain = 20 * np.log10(4)
    for name in ("rms_db", "loudness_lkfs", "logmel_db"):
        np.testing.assert_allclose(feat(loud, name) - feat(quiet, name), gain, atol=0.01)
    for name in ("centroid_khz", "flatness", "chroma", "ild_db", "onset_count", "onset_mean"):
        np.testing.assert_allclose(feat(loud, name), feat(quiet, name), atol=1e-4)


@pytest.mark.parametrize("noise", [0.0, 1e-3])
def test_click_onsets_counted_per_segment(ex: Priors, noise: float) -> None:
    x = noise * np.random.default_rng(2).standard_normal(4 * R)
    for t in (0.25, 0.5, 0.75, 1.5, 3.3, 3.6):
        x[int(t * R)] += 1.0
    f = ex.compute(chunk(x))
    np.testing.assert_array_equal(feat(f, "onset_count")[:, 0], [3, 1, 0, 2])
    assert np.all(feat(f, "onset_max")[[0, 1, 3], 0] > 10 * feat(f, "onset_max")[2, 0] + 1)


@pytest.mark.parametrize("offset", [0, 170, 333])
def test_cut_into_silence_is_not_an_onset(ex: Priors, offset: int) -> None:
    n = 2 * R + offset  # music stops abruptly inside segment 2, as most clips end
    x = np.zeros(3 * R)
    x[:n] = sine(440, 3)[:n] + sine(1234, 3, 0.2)[:n]
    x[R // 2] += 1.0  # one real onset, to show the detector is on
    np.testing.assert_array_equal(feat(ex.compute(chunk(x)), "onset_count")[:, 0], [1, 0, 0])


def test_steady_noise_has_no_onsets(ex: Priors) -> None:
    x = 0.1 * np.random.default_rng(3).standard_normal((2, 3 * R))
    assert np.all(feat(ex.compute(chunk(x)), "onset_count") == 0)


def test_panned_sources_give_signed_ild_in_their_bands(ex: Priors) -> None:
    low, high = sine(200, 2), sine(6000, 2)
    left = 1.0 * low + 0.5 * high  # low tone panned left (+6 dB), high tone right (-6 dB)
    right = 0.5 * low + 1.0 * high
    f = ex.compute(chunk(np.stack([left, right])))
    fb = dsp.mel_filterbank(N_ILD, N_FFT, R, 20.0, 20_000.0)
    b_low, b_high = fb[round(200 * N_FFT / R)].argmax(), fb[round(6000 * N_FFT / R)].argmax()
    assert b_low != b_high
    ild = feat(f, "ild_db")
    np.testing.assert_allclose(ild[:, b_low], 20 * np.log10(2), atol=0.3)
    np.testing.assert_allclose(ild[:, b_high], -20 * np.log10(2), atol=0.3)
    np.testing.assert_allclose(feat(f, "ild_overall_db"), 0.0, atol=0.05)  # equal power overall
    assert np.all(feat(f, "stereo") == 1)
    # a whole source hard-ish left: positive everywhere it has energy, and overall
    noise = np.random.default_rng(4).standard_normal(2 * R) * 0.1
    g = ex.compute(chunk(np.stack([noise, 0.25 * noise])))
    np.testing.assert_allclose(feat(g, "ild_db"), 20 * np.log10(4), atol=0.05)
    np.testing.assert_allclose(feat(g, "ild_overall_db"), 20 * np.log10(4), atol=0.01)
    np.testing.assert_allclose(feat(g, "lr_corr"), 1.0, atol=1e-5)
    h = ex.compute(chunk(np.stack([0.25 * noise, noise])))
    np.testing.assert_allclose(feat(h, "ild_overall_db"), -20 * np.log10(4), atol=0.01)


@pytest.mark.parametrize(
    "seg_len, cuts", [(1.0, (0, 2, 3, 6)), (0.4, (0, 7, 15)), (1 / 29.97, (0, 1, 2, 3, 97, 180))]
)
def test_chunked_equals_whole(ex: Priors, seg_len: float, cuts: tuple[int, ...]) -> None:
    rng = np.random.default_rng(5)
    n = int(6 * R)
    x = 0.02 * rng.standard_normal((2, n)) + np.stack([sine(330, 6, 0.3), sine(523, 6, 0.2)])
    for t in rng.uniform(0.05, 5.95, 20):  # clicks, some close to segment edges
        x[:, int(t * R)] += 0.8
    x[:, int(2.0 * R) - 300] += 1.0
    total = round(6 / seg_len)
    whole = ex.compute(chunk(x, 0, total, seg_len))
    parts = np.concatenate([ex.compute(chunk(x, a, b - a, seg_len)) for a, b in zip(cuts, cuts[1:])])
    assert feat(whole, "onset_count").sum() >= 15
    assert not np.allclose(whole[1:-1], whole[1:-1].mean(axis=0))  # rows differ: a real check
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(feat(parts, "onset_count"), feat(whole, "onset_count"))
    # more context than asked for (another extractor wanted more) changes nothing
    np.testing.assert_allclose(ex.compute(chunk(x, 0, total, seg_len, ctx=0.5)), whole, rtol=1e-5, atol=1e-4)


def test_bad_spec_and_bad_chunks(ex: Priors) -> None:
    with pytest.raises(ExtractorError, match="no arguments"):
        build("priors:40")
    with pytest.raises(ValueError, match="context"):
        ex.compute(chunk(sine(440, 1), ctx=0.05))
    with pytest.raises(ValueError, match="channels"):
        ex.compute(chunk(np.zeros((3, R))))
    with pytest.raises(ValueError, match="needs audio"):
        ex.compute(Chunk("v", 0, 1, 1.0, 1.0))
