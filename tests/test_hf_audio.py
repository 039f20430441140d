"""hf-audio: a transformers audio encoder layer by layer, against transformers' own pipeline.

Tiny random checkpoints (wav2vec2, Whisper) are written with save_pretrained. The reference reads
the clip with PyAV, resamples with soxr, cuts the windows by the rule written out in
audio_refs.windows, and runs AutoFeatureExtractor + AutoModel as transformers documents them;
featpipe's rows come from `featpipe extract`. Tolerance: cosine >= 0.9999 per segment (float32 cache;
the resamplers differ above 0.9 x Nyquist, where this audio has no energy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from audio_refs import cosines, extract, music, pool, read_mono, windows, write_wave
from featpipe import open_cache
from featpipe.extractors import ExtractOptions, ExtractorError, build


def make_wav2vec2(folder: Path, seed: int = 0) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(seed)
    cfg = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    Wav2Vec2Model(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16_000, do_normalize=True).save_pretrained(folder)
    return folder


def make_whisper(folder: Path, seed: int = 0) -> Path:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(seed)
    cfg = WhisperConfig(
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=4,
        decoder_layers=1,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_mel_bins=80,
        vocab_size=64,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    WhisperModel(cfg).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hfclips")
    write_wave(folder / "long.mkv", music(7.0, seed=1))
    write_wave(folder / "short.mkv", music(2.5, seed=2))
    return folder


def reference_w2v(folder: Path, mono16: np.ndarray, window_s: float, context_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame centres (s) and last hidden states of the wav2vec2 checkpoint over the windowed recording."""
    from transformers import AutoFeatureExtractor, AutoModel

    fe = AutoFeatureExtractor.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    centres, frames = [], []
    for start, length, keep_lo, keep_hi in windows(
        len(mono16), 320, round(window_s * 16_000), round(context_s * 16_000)
    ):
        x = fe(mono16[start : start + length], sampling_rate=16_000, return_tensors="pt")
        with torch.no_grad():
            h = model(**x).last_hidden_state[0].numpy()
        c = start + 320 * np.arange(len(h)) + 199.5  # receptive field: 400 samples every 320
        keep = (c >= keep_lo) & (c < keep_hi)
        centres.append(c[keep] / 16_000)
        frames.append(h[keep])
    return np.concatenate(centres), np.concatenate(frames)


@pytest.fixture(scope="module")
def w2v(tmp_path_factory) -> Path:
    return make_wav2vec2(tmp_path_factory.mktemp("w2v") / "tiny-w2v")


def test_wav2vec2_matches_transformers_per_segment(w2v, clips, tmp_path):
    cache = tmp_path / "c.h5"
    extract(clips, cache, [f"hf-audio:{w2v}"], fps=4, sets={"window": "3", "context": "0.5"})
    for vid, seconds in (("long", 7.0), ("short", 2.5)):
        mono = read_mono(clips / f"{vid}.mkv", 16_000)
        centres, frames = reference_w2v(w2v, mono, 3.0, 0.5)
        want = pool(centres, frames, int(seconds * 4), 0.25)
        with open_cache(cache) as c:
            got = c.get(vid, "hf-audio-tiny-w2v").data
            attrs = c.info("hf-audio-tiny-w2v").attrs
        assert got.shape == want.shape == (int(seconds * 4), 32)
        cos = cosines(got, want)
        assert cos[1:-1].min() >= 0.9999, (vid, cos.round(6))
        assert cos.min() >= 0.999, (vid, cos.round(6))  # the edges: the resamplers meet the recording's ends apart
    assert list(attrs["layers"]) == [2] and attrs["frame_rate"] == 50.0


def test_layers_all_stack_every_hidden_state(w2v):
    ext = build(f"hf-audio:{w2v}", ExtractOptions(extra=(("layers", "all"),)))
    [out] = ext.outputs()
    assert out.shape == (3, 32) and out.attrs["layers"] == [0, 1, 2]
    assert build(f"hf-audio:{w2v}", ExtractOptions(extra=(("hf-audio.layers", "0,2"),))).outputs()[0].shape == (2, 32)


def test_whisper_encoder_frames_every_20_ms(tmp_path, clips):
    from transformers import AutoFeatureExtractor, AutoModel

    folder = make_whisper(tmp_path / "tiny-whisper")
    cache = tmp_path / "c.h5"
    extract(clips, cache, [f"hf-audio:{folder}"], fps=4, sets={"window": "30", "context": "0"})
    fe = AutoFeatureExtractor.from_pretrained(folder)
    enc = AutoModel.from_pretrained(folder).eval().get_encoder()
    for vid, seconds in (("long", 7.0), ("short", 2.5)):
        mono = read_mono(clips / f"{vid}.mkv", 16_000)
        with torch.no_grad():
            h = enc(fe(mono, sampling_rate=16_000, return_tensors="pt").input_features).last_hidden_state[0].numpy()
        c = 320 * np.arange(len(h)) / 16_000  # log-mel frame 2j, centred STFT: sample 320 j
        want = pool(c[c < seconds], h[c < seconds], int(seconds * 4), 0.25)
        with open_cache(cache) as cc:
            got = cc.get(vid, "hf-audio-tiny-whisper").data
        cos = cosines(got, want)
        assert cos[1:-1].min() >= 0.9999, (vid, cos.round(6))


def test_remote_code_and_other_models_are_refused_in_one_line(tmp_path, w2v):
    import json
    import shutil

    mert_like = tmp_path / "mert-like"
    shutil.copytree(w2v, mert_like)
    cfg = json.loads((mert_like / "config.json").read_text())
    (mert_like / "config.json").write_text(
        json.dumps({**cfg, "model_type": "mert_model", "auto_map": {"AutoModel": "modeling_MERT.MERTModel"}})
    )
    with pytest.raises(ExtractorError, match=r"use mert:") as err:
        build(f"hf-audio:{mert_like}").check()
    assert "\n" not in str(err.value)
    (mert_like / "config.json").write_text(
        json.dumps({**cfg, "model_type": "fancy_audio", "auto_map": {"AutoModel": "modeling_fancy.Model"}})
    )
    with pytest.raises(ExtractorError, match="remote code.*never runs"):
        build(f"hf-audio:{mert_like}").check()
    with pytest.raises(ExtractorError, match="exceeds"):
        build(f"hf-audio:{make_whisper(tmp_path / 'w')}", ExtractOptions(extra=(("window", "31"),))).check()
