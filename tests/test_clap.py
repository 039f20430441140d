"""CLAP extractor: weight resolution, windows, determinism, and a real `featpipe extract` run.

Everything is offline: a tiny random ClapModel (about 37k parameters, the real input shapes:
64 mel bins, 1001 frames for 10 s) is saved with save_pretrained into a temporary folder,
next to a hand-made tiny RoBERTa-style tokenizer (the real tokenizer files are not in any wheel).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from featpipe import cli
from featpipe import open_cache
from featpipe.decode import DecodeParams, count_segments, iter_chunks, probe
from featpipe.extractors import AUDIO_RATE as SR
from featpipe.extractors import Chunk, ExtractOptions, ExtractorError, WeightsError, build
from featpipe.extractors.clap import input_features, segment_windows
from featpipe.models.weights import sha256_file
from media import write_clip

WORDS = "is the a what how many are there in video which instrument sound playing first left right ? , .".split()


def make_tiny_clap(folder: Path, fusion: bool = False, seed: int = 0) -> Path:
    """Save a tiny random CLAP checkpoint (model, feature extractor, tokenizer) into ``folder``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, PreTrainedTokenizerFast

    audio = dict(spec_size=256, num_mel_bins=64, window_size=8, patch_size=4, patch_stride=(4, 4),
                 patch_embeds_hidden_size=16, depths=[1, 1], num_attention_heads=[2, 2], hidden_size=32,
                 enable_fusion=fusion)
    text = dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=80, projection_hidden_size=32)
    torch.manual_seed(seed)
    ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=16)).save_pretrained(folder)
    ClapFeatureExtractor(frequency_min=50, truncation="fusion" if fusion else "rand_trunc").save_pretrained(folder)
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>", mask_token="<mask>", model_max_length=64).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clap(tmp_path_factory) -> Path:
    return make_tiny_clap(tmp_path_factory.mktemp("clap") / "tiny-clap")


@pytest.fixture(scope="session")
def loaded(tiny_clap):
    ext = build(f"clap:{tiny_clap}", ExtractOptions(batch_size=4))
    ext.check()
    ext.load("cpu")
    return ext


def chunk_of(audio: np.ndarray, first: int, count: int, seg: float, ctx: float) -> Chunk:
    """The chunk the decoder would deliver for ``audio`` (zeros outside the recording)."""
    s, e = round((first * seg - ctx) * SR), round(((first + count) * seg + ctx) * SR)
    out = np.zeros((audio.shape[0], e - s), np.float32)
    lo, hi = max(s, 0), min(e, audio.shape[1])
    out[:, lo - s:hi - s] = audio[:, lo:hi]
    return Chunk("v", first, count, seg, audio.shape[1] / SR, audio=out, audio_context=ctx)


# ----------------------------------------------------------------------------- spec and weights


def test_spec_outputs_and_options(tiny_clap):
    ext = build(f"clap:{tiny_clap}/")
    [out] = ext.outputs()
    assert out.name == "clap-tiny-clap" and out.shape == (16,) and out.modality == "audio"
    assert out.attrs["truncation"] == "rand_trunc" and not out.attrs["fusion"]
    assert ext.needs().audio and ext.needs().audio_context == 2.5  # default 5 s window
    assert build(f"clap:{tiny_clap}", ExtractOptions(extra=(("clap_window", "2"),))).needs().audio_context == 1.0
    assert build(f"clap:{tiny_clap}", ExtractOptions(extra=(("clap_window", "30"),))).window == 10.0  # model max
    ext.check()
    assert ext.weights_identity() == "sha256:" + sha256_file(tiny_clap / "model.safetensors")
    for bad in (("clap_window", "x"), ("clap_window", "0"), ("clap_padding", "mirror")):
        with pytest.raises(ExtractorError):
            build(f"clap:{tiny_clap}", ExtractOptions(extra=(bad,)))
    with pytest.raises(ExtractorError, match="must be"):
        build("clap:")


def test_without_transformers_a_one_line_hint(tiny_clap, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "transformers" else real(n, *a))
    with pytest.raises(ExtractorError, match=r"pip install 'featpipe\[clap\]'"):
        build(f"clap:{tiny_clap}")


