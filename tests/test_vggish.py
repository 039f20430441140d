"""VGGish as MUSIC-AVQA extracts it, against references built here independently.

* log-mel: a float64 numpy computation written from AudioSet's ``mel_features`` formulas
  (loops, ``np.fft``), compared with featpipe's (float64 inside, float32 out): max abs difference <= 1e-5 (log units).
* network: plain torch ops (``F.conv2d`` / ``F.max_pool2d``) from the same state dict, with the
  first fully connected layer applied as TF-slim defines it (its weight read as
  (out, time, mel, channel) and contracted with the NCHW map): cosine >= 1 - 1e-6 per row and
  max abs difference <= 1e-4 of the largest value, float32 (measured 1 - 2e-12 and 2e-6).
* Weight files are written here in torchvggish's layout, He-initialised random values, so a
  wrong preprocessing moves the output well past the tolerance (test_tolerance_catches_...).
"""

from __future__ import annotations

import functools
import io
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from featpipe.extractors import Chunk, ExtractOptions, ExtractorError, WeightsError, build
from featpipe.models import vggish as m

SR = 48_000
CONVS = (0, 3, 6, 8, 11, 13)
CHANS = (1, 64, 128, 256, 256, 512, 512)
FCS = ((0, 12288, 4096), (2, 4096, 4096), (4, 4096, 128))


# ----------------------------------------------------------------------------- weight files


def he_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvggish's state-dict keys and shapes, He-normal weights, small random biases."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, idx in enumerate(CONVS):
        cin, cout = CHANS[i], CHANS[i + 1]
        state[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2.0 / (9 * cin)) ** 0.5
        state[f"features.{idx}.bias"] = torch.randn(cout, generator=g) * 0.1
    for idx, fin, fout in FCS:
        state[f"embeddings.{idx}.weight"] = torch.randn(fout, fin, generator=g) * (2.0 / fin) ** 0.5
        state[f"embeddings.{idx}.bias"] = torch.randn(fout, generator=g) * 0.1
    return state


