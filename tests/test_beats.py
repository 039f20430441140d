"""BEATs (``beats:<checkpoint.pt>``) against a reference built here, independently of featpipe's code.

* fbank: featpipe's Kaldi fbank against kaldi-native-fbank (the ``test`` extra) at the bin counts
  Kaldi accepts (23, 80, 120: Kaldi refuses 128 bins at 16 kHz because band 3 catches no FFT bin,
  which torchaudio, and so BEATs, silently leaves at log(eps)), and against transformers'
  numpy Kaldi fbank (``audio_utils.spectrogram`` with ``mel_scale="kaldi"``, what
  ASTFeatureExtractor runs without torchaudio) at BEATs's 128 bins. Tolerances: 1e-3 log units
  against kaldi-native-fbank (it computes in float32; measured 5e-4), 1e-4 against transformers
  (float64; measured 2e-6).
* network: a float64 numpy forward written from the paper and unilm's architecture in the
  plainest form (per-head loops, explicit softmax, weight norm, relative-position buckets, gate),
  from a tiny random checkpoint written in unilm's published layout ``{'cfg': ..., 'model': ...}``.
* through ``featpipe extract``: a lossless (FLAC, 48 kHz) file of a band-limited signal whose
  16 kHz samples the test computes analytically; per segment cosine >= 0.9999 and max abs
  difference <= 2e-3 of the largest value (rows stored as float16; measured 0.99999 / 4e-4).
* the tolerance separates the preprocessing mistakes listed in ``test_tolerance_catches_...``.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from featpipe import cli, open_cache
from featpipe.extractors import Chunk, ExtractOptions, ExtractorError, WeightsError, build
from featpipe.models import beats as m

SR48, SR16 = 48_000, 16_000
MEAN, STD = 15.41663, 6.55582  # unilm BEATs.preprocess defaults
CFG = {  # unilm's BEATsConfig keys, tiny sizes; the gated relative bias and deep norm of the released models
    "input_patch_size": 16,
    "embed_dim": 32,
    "conv_bias": False,
    "encoder_layers": 3,
    "encoder_embed_dim": 48,
    "encoder_ffn_embed_dim": 96,
    "encoder_attention_heads": 4,
    "activation_fn": "gelu",
    "layer_wise_gradient_decay_ratio": 1.0,
    "layer_norm_first": False,
    "deep_norm": True,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "conv_pos": 16,
    "conv_pos_groups": 4,
    "relative_position_embedding": True,
    "num_buckets": 32,
    "max_distance": 40,
    "gru_rel_pos": True,
    "finetuned_model": False,
    "predictor_dropout": 0.1,
    "predictor_class": 527,
}


# ----------------------------------------------------------------------------- checkpoint


def random_state(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """unilm's state-dict names and shapes, random values large enough that every part matters."""
    g = torch.Generator().manual_seed(seed)
    E, D, F_, H = (
        cfg["embed_dim"],
        cfg["encoder_embed_dim"],
        cfg["encoder_ffn_embed_dim"],
        cfg["encoder_attention_heads"],
    )
    p, K, G = cfg["input_patch_size"], cfg["conv_pos"], cfg["conv_pos_groups"]

    def rnd(*shape, std=1.0):
        return torch.randn(*shape, generator=g) * std

    def ln(prefix, n):
        return {f"{prefix}.weight": 1 + rnd(n, std=0.1), f"{prefix}.bias": rnd(n, std=0.1)}

    def lin(prefix, fin, fout):
        return {f"{prefix}.weight": rnd(fout, fin, std=fin**-0.5), f"{prefix}.bias": rnd(fout, std=0.1)}

    s = {
        "patch_embedding.weight": rnd(E, 1, p, p, std=1 / p),
        **ln("layer_norm", E),
        **lin("post_extract_proj", E, D),
        "encoder.pos_conv.0.weight_g": 1 + rnd(1, 1, K, std=0.3),
        "encoder.pos_conv.0.weight_v": rnd(D, D // G, K),
        "encoder.pos_conv.0.bias": rnd(D, std=0.1),
        **ln("encoder.layer_norm", D),
    }
    table = rnd(cfg["num_buckets"], H)
    for i in range(cfg["encoder_layers"]):
        a = f"encoder.layers.{i}.self_attn"
        for n in ("k_proj", "v_proj", "q_proj", "out_proj"):
            s.update(lin(f"{a}.{n}", D, D))
        s[f"{a}.relative_attention_bias.weight"] = table  # one table shared: state_dict lists it under every layer
        s.update(lin(f"{a}.grep_linear", D // H, 8))
        s[f"{a}.grep_a"] = 1 + rnd(1, H, 1, 1, std=0.3)
        s.update(ln(f"encoder.layers.{i}.self_attn_layer_norm", D))
        s.update(lin(f"encoder.layers.{i}.fc1", D, F_))
        s.update(lin(f"encoder.layers.{i}.fc2", F_, D))
        s.update(ln(f"encoder.layers.{i}.final_layer_norm", D))
    return s


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("beats")
    state = random_state(CFG)
    torch.save({"cfg": dict(CFG), "model": state}, folder / "BEATs_tiny.pt")
    return folder / "BEATs_tiny.pt", {k: v.double().numpy() for k, v in state.items()}


# ----------------------------------------------------------------------------- references


def ref_fbank(wave16k: np.ndarray, scale: float = 32768, **change) -> np.ndarray:
    """BEATs's normalised input from transformers' independent numpy Kaldi fbank (float64);
    ``change`` overrides an argument of ``spectrogram`` (the tolerance test's mistakes)."""
    from transformers.audio_utils import spectrogram, window_function

    args = dict(
        frame_length=400,
        hop_length=160,
        fft_length=512,
        power=2.0,
        center=False,
        preemphasis=0.97,
        mel_filters=ref_mel_filters(),
        log_mel="log",
        mel_floor=1.192092955078125e-07,
        remove_dc_offset=True,
    )
    args.update(change)
    window = window_function(args["frame_length"], "povey", periodic=False)
    return (spectrogram(np.asarray(wave16k, np.float64) * scale, window, **args).T - MEAN) / (2 * STD)


@functools.lru_cache(maxsize=1)
def ref_mel_filters() -> np.ndarray:
    import warnings

    from transformers.audio_utils import mel_filter_bank

    with warnings.catch_warnings():  # "at least one mel filter has all zero values": band 3, as in torchaudio
        warnings.simplefilter("ignore")
        return mel_filter_bank(
            num_frequency_bins=257,
            num_mel_filters=128,
            min_frequency=20,
            max_frequency=8000,
            sampling_rate=16000,
            norm=None,
            mel_scale="kaldi",
            triangularize_in_mel_space=True,
        )


def _ln(x, w, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * w + b


def _gelu(x):
    from scipy.special import erf

    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _bucket(rel: int, num_buckets: int, max_distance: int) -> int:
    half = num_buckets // 2
    b = half if rel > 0 else 0
    d = abs(rel)
    exact = half // 2
    if d < exact:
        return b + d
    return b + min(half - 1, exact + int(math.log(d / exact) / math.log(max_distance / exact) * (half - exact)))


def ref_forward(s: dict[str, np.ndarray], fbank: np.ndarray, cfg: dict = CFG) -> np.ndarray:
    """``(frames, 128)`` normalised fbank -> ``(L+1, T, D)``: per time patch, the mean of its 8 frequency tokens."""
    p, H, L = cfg["input_patch_size"], cfg["encoder_attention_heads"], cfg["encoder_layers"]
    T, Fq = fbank.shape[0] // p, 128 // p
    w = s["patch_embedding.weight"][:, 0]  # (E, p, p)
    tokens = []
    for t in range(T):  # time-major, as the conv output (E, T, 8) flattened
        for f in range(Fq):
            tokens.append((w * fbank[t * p : (t + 1) * p, f * p : (f + 1) * p]).sum((1, 2)))
    x = _ln(np.array(tokens), s["layer_norm.weight"], s["layer_norm.bias"])
    x = x @ s["post_extract_proj.weight"].T + s["post_extract_proj.bias"]
    n, D = x.shape
    # positional convolution: weight = g * v / ||v|| (norm per kernel tap), grouped, 'same' padding, last output dropped
    v, gk = s["encoder.pos_conv.0.weight_v"], s["encoder.pos_conv.0.weight_g"]
    wconv = v * gk / np.sqrt((v**2).sum((0, 1), keepdims=True))
    K, groups = wconv.shape[2], cfg["conv_pos_groups"]
    xp = np.pad(x, ((K // 2, K // 2), (0, 0)))
    cg = D // groups
    conv = np.zeros((n, D))
    for o in range(D):
        gi = o // cg
        for i in range(n):
            conv[i, o] = (wconv[o] * xp[i : i + K, gi * cg : (gi + 1) * cg].T).sum()
    conv += s["encoder.pos_conv.0.bias"]
    x = _ln(x + _gelu(conv), s["encoder.layer_norm.weight"], s["encoder.layer_norm.bias"])
    table = s["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    pos = np.array(
        [[table[_bucket(j - i, cfg["num_buckets"], cfg["max_distance"])] for j in range(n)] for i in range(n)]
    )
    alpha = (2 * L) ** 0.25
    dh = D // H
    states = [x]
    for li in range(L):
        a = f"encoder.layers.{li}.self_attn"

        def lin(name, y):
            return y @ s[f"{name}.weight"].T + s[f"{name}.bias"]

        q, k, vv = lin(f"{a}.q_proj", x), lin(f"{a}.k_proj", x), lin(f"{a}.v_proj", x)
        heads = []
        for h in range(H):
            qh, kh, vh = (z[:, h * dh : (h + 1) * dh] for z in (q, k, vv))
            gl = lin(f"{a}.grep_linear", qh)  # (n, 8)
            ga = 1 / (1 + np.exp(-gl[:, :4].sum(1)))
            gb = 1 / (1 + np.exp(-gl[:, 4:].sum(1)))
            gate = ga * (gb * s[f"{a}.grep_a"][0, h, 0, 0] - 1) + 2
            scores = qh @ kh.T / math.sqrt(dh) + gate[:, None] * pos[:, :, h]
            e = np.exp(scores - scores.max(1, keepdims=True))
            heads.append((e / e.sum(1, keepdims=True)) @ vh)
        attn = lin(f"{a}.out_proj", np.concatenate(heads, 1))
        b = f"encoder.layers.{li}"
        x = _ln(x * alpha + attn, s[f"{b}.self_attn_layer_norm.weight"], s[f"{b}.self_attn_layer_norm.bias"])
        ffn = lin(f"{b}.fc2", _gelu(lin(f"{b}.fc1", x)))
        x = _ln(x * alpha + ffn, s[f"{b}.final_layer_norm.weight"], s[f"{b}.final_layer_norm.bias"])
        states.append(x)
    return np.stack([st.reshape(T, Fq, D).mean(1) for st in states])


def ref_segments(
    s, wave16k: np.ndarray, seconds: int, shift: float = 0.0, fbank: np.ndarray | None = None
) -> np.ndarray:
    """One window over the whole recording; time patch i reads fbank frames 16i..16i+15, i.e.
    samples 2560i .. 2560i+2799, centred at (2560i + 1399.5) / 16000 s; a segment's row is the
    mean of the patches centred inside it. ``(seconds, L+1, D)``."""
    states = ref_forward(s, ref_fbank(wave16k) if fbank is None else fbank)
    centres = (2560 * np.arange(states.shape[1]) + 1399.5) / SR16 + shift
    return np.stack([states[:, (centres >= k) & (centres < k + 1)].mean(1) for k in range(seconds)])


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64).reshape(len(a), -1), np.asarray(b, np.float64).reshape(len(b), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ----------------------------------------------------------------------------- media


class Music:
    """Partials below 7 kHz (inside every resampler's pass band) with envelopes: known at any instant."""

    def __init__(self, seconds: float, n: int = 40, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.f, self.phase = rng.uniform(60, 7000, n), rng.uniform(0, 2 * np.pi, n)
        self.amp, self.centre, self.width = (
            rng.uniform(0.01, 0.05, n),
            rng.uniform(0, seconds, n),
            rng.uniform(0.2, 1.2, n),
        )
        self.seconds = seconds

    def __call__(self, rate: int) -> np.ndarray:
        t = np.arange(round(self.seconds * rate)) / rate
        out = np.zeros(len(t))
        for f, p, a, c, w in zip(self.f, self.phase, self.amp, self.centre, self.width):
            out += a * np.exp(-(((t - c) / w) ** 2)) * np.sin(2 * np.pi * f * t + p)
        fade = np.clip(np.minimum(t, self.seconds - t) / 0.1, 0, 1)  # no step at either end
        return out * (0.5 - 0.5 * np.cos(np.pi * fade))


def write_flac_mkv(path, x48: np.ndarray) -> None:
    """An audio-only Matroska file: 48 kHz stereo FLAC (lossless, 24-bit) of ``x48`` in both channels.

    24 bits, not 16: 16-bit noise fills the empty mel bands above the signal's 7 kHz and moves the
    rows by 5e-5 in cosine (measured), a property of the file, not of featpipe.
    """
    pcm = np.round(np.clip(x48, -1, 1) * (2**23 - 1)).astype(np.int32) << 8  # s32 holding 24 bits
    out = av.open(str(path), "w")
    st = out.add_stream("flac", rate=SR48, layout="stereo")
    st.format = "s32"
    for i in range(0, len(pcm), 4608):
        block = pcm[i : i + 4608]
        frame = av.AudioFrame.from_ndarray(np.repeat(block, 2)[None], format="s32", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = SR48, i, Fraction(1, SR48)
        for pk in st.encode(frame):
            out.mux(pk)
    for pk in st.encode():
        out.mux(pk)
    out.close()


def make_chunk(x48: np.ndarray, first: int, count: int, ctx: float) -> Chunk:
    s0, s1 = round((first - ctx) * SR48), round((first + count + ctx) * SR48)
    out = np.zeros((2, s1 - s0), np.float32)
    lo, hi = max(s0, 0), min(s1, len(x48))
    out[:, lo - s0 : hi - s0] = x48[lo:hi]
    return Chunk("v", first, count, 1.0, len(x48) / SR48, audio=out, audio_context=ctx)


# ----------------------------------------------------------------------------- tests


def test_fbank_equals_kaldi_native_fbank_and_transformers():
    knf = pytest.importorskip("kaldi_native_fbank", reason="pip install kaldi-native-fbank (the test extra)")
    rng = np.random.default_rng(0)
    x = Music(2.0)(SR16) + 0.01 * rng.normal(size=32000)
    x[5000:7000] = 0  # silence: the log floor
    for bins in (23, 80, 120):
        opts = knf.FbankOptions()
        opts.frame_opts.dither = 0.0
        opts.frame_opts.samp_freq = 16000
        opts.mel_opts.num_bins = bins
        fb = knf.OnlineFbank(opts)
        fb.accept_waveform(16000, (x * 32768).astype(np.float32).tolist())
        fb.input_finished()
        want = np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])
        got = m.kaldi_fbank(torch.from_numpy(x * 32768), bins).numpy()
        assert got.shape == want.shape == (198, bins)
        assert np.abs(got - want).max() < 1e-3  # knf is float32: measured 5e-4
    # BEATs's 128 bins (which Kaldi refuses) against transformers' float64 Kaldi fbank
    got = m.preprocess(torch.from_numpy(x)[None])[0].numpy()
    want = ref_fbank(x)
    assert got.shape == want.shape == (198, 128)
    assert np.abs(got - want).max() < 1e-4  # measured 2e-6
    assert (m.mel_banks().sum(0) == 0).nonzero().flatten().tolist() == [3]  # band 3 catches no FFT bin (torchaudio too)


def test_network_equals_the_reference(checkpoint):
    path, state = checkpoint
    model = m.load_checkpoint(path)
    x = Music(3.0, seed=1)(SR16)
    fb = ref_fbank(x)
    with torch.no_grad():
        got = model(torch.from_numpy(fb.astype(np.float32))[None], layers=tuple(range(4)))[0].double().numpy()
    want = ref_forward(state, fb)
    assert got.shape == want.shape == (4, 18, 48)
    for layer in range(4):
        assert cosine_rows(got[layer], want[layer]).min() > 1 - 1e-6, layer
    assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()
    assert cosine_rows(want[-1][:-1], want[-1][1:]).max() < 0.999  # frames differ: the test can tell them apart


def test_featpipe_extract_equals_the_reference(checkpoint, tmp_path):
    """One window (the recording is shorter than 10 s): every segment, edges included."""
    path, state = checkpoint
    sig = Music(7.3, seed=2)
    (tmp_path / "clips").mkdir()
    write_flac_mkv(tmp_path / "clips" / "a.mkv", sig(SR48))
    cache = tmp_path / "c.h5"
    res = CliRunner().invoke(
        cli.main,
        [
            "extract",
            str(tmp_path / "clips"),
            "-o",
            str(cache),
            "--audio",
            f"beats:{path}",
            "--workers",
            "1",
            "--quiet",
            "--video-timeout",
            "0",
            "--set",
            "beats.layers=all",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    with open_cache(cache) as c:
        got = c.get("a", "beats-beats_tiny")
        info = c.info("beats-beats_tiny")
    assert got.data.shape == (7, 4, 48) and got.valid == 7 and info.attrs["layers"] == [0, 1, 2, 3]
    want = ref_segments(state, sig(SR16), 7)
    rows = got.data[:7].astype(np.float64)
    for layer in range(4):
        cos = cosine_rows(rows[:, layer], want[:, layer])
        assert cos.min() >= 0.9999, (layer, cos)  # measured >= 0.99999 (float16 storage)
    assert np.abs(rows - want).max() <= 2e-3 * np.abs(want).max()


def test_windows_chunks_and_layers(checkpoint):
    """Several windows (window=3 s, context=0.5 s): each kept frame as the reference computes it
    inside the window the documented rule picks; chunked == whole; layers=last and i,j slice all."""
    path, state = checkpoint
    sig = Music(9.0, seed=3)
    x48, x16 = sig(SR48).astype(np.float32), sig(SR16)
    opts = (("window", "3"), ("context", "0.5"), ("layers", "all"))
    ext = build(f"beats:{path}", ExtractOptions(extra=opts))
    ext.check()
    ext.load("cpu")
    ctx = ext.needs().audio_context
    whole = ext.extract(make_chunk(x48, 0, 9, ctx))["beats-beats_tiny"]
    parts = np.concatenate([ext.extract(make_chunk(x48, f, min(4, 9 - f), ctx))["beats-beats_tiny"] for f in (0, 4, 8)])
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-5)
    # the reference: windows of 7680 * 6 = 46080 samples (2.88 s: strides of 2560), hop 32 * ... (rule of frames.py)
    stride, n = 2560, len(x16)
    ctx_s, hop = round(0.5 * SR16 / stride) * stride, round(2.0 * SR16 / stride) * stride
    length = hop + 2 * ctx_s
    last_start = (n - length) // stride * stride
    centres, frames = [], []
    for j in range(math.ceil(n / hop)):
        start = min(max(j * hop - ctx_s, 0), last_start)
        st = ref_forward(state, ref_fbank(x16[start : start + length]))
        c = start + 1399.5 + stride * np.arange(st.shape[1])
        keep = (c >= j * hop) & (c < (j + 1) * hop)
        centres.append(c[keep] / SR16)
        frames.append(st[:, keep])
    centres, frames = np.concatenate(centres), np.concatenate(frames, 1)
    want = np.stack([frames[:, (centres >= k) & (centres < k + 1)].mean(1) for k in range(9)])
    for layer in range(4):
        assert cosine_rows(whole[:, layer], want[:, layer]).min() >= 0.9999
    last = build(f"beats:{path}", ExtractOptions(extra=(("window", "3"), ("context", "0.5"))))
    two = build(f"beats:{path}", ExtractOptions(extra=(("window", "3"), ("context", "0.5"), ("layers", "0,2"))))
    for e in (last, two):
        e.check()
        e.load("cpu")
    np.testing.assert_allclose(
        last.extract(make_chunk(x48, 0, 9, ctx))["beats-beats_tiny"], whole[:, 3], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        two.extract(make_chunk(x48, 0, 9, ctx))["beats-beats_tiny"], whole[:, [0, 2]], rtol=1e-5, atol=1e-5
    )
    assert [o.shape for o in last.outputs()] == [(48,)] and [o.shape for o in two.outputs()] == [(2, 48)]


def test_tolerance_catches_wrong_preprocessing(checkpoint):
    """Mistakes in the preprocessing move the reference rows below the 0.9999 bound (measured: no 2**15
    scale 0.82, mean 0 -0.14, no pre-emphasis 0.990, 22.05 kHz 0.79, no DC removal 0.9997, half a
    frame off 0.9987). The fbank std is invisible here (the patch conv has no bias and a LayerNorm
    follows it: a scale cancels); test_fbank_... checks the normalised input itself."""
    _, state = checkpoint
    sig = Music(5.0, seed=4)
    x16 = sig(SR16)
    good = ref_segments(state, x16, 5)
    fb = ref_fbank(x16)
    from scipy.signal import resample_poly

    wrong = {
        "no 2**15 scale": ref_fbank(x16, scale=1),
        "mean 0": fb + MEAN / (2 * STD),
        "no pre-emphasis": ref_fbank(x16, preemphasis=None),
        "hop 10 ms at 22.05 kHz (sample rate)": ref_fbank(resample_poly(x16, 441, 320)),
        "no DC offset removal": ref_fbank(x16, remove_dc_offset=False),
    }
    for name, f in wrong.items():
        assert cosine_rows(ref_segments(state, x16, 5, fbank=f)[:, -1], good[:, -1]).min() < 0.9999, name
    late = ref_segments(state, x16, 5, shift=0.08, fbank=fb)
    assert cosine_rows(late[1:-1, -1], good[1:-1, -1]).min() < 0.9999, "half a frame off"


def test_checkpoint_errors_are_one_line(checkpoint, tmp_path, monkeypatch):
    path, _ = checkpoint
    monkeypatch.setenv("FEATPIPE_WEIGHTS", str(tmp_path / "none"))
    with pytest.raises(WeightsError) as err:
        build("beats:BEATs_iter3_plus_AS2M.pt", ExtractOptions()).check()
    assert "\n" not in str(err.value) and "unilm" in str(err.value) and "BEATs_iter3_plus_AS2M.pt" in str(err.value)
    with pytest.raises(WeightsError, match="not found"):
        build(f"beats:{tmp_path / 'missing.pt'}", ExtractOptions()).check()
    torch.save(random_state(CFG), tmp_path / "bare.pt")  # a bare state dict: not the published layout
    with pytest.raises(WeightsError, match="expected {'cfg'"):
        build(f"beats:{tmp_path / 'bare.pt'}", ExtractOptions()).check()
    state = random_state(CFG)
    del state["encoder.layers.2.fc1.weight"]
    torch.save({"cfg": CFG, "model": state}, tmp_path / "cut.pt")
    with pytest.raises(WeightsError, match="lacks encoder.layers.2.fc1.weight"):
        build(f"beats:{tmp_path / 'cut.pt'}", ExtractOptions()).check()
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="not a readable torch checkpoint"):
        build(f"beats:{tmp_path / 'junk.pt'}", ExtractOptions()).check()
    with pytest.raises(ExtractorError):
        build("beats", ExtractOptions())
    with pytest.raises(ExtractorError, match="layers"):
        build(f"beats:{path}", ExtractOptions(extra=(("layers", "4"),))).check()  # 3 layers: 0..3
    ext = build("beats:BEATs_tiny.pt", ExtractOptions(weights=str(path.parent)))  # a name in --weights' folder
    ext.check()
    assert ext.weights_identity().startswith("sha256:") and ext.outputs()[0].shape == (48,)