def test_repo_id_from_the_hf_cache_and_one_line_errors(tiny_clap, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("FEATPIPE_NO_DOWNLOAD", "1")
    with pytest.raises(WeightsError) as err:
        build("clap:nosuch-org/nosuch_clap").check()
    msg = str(err.value)
    assert "\n" not in msg and "huggingface-cli download nosuch-org/nosuch_clap" in msg and "no network" in msg

    # the layout huggingface_hub writes: refs/main names the snapshot folder
    repo = tmp_path / "hub" / "models--some-org--my_clap"
    snap = repo / "snapshots" / ("ab" * 20)
    shutil.copytree(tiny_clap, snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("ab" * 20)
    ext = build("clap:some-org/my_clap")
    assert ext.outputs()[0].name == "clap-my_clap"
    ext.check()
    assert ext.folder == snap
    assert ext.weights_identity() == "sha256:" + sha256_file(tiny_clap / "model.safetensors")

    (snap / "model.safetensors").unlink()  # only partly cached
    with pytest.raises(WeightsError, match="partly"):
        build("clap:some-org/my_clap").check()

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="save_pretrained") as err:
        build(f"clap:{empty}").check()
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- windows and inputs


def test_windows_are_centred_and_clipped_to_the_recording(loaded):
    # 1 s segments of a 3.3 s recording, 5 s windows
    wins = segment_windows(0, 4, 1.0, 3.3, 5.0)
    assert [(a / SR, b / SR) for a, b in wins] == [(0, 3.0), (0, 3.3), (0, 3.3), (1.0, 3.3)]
    # segments longer than the window: the window is the segment; longer than 10 s: centre 10 s
    assert segment_windows(1, 1, 4.0, 20.0, 4.0) == [(4 * SR, 8 * SR)]
    assert segment_windows(0, 1, 12.0, 30.0, 10.0) == [(1 * SR, 11 * SR)]
    # the audio handed to the model is exactly those samples, averaged over channels
    ramp = np.arange(round(3.3 * SR), dtype=np.float32) / SR
    audio = np.stack([ramp, 3 * ramp])
    got = loaded.windows(chunk_of(audio, 2, 2, 1.0, 2.5))
    np.testing.assert_allclose(got[0], 2 * ramp[0:round(3.3 * SR)])
    np.testing.assert_allclose(got[1], 2 * ramp[SR:round(3.3 * SR)])


@pytest.mark.parametrize("fusion", [False, True])
def test_inputs_match_clap_feature_extractor(tmp_path, fusion):
    from transformers import ClapFeatureExtractor

    folder = make_tiny_clap(tmp_path / "m", fusion=fusion) if fusion else None
    fe = ClapFeatureExtractor.from_pretrained(folder) if folder else ClapFeatureExtractor(frequency_min=50)
    rng = np.random.default_rng(0)
    sine = 0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * SR) / SR)
    wins = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (SR, round(3.3 * SR), 10 * SR)] + [sine.astype(np.float32)]
    trunc = "fusion" if fusion else "rand_trunc"
    for padding in ("repeatpad", "pad", "repeat"):
        ref = fe(wins, truncation=trunc, padding=padding, sampling_rate=SR, return_tensors="pt")["input_features"]
        got = input_features(wins, fe, trunc, padding, "cpu")
        assert got.shape == (len(wins), 1, 1001, 64)
        torch.testing.assert_close(got[:, 0], ref[:, 0], atol=1e-3, rtol=1e-5)  # dB; fusion: channel 0 is read


@pytest.mark.parametrize("fusion", [False, True])
def test_chunked_equals_whole_and_runs_repeat_exactly(tiny_clap, tmp_path, fusion):
    folder = make_tiny_clap(tmp_path / "f", fusion=True) if fusion else tiny_clap
    ext = build(f"clap:{folder}", ExtractOptions(batch_size=3))
    ext.load("cpu")
    audio = np.random.default_rng(1).uniform(-0.5, 0.5, (2, round(4.4 * SR))).astype(np.float32)
    ctx = ext.needs().audio_context
    name = ext.outputs()[0].name
    whole = ext.extract(chunk_of(audio, 0, 3, 1.0, ctx))[name]
    parts = np.concatenate([ext.extract(chunk_of(audio, k, 1, 1.0, ctx))[name] for k in range(3)])
    assert whole.shape == (3, 16)
    np.testing.assert_allclose(parts, whole, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
    np.random.seed(123)  # the feature extractor's random crops and fusion picks draw from here
    torch.manual_seed(123)
    again = ext.extract(chunk_of(audio, 0, 3, 1.0, ctx))[name]
    np.testing.assert_array_equal(again, whole)
    assert not np.allclose(whole[0], whole[2], atol=1e-3)  # different audio under each window


# ----------------------------------------------------------------------------- through the pipeline


def test_featpipe_extract_with_clap(tiny_clap, tmp_path):
    (tmp_path / "clips").mkdir()
    clip = write_clip(tmp_path / "clips" / "a.mp4", seconds=2.0, fps=10, freq=330.0)
    cache = tmp_path / "c.h5"
    spec = f"clap:{tiny_clap}"
    res = CliRunner().invoke(cli.main, ["extract", str(clip.parent), "-o", str(cache), "--audio", spec,
                                        "--workers", "1", "--quiet", "--set", "clap_window=3"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    with open_cache(cache) as c:
        got = c.get("a", "clap-tiny-clap")
        info = c.info("clap-tiny-clap")
        assert info.spec == spec and info.weights == "sha256:" + sha256_file(tiny_clap / "model.safetensors")
        assert info.attrs["window_s"] == 3.0 and info.modality == "audio"
    assert got.data.shape == (2, 16) and got.valid == 2
    # the same rows as running the extractor on the decoder's chunks of that file directly
    ext = build(spec, ExtractOptions(extra=(("clap_window", "3"),)))
    ext.load("cpu")
    media = probe(str(clip))
    params = DecodeParams()
    _, valid = count_segments(media.duration, params)
    want = np.concatenate([ext.extract(ch)["clap-tiny-clap"] for ch in iter_chunks(media, ext.needs(), params, "a", valid)])
    np.testing.assert_allclose(got.data.astype(np.float32), want, atol=2e-3)