def write_pca_numpy1(path, vectors: np.ndarray, means: np.ndarray) -> None:
    """The PCA file as torchvggish v0.1 ships it: ``torch.save`` of numpy arrays, pickled under numpy 1.x names."""
    buf = io.BytesIO()
    torch.save({"pca_eigen_vectors": vectors, "pca_means": means}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            out.writestr(info, data)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vggish-weights")
    state = he_state()
    torch.save(state, folder / m.MODEL_FILE)
    rng = np.random.default_rng(1)
    vectors = np.linalg.qr(rng.normal(size=(128, 128)))[0] * rng.uniform(0.5, 2.0, (128, 1))  # float64, like the release
    means = rng.normal(0.3, 0.1, 128)
    write_pca_numpy1(folder / m.PCA_FILE, vectors, means)
    return folder, state, vectors, means


# ----------------------------------------------------------------------------- references


def ref_log_mel(audio16k: np.ndarray) -> np.ndarray:
    """AudioSet's log-mel for one example, float64, from the formulas (not featpipe's code)."""
    x = np.asarray(audio16k, np.float64)
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic Hann
    n_frames = 1 + (len(x) - 400) // 160
    spec = np.stack([np.abs(np.fft.rfft(x[i * 160:i * 160 + 400] * win, 512)) for i in range(n_frames)])
    return np.log(spec @ ref_mel_weights() + 0.01)[:96]  # the first 96 frames form the example


@functools.lru_cache(maxsize=1)
def ref_mel_weights() -> np.ndarray:
    """(257, 64): HTK-mel triangles 125-7500 Hz over the 512-point FFT bins at 16 kHz, DC weight 0."""

    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    bin_mel = mel(np.linspace(0.0, 8000.0, 257))
    edges = np.linspace(mel(125.0), mel(7500.0), 66)
    w = np.zeros((257, 64))
    for b in range(64):
        lo, c, hi = edges[b], edges[b + 1], edges[b + 2]
        for k in range(1, 257):  # bin 0 (DC) keeps weight 0
            w[k, b] = max(0.0, min((bin_mel[k] - lo) / (c - lo), (hi - bin_mel[k]) / (hi - c)))
    return w


def ref_network(state: dict[str, torch.Tensor], examples: np.ndarray) -> np.ndarray:
    """TF-slim VGGish from plain ops; fc1 contracts the NCHW map with a (out, time, mel, channel) weight."""
    x = torch.from_numpy(np.asarray(examples, np.float32))[:, None]
    for i, idx in enumerate(CONVS):
        x = F.relu(F.conv2d(x, state[f"features.{idx}.weight"], state[f"features.{idx}.bias"], padding=1))
        if i in (0, 1, 3, 5):
            x = F.max_pool2d(x, 2)
    w1 = state["embeddings.0.weight"].reshape(4096, 6, 4, 512)  # TF flattens (time, mel, channel)
    h = F.relu(torch.einsum("nchw,ohwc->no", x, w1) + state["embeddings.0.bias"])
    h = F.relu(F.linear(h, state["embeddings.2.weight"], state["embeddings.2.bias"]))
    return F.relu(F.linear(h, state["embeddings.4.weight"], state["embeddings.4.bias"])).numpy()


def ref_postprocess(emb: np.ndarray, vectors: np.ndarray, means: np.ndarray) -> np.ndarray:
    """AudioSet's vggish_postprocess: PCA, clip to [-2, 2], 8-bit levels."""
    pca = (np.asarray(emb, np.float64) - means) @ vectors.T
    return np.round((np.clip(pca, -2.0, 2.0) + 2.0) * (255.0 / 4.0))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ----------------------------------------------------------------------------- media helpers


def music(seconds: float, channels: int = 2, seed: int = 0) -> np.ndarray:
    """Harmonic tones changing every 0.3 s, plus noise, at 48 kHz: every segment looks different."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 110.0 * 2 ** (rng.integers(0, 36, int(seconds / 0.3) + 1) / 12)[(t / 0.3).astype(int)]
    sig = sum(np.sin(2 * np.pi * h * np.cumsum(f0) / SR) / h for h in range(1, 8))
    sig = 0.3 * sig + 0.02 * rng.normal(size=len(t))
    gains = np.linspace(1.0, 0.5, channels)[:, None]
    return (gains * sig[None]).astype(np.float32)


class Partials:
    """A signal known at any instant: partials up to 20 kHz with smooth envelopes, two channels.

    Lets the test sample it as ffmpeg's 44.1 kHz decode (what moviepy picks from) and as
    featpipe's 48 kHz decode, independently of featpipe's code.
    """

    def __init__(self, seconds: float, n: int = 60, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.f = np.concatenate([rng.uniform(80, 4000, n // 2), rng.uniform(4000, 20000, n - n // 2)])
        self.phase, self.amp = rng.uniform(0, 2 * np.pi, n), rng.uniform(0.005, 0.04, n)
        self.centre, self.width = rng.uniform(0, seconds, n), rng.uniform(0.2, 1.0, n)
        self.gains = np.array([1.0, 0.6])
        self.seconds = seconds

    def __call__(self, t: np.ndarray) -> np.ndarray:
        out = np.zeros(len(t))
        for f, p, a, c, w in zip(self.f, self.phase, self.amp, self.centre, self.width):
            out += a * np.exp(-(((t - c) / w) ** 2)) * np.sin(2 * np.pi * f * t + p)
        fade = 0.5 - 0.5 * np.cos(np.pi * np.clip(t / 0.05, 0, 1))  # silent before t = 0, as a decode is
        return self.gains[:, None] * (out * fade)[None]

    def decoded48(self) -> np.ndarray:
        return self(np.arange(int(self.seconds * SR)) / SR).astype(np.float32)

    def ffmpeg44(self) -> np.ndarray:
        """What ``ffmpeg -ar 44100 -ac 2 -f s16le`` gives for a 44.1 kHz stereo source of this signal."""
        return ffmpeg_s16(self(np.arange(int(self.seconds * 44100)) / 44100))

    def musicavqa_wav(self) -> np.ndarray:
        """MUSIC-AVQA's 16 kHz mono: moviepy picks 44.1 kHz sample round(44100 n / 16000), 16 bits, clip 0.99.

        (Until moviepy's first buffer refill, 4.5 s in; later frames slip, see the frame-map tests.)
        """
        n = np.arange(int(self.seconds * 16000))
        picked = self(np.round(44100 * ((1.0 / 16000) * n)) / 44100)
        s16 = np.clip(np.round(picked * 32768), -32768, 32767)  # ffmpeg's s16 output
        return (np.trunc(np.clip(s16 / 32768, -0.99, 0.99) * 32768) / 32768).mean(axis=0)


def ffmpeg_s16(x: np.ndarray) -> np.ndarray:
    """Float samples as ffmpeg's s16 output holds them (rounded, saturated), as float32 / 32768."""
    return (np.clip(np.round(np.asarray(x, np.float64) * 32768), -32768, 32767) / 32768).astype(np.float32)


def _window(audio: np.ndarray, rate: int, first: int, count: int, seg: float, ctx: float) -> np.ndarray:
    s0, s1 = round((first * seg - ctx) * rate), round(((first + count) * seg + ctx) * rate)
    out = np.zeros((audio.shape[0], s1 - s0), np.float32)
    lo, hi = max(s0, 0), min(s1, audio.shape[1])
    out[:, lo - s0:hi - s0] = audio[:, lo:hi]
    return out


def make_chunk(audio: np.ndarray, first: int, count: int, seg: float, ctx: float,
               audio44: np.ndarray | None = None) -> Chunk:
    """What the decoder delivers: audio over [t0 - ctx, t1 + ctx], zeros outside the recording, and
    moviepy's 44.1 kHz 16-bit stereo copy (``audio44``; by default the 48 kHz audio resampled here)."""
    if audio44 is None:
        from scipy.signal import resample_poly

        y = resample_poly(np.asarray(audio, np.float64), 147, 160, axis=1)
        audio44 = ffmpeg_s16(y if len(y) == 2 else np.repeat(y.mean(0, keepdims=True), 2, axis=0))
    return Chunk("v", first, count, seg, audio.shape[1] / SR, audio=_window(audio, SR, first, count, seg, ctx),
                 audio_context=ctx, audio_copies={m.MOVIEPY_COPY: _window(audio44, 44100, first, count, seg, ctx)})


@pytest.fixture(scope="module")
def extractor(weights):
    ext = build("vggish", ExtractOptions(weights=str(weights[0])))
    ext.check()
    ext.load("cpu")
    return ext


# ----------------------------------------------------------------------------- tests


def test_mel_matrix_and_log_mel_match_the_numpy_reference():
    rng = np.random.default_rng(3)
    t = np.arange(16000) / 16000
    signals = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.1 * rng.normal(size=16000),
                        np.zeros(16000), 0.3 * np.sin(2 * np.pi * 7000 * t) + 0.01 * rng.normal(size=16000)])
    signals = signals.astype(np.float32)  # what the extractor hands over
    ours = m.log_mel_examples(signals)
    ref = np.stack([ref_log_mel(s) for s in signals])
    assert ours.shape == (4, 96, 64) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= 1e-5
    assert np.allclose(ours[2], np.log(0.01))  # silence: log of the offset alone


