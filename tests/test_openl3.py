"""OpenL3 port: weight resolution, Keras-file loading, frontend, framing and chunking.

Everything runs offline: weight files are written here in the official Keras-2 layout, with
random values but the real shapes of mel128 (about 4.7M parameters).
"""

from __future__ import annotations

import gzip
import hashlib
import json

import h5py
import numpy as np
import pytest
import scipy.signal
import torch

from featpipe.models import weights as fw
from featpipe.extractors import Chunk, ExtractOptions, ExtractorError, WeightsError, build
from featpipe.models import openl3 as m

SR = 48_000
WIDTHS = (64, 64, 128, 128, 256, 256, 512, 512)


# ----------------------------------------------------------------------------- helpers


def random_arrays(seed: int = 0) -> list[dict[str, np.ndarray]]:
    """One dict per weight layer, in Keras order: BN, then (conv, BN) x 7, then conv."""
    rng = np.random.default_rng(seed)

    def bn(n: int, mean: float = 0.0, var: float = 1.0) -> dict[str, np.ndarray]:
        return {
            "gamma": rng.uniform(0.5, 1.5, n), "beta": rng.normal(0, 0.1, n),
            "moving_mean": mean + rng.normal(0, 0.1, n), "moving_variance": var * rng.uniform(0.5, 1.5, n),
        }

    layers = [bn(1, mean=-40.0, var=400.0)]  # input BN sees dB values in [-80, 0]
    chans = (1,) + WIDTHS
    for i in range(8):
        fan_in = 9 * chans[i]
        layers.append({"kernel": rng.normal(0, np.sqrt(2.0 / fan_in), (3, 3, chans[i], chans[i + 1])),
                       "bias": rng.normal(0, 0.1, chans[i + 1])})
        if i < 7:
            layers.append(bn(chans[i + 1]))
    return [{k: v.astype(np.float32) for k, v in d.items()} for d in layers]


def write_keras_h5(path, layers, names=None, extra_first=None) -> None:
    """Write ``layers`` like Keras 2 ``save_weights``: every layer listed, weightless ones empty."""
    order, bn_i, conv_i, act_i, pool_i = [], 0, 0, 0, 0
    order.append(("input_1", None))
    for n, d in enumerate(layers):
        if "gamma" in d:
            bn_i += 1
            order.append((f"batch_normalization_{bn_i}", d))
            if n > 0:
                act_i += 1
                order.append((f"activation_{act_i}", None))
                if act_i in (2, 4, 6):
                    pool_i += 1
                    order.append((f"max_pooling2d_{pool_i}", None))
        else:
            conv_i += 1
            order.append(("audio_embedding_layer" if conv_i == 8 else f"conv2d_{conv_i}", d))
    if names is not None:  # rename the weight layers, keeping their order
        it = iter(names)
        order = [(next(it), d) if d is not None else (nm, d) for nm, d in order]
    if extra_first is not None:
        order.insert(1, extra_first)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [nm.encode() for nm, _ in order]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for nm, d in order:
            g = f.create_group(nm)
            keys = list(d) if d is not None else []
            g.attrs["weight_names"] = [f"{nm}/{k}:0".encode() for k in keys]
            for k in keys:
                g.create_dataset(f"{nm}/{k}:0", data=d[k])


