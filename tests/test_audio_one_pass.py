"""Issue #20's one pass: vggish, ast, beats, mert, clap, hf-audio and priors fill one cache from one decode,
on one timeline, each through its real weight path (tiny random checkpoints in the published layouts);
`featpipe models` lists the new encoders; 16 and 24 kHz audio are made once per chunk, not per extractor."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner

from audio_refs import music, write_wave
from featpipe import cli, open_cache
from featpipe.extractors import ExtractOptions, build, rates
from featpipe.models import beats as bt
from featpipe.models import vggish as vg
from test_ast import make_ast
from test_beats import CFG as BEATS_CFG
from test_clap import make_tiny_clap
from test_frames import chunk_of
from test_hf_audio import make_wav2vec2
from test_mert import tiny


def test_one_pass_of_every_audio_encoder(tmp_path):
    torch.manual_seed(0)
    torch.save(vg.VGGish().state_dict(), tmp_path / vg.MODEL_FILE)
    ast, mert = make_ast(tmp_path / "ast"), tiny(tmp_path / "mert")
    clap, w2v = make_tiny_clap(tmp_path / "clap"), make_wav2vec2(tmp_path / "w2v")
    beats = bt.write_random(tmp_path / "BEATs_tiny.pt", BEATS_CFG)
    videos = tmp_path / "clips"
    videos.mkdir()
    write_wave(videos / "a.mkv", music(3.2, seed=7))
    write_wave(videos / "b.mkv", music(2.0, seed=8))
    cache = tmp_path / "c.h5"
    args = [
        "extract",
        str(videos),
        "-o",
        str(cache),
        "--fps",
        "1",
        "--max-seconds",
        "60",
        "--audio",
        "vggish",
        "--weights",
        f"vggish={tmp_path}",
        "--audio",
        f"ast:{ast}",
        "--audio",
        f"beats:{beats}",
        "--audio",
        f"mert:{mert}",
        "--audio",
        f"clap:{clap}",
        "--audio",
        f"hf-audio:{w2v}",
        "--audio",
        "priors",
        "--set",
        "mert.window=2",
        "--set",
        "mert.context=0.4",
        "--workers",
        "1",
        "--quiet",
        "--video-timeout",
        "0",
    ]
    res = CliRunner().invoke(cli.main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    desc = json.loads(CliRunner().invoke(cli.main, ["info", str(cache), "--json"]).output)
    names = {"vggish", "ast-ast", "beats-beats_tiny", "mert-mert", "clap-clap", "hf-audio-w2v", "priors"}
    assert names <= set(desc["features"])
    timelines = {
        n: {k: desc["features"][n]["timeline"][k] for k in ("hop", "start", "on_segment_timeline")} for n in names
    }
    assert all(t == timelines["priors"] for t in timelines.values())
    with open_cache(cache) as c:
        assert c.info("mert-mert").attrs["window_s"] == 2.0  # the scoped option reached mert only
        assert c.info("hf-audio-w2v").attrs["window_s"] == 10.0
        for vid, valid in (("a", 3), ("b", 2)):  # --max-seconds 60: 60 rows (MUSIC-AVQA padding); 3.2 s: 3 valid
            arrays = [c.get(vid, n) for n in sorted(names)]
            assert {a.data.shape[0] for a in arrays} == {60} and {a.valid for a in arrays} == {valid}
            assert c.get(vid, "mert-mert").data.shape == (60, 4, 32)
            for a in arrays:
                np.testing.assert_allclose(a.times, arrays[0].times)
                assert np.isfinite(a.data.astype(np.float32)).all()


def test_models_lists_the_encoders():
    out = CliRunner().invoke(cli.main, ["models"]).output
    for spec in (
        "ast:<Hugging Face repo id | local folder>",
        "mert:<Hugging Face repo id | local folder>",
        "hf-audio:<Hugging Face repo id | local folder>",
        "beats:<checkpoint.pt",
        "--set layers=<str> (default all)",
    ):
        assert spec in out


def test_each_rate_is_made_once_per_chunk(tmp_path):
    exts = [
        build(f"ast:{make_ast(tmp_path / 'ast')}"),
        build(f"hf-audio:{make_wav2vec2(tmp_path / 'w')}"),
        build(f"beats:{bt.write_random(tmp_path / 'b.pt', BEATS_CFG)}"),
        build(f"mert:{tiny(tmp_path / 'm')}", ExtractOptions(extra=(("window", "2"), ("context", "0.4")))),
    ]
    for e in exts:
        e.load("cpu")
    ctx = max(e.needs().audio_context for e in exts)
    chunk = chunk_of(music(4.0), 0, 4, 1.0, ctx)
    before = rates.calls["resampled"]
    for e in exts:
        e.extract(chunk)
    assert rates.calls["resampled"] - before == 2  # 16 kHz (ast, hf-audio, beats) and 24 kHz (mert)