def test_resampler_keeps_the_mel_range_and_removes_aliases():
    t = np.arange(2 * SR) / SR
    mid = slice(2000, 30000)  # away from the ends, where zeros are read beyond the signal
    for f in (200.0, 1000.0, 5000.0, 7500.0):
        y = m.resample_to_16k(np.sin(2 * np.pi * f * t))
        assert np.abs(y[mid] - np.sin(2 * np.pi * f * np.arange(32000) / 16000)[mid]).max() < 1e-4
    for f in (8600.0, 12000.0, 20000.0):  # would alias into 0-7.4 kHz
        assert np.abs(m.resample_to_16k(np.sin(2 * np.pi * f * t))[mid]).max() < 1e-4  # below -80 dB


def test_extractor_equals_the_reference(extractor, weights):
    """Default resample=moviepy: the reference input is MUSIC-AVQA's WAV, computed from the signal itself."""
    _, state, _, _ = weights
    sig = Partials(4.6)  # 4 segments, all before moviepy's first buffer refill
    chunk = make_chunk(sig.decoded48(), 0, 4, 1.0, extractor.needs().audio_context, sig.ffmpeg44())
    wav = sig.musicavqa_wav()
    # the 16 kHz input: the WAV's samples exactly (picked from the 44.1 kHz copy, clipped as moviepy)
    np.testing.assert_array_equal(extractor.example_audio(chunk),
                                  np.stack([wav[k * 16000:k * 16000 + m.EXAMPLE_SAMPLES] for k in range(4)]))
    out = extractor.extract(chunk)["vggish"]
    ref = ref_network(state, np.stack([ref_log_mel(wav[k * 16000:(k + 1) * 16000]) for k in range(4)]))
    assert out.shape == (4, 128) and out.dtype == np.float32
    assert cosine_rows(out, ref).min() >= 1 - 1e-6  # measured 1 - 1e-8
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
    # moviepy's missing anti-alias filter matters: the anti-aliased input is far off
    fir = m.resample_to_16k(chunk.audio.mean(axis=0)[round(0.51 * SR):])
    anti = ref_network(state, np.stack([ref_log_mel(fir[k * 16000:(k + 1) * 16000]) for k in range(4)]))
    assert cosine_rows(anti, ref).max() < 0.99  # measured 0.89-0.94
    assert (out >= 0).all() and (out > 0).any()  # the final ReLU
    assert cosine_rows(out[:-1], out[1:]).max() < 0.999  # segments differ: the test can tell rows apart