def conv_same(x: np.ndarray, k: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Keras Conv2D(padding='same') on one (H, W, C) map, as 9 shifted matmuls."""
    h, w, _ = x.shape
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.broadcast_to(b, (h, w, k.shape[3])).copy()
    for dy in range(3):
        for dx in range(3):
            out += xp[dy : dy + h, dx : dx + w] @ k[dy, dx]
    return out


def numpy_embedding_map(layers, spec: np.ndarray) -> np.ndarray:
    """Reference forward in channels-last numpy, straight from the arrays written to the file."""

    def bn(x, d):
        return d["gamma"] * (x - d["moving_mean"]) / np.sqrt(d["moving_variance"] + 1e-3) + d["beta"]

    x = bn(spec[:, :, None], layers[0])
    for i in range(8):
        conv = layers[1 + 2 * i]
        x = conv_same(x, conv["kernel"], conv["bias"])
        if i < 7:
            x = np.maximum(bn(x, layers[2 + 2 * i]), 0)
        if i in (1, 3, 5):
            h, w, c = x.shape
            x = x[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))
    return x  # (H, W, 512)


def pool_flatten(emb_map: np.ndarray, size) -> np.ndarray:
    h, w, c = emb_map.shape
    ph, pw = size
    assert h % ph == 0 and w % pw == 0
    return emb_map.reshape(h // ph, ph, w // pw, pw, c).max(axis=(1, 3)).reshape(-1)  # channels last


def loaded(path, input_repr="mel128", dim=512) -> m.OpenL3Audio:
    model = m.OpenL3Audio(input_repr, dim)
    m.load_keras_weights(model, path)
    return model.eval()


def make_chunk(audio: np.ndarray, first: int, count: int, seg_len: float, ctx: float = 0.5) -> Chunk:
    """What the decoder delivers: audio over [t0 - ctx, t1 + ctx], zeros outside the recording."""
    s0 = round((first * seg_len - ctx) * SR)
    s1 = round(((first + count) * seg_len + ctx) * SR)
    out = np.zeros((audio.shape[0], s1 - s0), np.float32)
    lo, hi = max(s0, 0), min(s1, audio.shape[1])
    if hi > lo:
        out[:, lo - s0 : hi - s0] = audio[:, lo:hi]
    return Chunk("v", first, count, seg_len, audio.shape[1] / SR, audio=out, audio_context=ctx)


@pytest.fixture(scope="module")
def mel128_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / m.weight_filename("mel128", "music")
    layers = random_arrays()
    write_keras_h5(path, layers)
    return path, layers


@pytest.fixture
def offline(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    monkeypatch.setenv("FEATPIPE_WEIGHTS", str(folder))
    monkeypatch.setenv("FEATPIPE_NO_DOWNLOAD", "1")
    return folder


# ----------------------------------------------------------------------------- weights.py


def test_find_weights_order_and_download(tmp_path, monkeypatch):
    folder = tmp_path / "wd"
    monkeypatch.setenv("FEATPIPE_WEIGHTS", str(folder))
    monkeypatch.delenv("FEATPIPE_NO_DOWNLOAD", raising=False)
    assert fw.weights_dir() == folder
    src = tmp_path / "pub"
    src.mkdir()
    payload = b"weights-bytes" * 1000
    (src / "a.h5.gz").write_bytes(gzip.compress(payload))

    # first use: downloaded (file:// stands in for https) and gunzipped atomically
    got = fw.find_weights("a.h5", url=(src / "a.h5.gz").as_uri())
    assert got == folder / "a.h5" and got.read_bytes() == payload
    assert [p.name for p in folder.iterdir()] == ["a.h5"]  # no temp file left
    # second use: found in the folder, the URL is not touched
    assert fw.find_weights("a.h5", url=(src / "gone.gz").as_uri()) == got
    # explicit path wins, as a file or as a folder holding the file
    (src / "a.h5").write_bytes(b"x")
    assert fw.find_weights("a.h5", explicit=src / "a.h5") == src / "a.h5"
    assert fw.find_weights("a.h5", explicit=src) == src / "a.h5"
    monkeypatch.setenv("MY_W", str(src))
    assert fw.find_weights("a.h5", env_var="MY_W") == src / "a.h5"

    with pytest.raises(WeightsError) as err:
        fw.find_weights("b.h5", url=(src / "b.h5.gz").as_uri(), spec="x:y")
    msg = str(err.value)
    assert "\n" not in msg and "b.h5" in msg and "x:y" in msg and "download failed" in msg
    assert not list(folder.glob(".b.h5*"))  # the failed download left nothing behind
    with pytest.raises(WeightsError, match="--weights /nope"):
        fw.find_weights("a.h5", explicit="/nope")


def test_sha256_memo(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATPIPE_WEIGHTS", str(tmp_path / "wd"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    assert fw.sha256_file(f) == hashlib.sha256(b"abc" * 1000).hexdigest()
    memo = json.loads((tmp_path / "wd" / "sha256-memo.json").read_text())
    assert memo[str(f.resolve())]["sha256"] == hashlib.sha256(b"abc" * 1000).hexdigest()
    # a memo entry is used while path, size and mtime match ...
    memo[str(f.resolve())]["sha256"] = "memoised"
    (tmp_path / "wd" / "sha256-memo.json").write_text(json.dumps(memo))
    assert fw.sha256_file(f) == "memoised"
    # ... and ignored once the file changes
    f.write_bytes(b"abcd" * 1000)
    assert fw.sha256_file(f) == hashlib.sha256(b"abcd" * 1000).hexdigest()


# ----------------------------------------------------------------------------- Keras loader


def test_every_tensor_lands_in_place(mel128_file):
    """Torch network == channels-last numpy forward from the written arrays, for 512 and 6144."""
    path, layers = mel128_file
    spec = np.random.default_rng(1).uniform(-80, 0, (128, 199)).astype(np.float32)
    ref_map = numpy_embedding_map(layers, spec)
    assert ref_map.shape == (16, 24, 512)
    x = torch.from_numpy(spec)[None, None]
    with torch.no_grad():
        for dim in (512, 6144):
            got = loaded(path, dim=dim)(x)[0].numpy()
            ref = pool_flatten(ref_map, m.POOL_SIZES["mel128"][dim])
            assert got.shape == ref.shape == (dim,)
            np.testing.assert_allclose(got, ref, atol=1e-4 * np.abs(ref).max())


def test_one_bias_moves_one_channel(mel128_file, tmp_path):
    """+5 on audio_embedding_layer's bias for channel 7 adds exactly 5 there (every 512th value for 6144)."""
    path, layers = mel128_file
    changed = [dict(d) for d in layers]
    changed[-1] = {"kernel": layers[-1]["kernel"], "bias": layers[-1]["bias"] + 5 * (np.arange(512) == 7)}
    write_keras_h5(tmp_path / "b.h5", changed)
    x = torch.rand(2, 1, 128, 199) * -80
    with torch.no_grad():
        for dim in (512, 6144):
            diff = (loaded(tmp_path / "b.h5", dim=dim)(x) - loaded(path, dim=dim)(x)).numpy()
            want = np.where(np.arange(dim) % 512 == 7, 5.0, 0.0)
            np.testing.assert_allclose(diff, np.broadcast_to(want, diff.shape), atol=1e-4)


def test_input_batch_norm_is_the_predicted_affine_map(mel128_file, tmp_path):
    path, layers = mel128_file
    ident = [dict(d) for d in layers]
    ident[0] = {"gamma": np.ones(1, np.float32), "beta": np.zeros(1, np.float32),
                "moving_mean": np.zeros(1, np.float32), "moving_variance": np.full(1, 1 - 1e-3, np.float32)}
    write_keras_h5(tmp_path / "i.h5", ident)
    bn = layers[0]
    x = torch.rand(1, 1, 128, 199) * -80
    affine = bn["gamma"][0] * (x - bn["moving_mean"][0]) / np.sqrt(bn["moving_variance"][0] + 1e-3) + bn["beta"][0]
    with torch.no_grad():
        want = loaded(tmp_path / "i.h5")(affine).numpy()
        np.testing.assert_allclose(loaded(path)(x).numpy(), want, rtol=1e-4, atol=1e-4)


def test_layers_matched_by_order_and_kind_not_name(mel128_file, tmp_path):
    path, layers = mel128_file
    x = torch.rand(1, 1, 128, 199) * -80
    # other auto-generated names, plus a pre-0.4 kapre layer with weights in front: same network
    names = [f"layer_{i:02d}" for i in range(len(layers))]
    kapre = ("melspectrogram_1", {"kernel": np.zeros((2048, 1, 1, 1025), np.float32)})
    write_keras_h5(tmp_path / "n.h5", layers, names=names, extra_first=kapre)
    with torch.no_grad():
        np.testing.assert_array_equal(loaded(path)(x).numpy(), loaded(tmp_path / "n.h5")(x).numpy())


@pytest.mark.parametrize(
    "damage, match",
    [
        ("drop_last", r"by kind are BCBCBCBCBCBCBCB \(B=batch norm"),
        ("narrow", r"layer 3 'conv2d_2' has shapes"),
        ("garbage", "not a readable HDF5 file"),
        ("not_keras", "not a Keras weights file"),
        ("missing_group", r"layer 'conv2d_2' .* is missing or unreadable \(KeyError\)"),
        ("missing_dataset", r"layer 'batch_normalization_3' .* is missing or unreadable \(KeyError\)"),
        ("names_scalar", "layer_names is not a list of layer names"),
    ],
)
def test_bad_weight_file_is_one_line(mel128_file, tmp_path, offline, damage, match):
    _, layers = mel128_file
    bad = tmp_path / "bad.h5"
    if damage == "drop_last":
        write_keras_h5(bad, layers[:-1])
    elif damage == "narrow":
        changed = [dict(d) for d in layers]
        changed[3] = {"kernel": layers[3]["kernel"][..., :32], "bias": layers[3]["bias"][:32]}
        write_keras_h5(bad, changed)
    elif damage == "garbage":
        bad.write_bytes(b"<html>404</html>")
    elif damage == "not_keras":
        with h5py.File(bad, "w") as f:
            f["x"] = np.zeros(3)
    else:  # a Keras file with a layer listed but missing (an interrupted copy, a hand-edited file)
        write_keras_h5(bad, layers)
        with h5py.File(bad, "a") as f:
            if damage == "missing_group":
                del f["conv2d_2"]
            elif damage == "missing_dataset":
                del f["batch_normalization_3"]["batch_normalization_3/gamma:0"]
            else:
                f.attrs["layer_names"] = 7
    ext = build("openl3:mel128/music/512", ExtractOptions(weights=str(bad)))
    with pytest.raises(WeightsError, match=match) as err:
        ext.check()
    assert "\n" not in str(err.value) and "openl3:mel128/music/512" in str(err.value)


def test_missing_weights_one_line(offline):
    ext = build("openl3:mel256/env/6144")
    with pytest.raises(WeightsError) as err:
        ext.check()
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("openl3:mel256/env/6144", "openl3_audio_mel256_env-v0_4_0.h5", "--weights PATH", str(offline),
                 "https://github.com/marl/openl3/raw/models/openl3_audio_mel256_env-v0_4_0.h5.gz"):
        assert part in msg


# ----------------------------------------------------------------------------- frontend


def numpy_frontend(audio: np.ndarray, input_repr: str, version: str = "v0.4") -> np.ndarray:
    """Float64 reference: scipy's periodic Hann, numpy rfft, the kapre/openl3 dB step."""
    n_fft = 512 if input_repr == "linear" else 2048
    if input_repr == "linear":
        x = audio
    elif version == "v0.4":
        x = np.pad(audio, (0, 198 * 242 + n_fft - len(audio)))
    else:
        x = np.pad(audio, (982, 982))
    n = 1 + (len(x) - n_fft) // 242
    frames = np.stack([x[i * 242 : i * 242 + n_fft] for i in range(n)])
    spec = np.fft.rfft(frames * scipy.signal.get_window("hann", n_fft), axis=1)
    if input_repr == "linear":
        s = np.abs(spec)
    else:
        fb = m.mel_filterbank(int(input_repr[3:]), n_fft, htk=version == "v0.3").astype(np.float64)
        s = np.abs(spec) @ fb.T if version == "v0.4" else np.sqrt(np.abs(spec) ** 2 @ fb.T)
    db = 10 * np.log10(np.maximum(s, 1e-10))
    return np.maximum(db - db.max(), -80).T


def test_mel_filterbank_matches_librosa_values():
    """Values read from librosa 0.11 ``filters.mel(sr=48000, n_fft=2048, norm='slaney')``."""
    expected = {  # (n_mels, htk): [(row, argmax, max, sum)]
        (128, False): [(0, 1, 0.0234107338, 0.0397986956), (5, 8, 0.0292623006, 0.0456502624),
                       (64, 127, 0.0099738371, 0.0426665694), (127, 991, 0.0013138354, 0.0426665917)],
        (256, False): [(0, 1, 0.0330104344, 0.0330104344), (128, 126, 0.0190872680, 0.0425151847),
                       (255, 1007, 0.0025282039, 0.0426303595)],
        (128, True): [(0, 1, 0.0407384820, 0.0407384820), (5, 5, 0.0262915697, 0.0427714959),
                      (64, 150, 0.0085608298, 0.0427727997), (127, 995, 0.0014910145, 0.0426619686)],
    }
    for (n_mels, htk), rows in expected.items():
        fb = m.mel_filterbank(n_mels, 2048, htk=htk)
        assert fb.shape == (n_mels, 1025)
        for row, argmax, mx, total in rows:
            assert fb[row].argmax() == argmax
            np.testing.assert_allclose([fb[row].max(), fb[row].sum()], [mx, total], rtol=1e-5)


def anchor_signal() -> np.ndarray:
    t = np.arange(SR) / SR
    sig = 0.5 * np.sin(2 * np.pi * (200 * t + 0.5 * 6000 * t**2)) + 0.2 * np.sin(2 * np.pi * 3520 * t)
    sig[SR // 2] += 1.0
    return sig.astype(np.float32)


# Read from kapre 0.3.7 (TF 2.20) + openl3 0.4's dB step on anchor_signal(): per time frame,
# the peak frequency row and the dB values 4 rows below, at, and 4 rows above it.
KAPRE_ANCHORS = {
    "mel128": [(10, 19, (-11.3481, 0.0, -12.0295)), (60, 54, (-28.0192, -0.9305, -31.3203)),
               (110, 70, (-43.3803, -1.9853, -40.6236)), (160, 81, (-44.4631, -2.5821, -46.8018)),
               (190, 86, (-47.6152, -3.1285, -45.0769))],
    "mel256": [(10, 39, (-5.5686, -0.6034, -5.1337)), (60, 109, (-11.4392, -1.762, -17.884)),
               (110, 141, (-31.1147, -1.9726, -27.0037)), (160, 162, (-35.5067, -2.5134, -34.0086)),
               (190, 172, (-38.4089, -2.5976, -38.1454))],
    "linear": [(10, 6, (-23.7404, -1.2555, -25.3363)), (60, 22, (-25.6061, -1.0814, -26.6076)),
               (110, 38, (-29.191, -2.2058, -26.6223)), (160, 54, (-27.9576, -1.0339, -27.2055)),
               (190, 64, (-24.5309, -1.1386, -26.0456))],
}


@pytest.mark.parametrize("input_repr", ["mel128", "mel256", "linear"])
def test_frontend_against_kapre_values_and_numpy(input_repr):
    sig = anchor_signal()
    noisy = sig + 0.01 * np.random.default_rng(2).standard_normal(SR).astype(np.float32)
    got = m.Frontend(input_repr)(torch.from_numpy(np.stack([sig, noisy])))[:, 0].numpy()
    assert got.shape[1:] == {"linear": (257, 197), "mel128": (128, 199), "mel256": (256, 199)}[input_repr]
    for t, f, vals in KAPRE_ANCHORS[input_repr]:
        assert got[0, :, t].argmax() == f
        np.testing.assert_allclose(got[0, [f - 4, f, f + 4], t], vals, atol=0.01)
    # float32 rounding (here and in kapre) grows with depth below the peak: the pure tones reach
    # float32's floor near -70 dB (10*log10 of magnitudes: -70 dB is 1e-7 of the peak).
    for i, audio in enumerate((sig, noisy)):
        ref = numpy_frontend(audio.astype(np.float64), input_repr)
        err = np.abs(got[i] - ref)
        assert err[ref > -40].max() < 2e-3 and err[ref > -60].max() < 0.2
    assert err.max() < 0.1  # the noisy signal stays above that floor everywhere


def test_frontend_v03_against_numpy():
    sig = anchor_signal()
    got = m.Frontend("mel256", "v0.3")(torch.from_numpy(sig[None]))[0, 0].numpy()
    ref = numpy_frontend(sig.astype(np.float64), "mel256", "v0.3")
    assert got.shape == ref.shape == (256, 199)
    assert np.abs(got - ref)[ref > -40].max() < 2e-3 and np.abs(got - ref)[ref > -60].max() < 0.2
    assert np.abs(got - m.Frontend("mel256")(torch.from_numpy(sig[None]))[0, 0].numpy()).max() > 1  # differs


# ----------------------------------------------------------------------------- extractor


def test_spec_parsing_and_outputs():
    ext = build("openl3:mel256/music/512", ExtractOptions(extra=(("native", "1"),)))
    outs = {o.name: o for o in ext.outputs()}
    assert set(outs) == {"openl3-mel256-music-512", "openl3-mel256-music-512-native"}
    assert outs["openl3-mel256-music-512"].shape == (512,) and outs["openl3-mel256-music-512"].hop is None
    assert outs["openl3-mel256-music-512-native"].hop == 0.1
    assert ext.needs().audio and ext.needs().audio_context == 0.5
    assert build("openl3").spec == "openl3" and build("openl3").outputs()[0].name == "openl3-mel256-music-512"
    v03 = build("openl3:linear/env/6144", ExtractOptions(extra=(("frontend", "v0.3"),)))
    assert [o.name for o in v03.outputs()] == ["openl3-linear-env-6144-v03"]
    for bad in ("openl3:mel64/music/512", "openl3:mel256/speech/512", "openl3:mel256/music/128", "openl3:mel256"):
        with pytest.raises(ExtractorError):
            build(bad)
    with pytest.raises(ExtractorError, match="frontend"):
        build("openl3:mel256/music/512", ExtractOptions(extra=(("frontend", "v9"),)))


def test_framing_matches_openl3(mel128_file):
    """Frame i is the 1 s window centred at i * 0.1 s of the centre-padded, end-padded signal."""
    path, _ = mel128_file
    audio = np.random.default_rng(3).uniform(-1, 1, (1, round(2.37 * SR))).astype(np.float32)
    # openl3 0.4 core: 24000 zeros in front, zeros at the end so the last 4800-sample hop fits.
    x = np.concatenate([np.zeros(SR // 2, np.float32), audio[0]])
    n = 1 + int(np.ceil((len(x) - SR) / 4800))
    x = np.pad(x, (0, (n - 1) * 4800 + SR - len(x)))
    want = np.stack([x[i * 4800 : i * 4800 + SR] for i in range(n)])

    ext = build("openl3:mel128/music/512", ExtractOptions(weights=str(path)))
    idx, windows = ext.frames(make_chunk(audio, 0, 3, 1.0))
    assert list(idx) == list(range(30)) and n == 20
    np.testing.assert_array_equal(windows[:n], want)
    assert not windows[n:, SR // 2 + round(0.37 * SR) :].any()  # later frames: zeros past the end


def test_chunked_equals_whole(mel128_file):
    """Three 0.2 s segments of stereo audio, as one chunk and as three: identical rows."""
    path, _ = mel128_file
    audio = np.random.default_rng(4).uniform(-0.5, 0.5, (2, round(0.55 * SR))).astype(np.float32)
    ext = build("openl3:mel128/music/512", ExtractOptions(weights=str(path), batch_size=4, extra=(("native", "1"),)))
    ext.check()
    ext.load("cpu")
    name = "openl3-mel128-music-512"
    whole = ext.extract(make_chunk(audio, 0, 3, 0.2))
    parts = [ext.extract(make_chunk(audio, k, 1, 0.2)) for k in range(3)]
    assert whole[name].shape == (3, 512) and whole[name + "-native"].shape == (6, 512)
    for key in (name, name + "-native"):
        np.testing.assert_allclose(np.concatenate([p[key] for p in parts]), whole[key], rtol=1e-5, atol=1e-5)
    # a segment row is the mean of the frames centred in it (0.0, 0.1 | 0.2, 0.3 | 0.4, 0.5)
    native = whole[name + "-native"]
    np.testing.assert_allclose(whole[name], native.reshape(3, 2, 512).mean(axis=1), rtol=1e-6, atol=1e-6)
    # stereo is averaged to mono before framing
    mono = ext.extract(make_chunk(audio.mean(axis=0, keepdims=True), 0, 3, 0.2))
    np.testing.assert_allclose(mono[name], whole[name], rtol=1e-5, atol=1e-5)
    assert ext.weights_identity() == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
