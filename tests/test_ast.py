"""ast: the Audio Spectrogram Transformer per segment, against transformers' own pipeline.

A tiny random ASTModel with a feature extractor whose parameters all differ from the defaults
(64 mel bins, its own mean and std) is written with save_pretrained. The reference reads the clip
with PyAV, resamples with soxr, cuts each segment's 10.24 s window centred on the segment (zeros
outside the recording) and runs ASTFeatureExtractor + ASTModel; featpipe's rows come from
`featpipe extract`. Tolerance: cosine >= 0.9999 per segment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from audio_refs import cosines, extract, music, read_mono, write_wave
from featpipe import open_cache
from featpipe.extractors import ExtractOptions, ExtractorError, build


def make_ast(folder: Path, seed: int = 0) -> Path:
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    torch.manual_seed(seed)
    cfg = ASTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_mel_bins=64,
        max_length=1024,
        frequency_stride=10,
        time_stride=10,
    )
    ASTModel(cfg).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=64, max_length=1024, mean=-6.0, std=3.0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_ast(tmp_path_factory) -> Path:
    return make_ast(tmp_path_factory.mktemp("ast") / "tiny-ast")


def reference(folder: Path, mono16: np.ndarray, n_segments: int, seg: float, window: float) -> np.ndarray:
    from transformers import ASTFeatureExtractor, ASTModel

    fe = ASTFeatureExtractor.from_pretrained(folder)
    model = ASTModel.from_pretrained(folder).eval()
    n = round(window * 16_000)
    rows = []
    for k in range(n_segments):
        start = round((k + 0.5) * seg * 16_000) - n // 2
        w = np.zeros(n)
        lo, hi = max(start, 0), min(start + n, len(mono16))
        w[lo - start : hi - start] = mono16[lo:hi]  # zeros outside the recording
        with torch.no_grad():
            rows.append(model(**fe(w, sampling_rate=16_000, return_tensors="pt")).pooler_output[0].numpy())
    return np.stack(rows)


def test_featpipe_extract_equals_transformers(tiny_ast, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_wave(clips / "a.mkv", music(7.0, seed=5))
    cache = tmp_path / "c.h5"
    extract(clips, cache, [f"ast:{tiny_ast}"], fps=2)
    want = reference(tiny_ast, read_mono(clips / "a.mkv", 16_000), 14, 0.5, 10.24)
    with open_cache(cache) as c:
        got = c.get("a", "ast-tiny-ast").data
        info = c.info("ast-tiny-ast")
    assert got.shape == want.shape == (14, 32)
    cos = cosines(got, want)
    assert cos.min() >= 0.9999, cos.round(6)
    assert info.attrs["window_s"] == 10.24 and info.attrs["num_mel_bins"] == 64


def test_spec_options_and_one_line_errors(tiny_ast, tmp_path):
    ext = build(f"ast:{tiny_ast}")
    [out] = ext.outputs()
    assert out.name == "ast-tiny-ast" and out.shape == (32,)
    assert 5.12 < ext.needs().audio_context < 5.2
    assert build(f"ast:{tiny_ast}", ExtractOptions(extra=(("ast.window", "4"),))).needs().audio_context < 2.1
    with pytest.raises(ExtractorError, match="more than the model's"):
        build(f"ast:{tiny_ast}", ExtractOptions(extra=(("window", "11"),))).check()
    with pytest.raises(ExtractorError, match="must be"):
        build("ast:")