def test_moviepy_frame_map_slips_one_frame_per_refill():
    """moviepy 1.0.3's reader: exact nearest frames until its 200,000-frame buffer first refills."""
    fm = m.moviepy_frame_map(65.3)
    n = np.arange(len(fm))
    lag = np.round(44100 * ((1.0 / 16000) * n)).astype(np.int64) - fm
    assert len(fm) == int(16000 * 65.3) and (fm >= 0).all()
    first = np.argmax(lag > 0)
    assert (lag[:first] == 0).all() and 4.45 < first / 16000 < 4.55  # the first refill, near frame 200,000
    steps = np.diff(lag)
    assert set(np.unique(steps)) <= {0, 1} and lag[-1] == 26  # one more frame late per refill (0.59 ms at 65 s)
    assert np.allclose(np.diff(np.nonzero(steps)[0]) / 16000, 2.372, atol=0.001)  # a refill every 104,600 frames
    assert (m.moviepy_frame_map(3.0) == np.round(44100 * ((1.0 / 16000) * np.arange(48000)))).all()


def test_moviepy_frame_map_equals_moviepy(tmp_path):
    """The frame map against moviepy 1.0.3 itself (the ``bench`` extra): a WAV whose samples are their index."""
    pytest.importorskip("moviepy.editor", reason="moviepy 1.x not installed (pip install -e '.[bench]')")
    from moviepy.editor import AudioFileClip
    from scipy.io import wavfile

    idx = np.arange(int(65.3 * 44100))
    ramp = ((idx % 60000) - 30000).astype(np.int16)  # inside moviepy's 0.99 clip
    wavfile.write(tmp_path / "ramp.wav", 44100, np.stack([ramp, ramp], 1))
    clip = AudioFileClip(str(tmp_path / "ramp.wav"), buffersize=200000, fps=44100, nbytes=2)  # VideoFileClip's
    clip.write_audiofile(str(tmp_path / "out.wav"), fps=16000, logger=None)  # MUSIC-AVQA's extract_audio.py
    clip.close()
    got = wavfile.read(tmp_path / "out.wav")[1][:, 0].astype(np.int64) + 30000
    expected = np.round(44100 * np.arange(len(got)) / 16000)
    frames = got + 60000 * np.round((expected - got) / 60000).astype(np.int64)  # unwrap the ramp
    np.testing.assert_array_equal(frames, m.moviepy_frame_map(65.3))


def write_music_mp4(path, seconds: float, rate: int = 44100, layout: str = "stereo") -> None:
    """A small H.264 + AAC file whose audio is `music` at ``rate`` (MUSIC-AVQA's sources are such
    files), a different tune per channel of ``layout``."""
    from fractions import Fraction

    import av
    from scipy.signal import resample_poly

    n = {"mono": 1, "stereo": 2, "5.1": 6}[layout]
    pcm = np.concatenate([music(seconds, channels=1, seed=c) for c in range(n)])
    pcm = resample_poly(pcm, rate, SR, axis=1) if rate != SR else pcm
    pcm = np.clip(1.4 * pcm, -1, 1).astype(np.float32)  # loud: peaks pass moviepy's 0.99 clip
    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=10)
    vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
    aus = out.add_stream("aac", rate=rate, layout=layout)
    for i in range(int(seconds * 10)):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i % 256, np.uint8), format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, 10)
        for p in vs.encode(frame):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    for i in range(0, pcm.shape[1] - 1023, 1024):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i:i + 1024]), format="fltp", layout=layout)
        frame.sample_rate, frame.pts = rate, i
        for p in aus.encode(frame):
            out.mux(p)
    for p in aus.encode():
        out.mux(p)
    out.close()


@pytest.mark.parametrize("rate,layout", [(44100, "stereo"), (48000, "mono"), (8000, "5.1")])
def test_decoded_video_equals_musicavqa_chain(tmp_path, weights, rate, layout):
    """A real AAC .mp4 through featpipe's decode and worker vs MUSIC-AVQA's chain run with moviepy 1.0.3
    itself, for sources at any rate and layout (moviepy's ffmpeg resamples to 44.1 kHz and mixes to
    stereo; featpipe's decoder makes the same copy with the same FFmpeg resampler)."""
    pytest.importorskip("moviepy.editor", reason="moviepy 1.x not installed (pip install -e '.[bench]')")
    from moviepy.editor import VideoFileClip
    from scipy.io import wavfile

    from featpipe.decode import DecodeParams
    from featpipe.run.extract_video import VideoJob, process_video

    folder, state, _, _ = weights
    write_music_mp4(tmp_path / "v.mp4", 12.3, rate, layout)  # 12 s: four refills of moviepy's buffer
    clip = VideoFileClip(str(tmp_path / "v.mp4"))  # feat_script/extract_audio_cues/extract_audio.py
    clip.audio.write_audiofile(str(tmp_path / "v.wav"), fps=16000, logger=None)
    clip.close()
    mono = (wavfile.read(tmp_path / "v.wav")[1] / 32768.0).mean(axis=1)  # vggish_input: /32768, channel mean
    ref = ref_network(state, np.stack([ref_log_mel(mono[k * 16000:(k + 1) * 16000]) for k in range(12)]))
    rows = {}
    for extra in ((), (("resample", "fir"),)):
        res = process_video(VideoJob("v", str(tmp_path / "v.mp4"), ("vggish",), ExtractOptions(weights=str(folder), extra=extra),
                                     DecodeParams(fps=1.0)))
        assert res.ok, res.reason
        rows.update({k: a.astype(np.float32)[:12] for k, a in res.arrays.items()})
    assert 1 - cosine_rows(rows["vggish"], ref).min() <= 1e-6  # the issue asks 1e-4; measured 3e-8 (float16 storage)
    assert 1 - cosine_rows(rows["vggish-fir"], ref).max() > 1e-3  # anti-aliased: 0.005-0.018 away


def test_fir_resampling_equals_the_reference(weights):
    """resample=fir: anti-aliased 16 kHz (featpipe's FIR, tested above) through the reference log-mel and network."""
    folder, state, _, _ = weights
    ext = build("vggish", ExtractOptions(weights=str(folder), extra=(("resample", "fir"),)))
    assert [o.name for o in ext.outputs()] == ["vggish-fir"]
    ext.check()
    ext.load("cpu")
    audio = music(4.0)
    out = ext.extract(make_chunk(audio, 0, 4, 1.0, ext.needs().audio_context))["vggish-fir"]
    mono16 = m.resample_to_16k(audio.mean(axis=0))
    ref = ref_network(state, np.stack([ref_log_mel(mono16[k * 16000:(k + 1) * 16000]) for k in range(4)]))
    assert cosine_rows(out, ref).min() >= 1 - 1e-6
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


def test_tolerance_catches_wrong_preprocessing(weights):
    """Common preprocessing mistakes give cosines below 0.9999, far from the 1 - 1e-6 bound."""
    _, state, _, _ = weights
    mono16 = m.resample_to_16k(music(3.0).mean(axis=0)) * 0.03  # -30 dB: where the log offset matters
    good = np.stack([ref_log_mel(mono16[k * 16000:(k + 1) * 16000]) for k in range(3)])
    ref = ref_network(state, good)
    shifted = np.stack([ref_log_mel(mono16[k * 16000 + 8000:(k + 1) * 16000 + 8000]) for k in range(2)])
    wrong = {
        "log offset 1e-6": np.log(np.exp(good) - 0.01 + 1e-6),
        "natural log -> log10": good / np.log(10),
        "half-second shift": np.concatenate([shifted, good[2:]]),
        "mel/time transposed": good.reshape(3, 64, 96).transpose(0, 2, 1),
        "log(mel + 0.1)": np.log(np.exp(good) + 0.09),
    }
    outs = ref_network(state, np.concatenate(list(wrong.values()))).reshape(len(wrong), 3, 128)
    for name, out in zip(wrong, outs):
        assert cosine_rows(out, ref).min() < 0.9999, name


def test_chunked_extraction_equals_whole(extractor):
    ctx = extractor.needs().audio_context
    fir = build("vggish", ExtractOptions(extra=(("resample", "fir"),)))
    for seg, n in ((1.0, 5), (0.5, 6), (1 / 29.97, 8)):
        audio = music(n * seg + 0.2, channels=1, seed=2)
        chunks = [make_chunk(audio, f, min(3, n - f), seg, ctx) for f in range(0, n, 3)]
        whole = make_chunk(audio, 0, n, seg, ctx)
        # the 16 kHz examples are bit-identical in both resampling modes (the grids are absolute) ...
        for ext in (extractor, fir):
            np.testing.assert_array_equal(np.concatenate([ext.example_audio(c) for c in chunks]),
                                          ext.example_audio(whole))
        # ... and the network differs only by batch-size-dependent float32 rounding
        parts = np.concatenate([extractor.extract(c)["vggish"] for c in chunks])
        np.testing.assert_allclose(parts, extractor.extract(whole)["vggish"], rtol=1e-4, atol=1e-4)


def test_pca_option_matches_audioset_postprocess(weights):
    folder, state, vectors, means = weights
    assert [o.name for o in build("vggish", ExtractOptions(extra=(("pca", "1"),))).outputs()] == ["vggish-pca"]
    ext = build("vggish", ExtractOptions(weights=str(folder), extra=(("pca", "1"), ("resample", "fir"))))
    assert [o.name for o in ext.outputs()] == ["vggish-fir-pca"]
    ext.check()
    ext.load("cpu")
    audio = music(4.0, seed=5)
    out = ext.extract(make_chunk(audio, 0, 4, 1.0, ext.needs().audio_context))["vggish-fir-pca"]
    mono16 = m.resample_to_16k(audio.mean(axis=0))
    raw = ref_network(state, np.stack([ref_log_mel(mono16[k * 16000:(k + 1) * 16000]) for k in range(4)]))
    ref = ref_postprocess(raw, vectors, means)
    assert set(np.unique(out)) <= set(range(256))
    assert np.abs(out - ref).max() <= 1 and (out == ref).mean() >= 0.98  # float32 vs float64 at .5 edges
    assert 5 < len(np.unique(out)) and ext.weights_identity().count("sha256:") == 2


def test_weights_offline_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATPIPE_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FEATPIPE_NO_DOWNLOAD", "1")
    with pytest.raises(WeightsError) as err:
        build("vggish", ExtractOptions()).check()
    msg = str(err.value)
    assert "\n" not in msg and m.MODEL_FILE in msg and "downloads are off" in msg
    assert str(tmp_path / "none") in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    # found in torch's hub cache (where torch.hub.load_state_dict_from_url leaves it); PCA still missing
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save({"features.0.weight": torch.zeros(1)}, hub / m.MODEL_FILE)
    with pytest.raises(WeightsError) as err:
        build("vggish", ExtractOptions(extra=(("pca", "yes"),))).check()
    assert m.PCA_FILE in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(WeightsError) as err:  # a wrong file: one line naming the layout
        build("vggish", ExtractOptions()).check()
    assert "lacks embeddings.0.bias" in str(err.value) and "torchvggish" in str(err.value) and "\n" not in str(err.value)
    # torch's legacy (pre-1.6) format, which a 2019 release may use: read without mmap
    torch.save({"features.0.weight": torch.zeros(64, 1, 3, 3)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match="lacks"):
        build("vggish", ExtractOptions(weights=str(tmp_path / "legacy.pth"))).check()
    torch.save({"pca_eigen_vectors": np.eye(128), "pca_means": np.ones(128)}, tmp_path / "pca.pth",
               _use_new_zipfile_serialization=False)
    vectors, means = m.load_pca(tmp_path / "pca.pth")
    assert vectors.shape == (128, 128) and means.shape == (128,) and float(means.sum()) == 128
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match="not a readable torch state-dict file"):
        build("vggish", ExtractOptions(weights=str(tmp_path / "junk.pth"))).check()
    with pytest.raises(ExtractorError):
        build("vggish:big", ExtractOptions())
    with pytest.raises(ExtractorError, match="pca"):
        build("vggish", ExtractOptions(extra=(("pca", "maybe"),))).opt("pca")


def test_weights_given_for_vggish_by_name(weights, tmp_path, monkeypatch):
    """``--weights vggish=FILE`` reaches vggish; the PCA file is found beside it."""
    monkeypatch.setenv("FEATPIPE_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FEATPIPE_NO_DOWNLOAD", "1")
    path = str(weights[0] / m.MODEL_FILE)
    ext = build("vggish", ExtractOptions(weights_by=(("vggish", path),), extra=(("pca", "1"),)))
    ext.check()
    assert ext.weights_identity().count("sha256:") == 2
    with pytest.raises(WeightsError):
        build("vggish", ExtractOptions(weights_by=(("clip", path),))).check()
