"""The beat timeline (``--timeline beats[:N]``): boundaries, pooling, the cache's bounds, the CLI."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from click.testing import CliRunner

from featpipe import cli, open_cache
from featpipe.contracts import ExtractOptions
from featpipe.decode import DecodeParams
from featpipe.run.beat_timeline import (FALLBACK_S, Timeline, TimelineError, boundaries, parse_timeline, pool,
                               valid_segments)
from featpipe.run import extract_video as video_mod
from featpipe.run.extract_video import VideoJob, process_video

R = 48000
BEATS = np.arange(0.25, 5.0, 0.5)  # 120 BPM clicks from 0.25 s


def write_clicks(path, seconds: float = 5.0, beats=BEATS, fps: int = 10) -> str:
    """A small mp4: a grey ramp picture and stereo clicks at ``beats``."""
    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
    as_ = out.add_stream("aac", rate=R, layout="stereo")
    x = np.zeros((2, int(seconds * R)), np.float32)
    for t in beats:
        i = int(round(t * R))
        x[:, i:i + 480] += (0.8 * np.exp(-np.arange(480) / 40) * np.sin(np.arange(480) * 0.7)).astype(np.float32)
    for i in range(int(seconds * fps)):
        img = np.full((48, 64, 3), int(255 * i / (seconds * fps)), np.uint8)
        img[:, (i * 3) % 64] = 255  # something moves
        for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(p)
    step = 1024
    for s0 in range(0, x.shape[1], step):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, s0:s0 + step]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = R, s0, Fraction(1, R)
        for p in as_.encode(frame):
            out.mux(p)
    for s in (vs, as_):
        for p in s.encode():
            out.mux(p)
    out.close()
    return str(path)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("timeline") / "videos"
    root.mkdir()
    write_clicks(root / "clicks.mp4")
    return root


def test_parse_timeline() -> None:
    assert parse_timeline("seconds") == Timeline() and not Timeline().as_dict()
    assert parse_timeline("beats") == Timeline("beats", 1)
    assert parse_timeline("beats:4") == Timeline("beats", 4) and str(Timeline("beats", 4)) == "beats:4"
    for bad in ("bars", "beats:0", "beats:x", "seconds:2"):
        with pytest.raises(TimelineError):
            parse_timeline(bad)


def test_boundaries_rules() -> None:
    beats = np.arange(0.2, 4.9, 0.5)
    b, fb = boundaries(beats, 4.9)
    assert not fb
    # the 0.2 s pickup (< half a beat) joins the first segment, the 0.2 s tail the last
    np.testing.assert_allclose(b[:, 0], [0.0, *beats[1:-1]])
    assert b[-1, 1] == 4.9 and np.all(b[1:, 0] == b[:-1, 1])
    b1, _ = boundaries(BEATS, 5.0)  # a 0.25 s pickup is half a beat: its own segment
    np.testing.assert_allclose(b1[:, 0], [0.0, *BEATS])
    b2, _ = boundaries(np.arange(0.3, 5.0, 0.5), 5.0, per=2)
    np.testing.assert_allclose(b2[:, 0], [0.0, 1.3, 2.3, 3.3, 4.3])  # the 0.3 s pickup is kept: >= half a bar
    b3, fb3 = boundaries(np.array([1.0]), 3.5)  # fewer than two beats: fixed seconds
    assert fb3 and np.allclose(b3, [[0, 1], [1, 2], [2, 3], [3, 3.5]]) and FALLBACK_S == 1.0
    assert valid_segments(b3, 2.0) == 2 and valid_segments(b3, 2.1) == 3


def test_pool_mean_by_centre_nearest_for_empty_and_tokens() -> None:
    x = np.arange(8 * 3 * 2, dtype=np.float32).reshape(8, 3, 2)  # 8 rows of (3 tokens, 2)
    centres = (np.arange(8) + 0.5) * 0.25
    bounds = np.array([[0.0, 0.6], [0.6, 0.62], [0.62, 0.7], [0.7, 2.0]])
    out = pool(x, centres, bounds)
    assert out.shape == (4, 3, 2)
    np.testing.assert_array_equal(out[0], x[:2].mean(0))  # centres 0.125, 0.375
    np.testing.assert_array_equal(out[1], x[2])  # no centre inside: the row under its middle (0.61)
    np.testing.assert_array_equal(out[2], x[2])  # one centre (0.625)
    np.testing.assert_array_equal(out[3], x[3:].mean(0))


def job(path, timeline=Timeline("beats"), chunk: int = 16, specs=("priors", "rhythm", "motion")) -> VideoJob:
    opts = ExtractOptions(extra=(("beat_times", "1"),))
    return VideoJob("clicks", path, specs, opts, DecodeParams(fps=4, chunk_segments=chunk), timeline=timeline)


def test_chunked_equals_whole_and_one_decode(clip, monkeypatch) -> None:
    calls = []
    real = video_mod.iter_chunks

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(video_mod, "iter_chunks", counting)
    path = str(clip / "clicks.mp4")
    whole = process_video(job(path, chunk=64))
    assert whole.ok, whole.reason
    assert calls == [1]  # the beat timeline is a step after the one decode
    parts = process_video(job(path, chunk=3))
    assert parts.ok, parts.reason
    np.testing.assert_array_equal(whole.bounds, parts.bounds)
    assert set(whole.arrays) == {"priors", "rhythm", "motion"}  # rhythm-beats is consumed
    for k in whole.arrays:
        np.testing.assert_array_equal(whole.arrays[k], parts.arrays[k])
    # the edges are the clicks (10 ms frames, the tracker's placement: within 30 ms)
    edges = whole.bounds[1:, 0]
    assert len(edges) == len(BEATS) and np.abs(edges - BEATS).max() < 0.03, edges
    assert whole.info["timeline"]["fallback"] is False


def test_silence_falls_back_to_seconds(tmp_path) -> None:
    path = write_clicks(tmp_path / "quiet.mp4", seconds=3.0, beats=[])
    res = process_video(job(path, specs=("priors", "rhythm")))
    assert res.ok, res.reason
    assert res.info["timeline"]["fallback"] is True
    np.testing.assert_allclose(res.bounds, [[0, 1], [1, 2], [2, 3]])


def extract(args) -> None:
    res = CliRunner().invoke(cli.main, ["extract", *map(str, args), "--workers", "1", "--quiet"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output


def test_cli_beat_cache_equals_pooled_fixed_cache(clip, tmp_path) -> None:
    beat, fixed = tmp_path / "beats.h5", tmp_path / "fixed.h5"
    extract([clip, "-o", beat, "--audio", "priors", "--audio", "rhythm", "--visual", "motion", "--fps", "4",
             "--timeline", "beats"])
    extract([clip, "-o", fixed, "--audio", "priors", "--audio", "rhythm", "--visual", "motion", "--fps", "4",
             "--set", "beat_times=1"])
    with open_cache(beat) as b, open_cache(fixed) as f:
        assert b.beats and not f.beats and b.timeline["kind"] == "beats"
        assert "rhythm-beats" not in b.features and "rhythm-beats" in f.features
        bounds = b.bounds("clicks")
        for name in ("priors", "rhythm", "motion"):
            got = b.get("clicks", name)
            np.testing.assert_array_equal(got.bounds, bounds)
            np.testing.assert_allclose(got.times, bounds.mean(axis=1))
            rows = f.get("clicks", name)
            want = pool(rows.data.astype(np.float32), rows.times, bounds)
            np.testing.assert_allclose(got.data.astype(np.float32), want, rtol=2e-3, atol=2e-3)
        fr = f.get("clicks", "priors")
        np.testing.assert_allclose(fr.bounds, np.stack([fr.times - 0.125, fr.times + 0.125], 1))
        x, m = b.batch(b.videos, "priors")
        assert x.shape[1] == bounds.shape[0] and m.all()
        ident = b.provenance("priors")["identity"]["decode"]["timeline"]
        assert ident == {"kind": "beats", "beats_per_segment": 1, "fallback_s": FALLBACK_S}
        assert "timeline" not in f.provenance("priors")["identity"]["decode"]  # fixed seconds: as before


def test_cli_refusals(clip, tmp_path) -> None:
    cache = tmp_path / "c.h5"
    res = CliRunner().invoke(cli.main, ["extract", str(clip), "-o", str(cache), "--audio", "priors",
                                        "--timeline", "beats", "--workers", "1", "--quiet"])
    assert res.exit_code != 0 and "add --audio rhythm" in res.output
    res = CliRunner().invoke(cli.main, ["extract", str(clip), "-o", str(cache), "--audio", "rhythm",
                                        "--timeline", "bars"])
    assert res.exit_code == 2 and "seconds, beats or beats:N" in res.output
    extract([clip, "-o", cache, "--audio", "priors", "--audio", "rhythm", "--fps", "4", "--timeline", "beats:2"])
    res = CliRunner().invoke(cli.main, ["extract", str(clip), "-o", str(cache), "--audio", "priors", "--fps", "4",
                                        "--workers", "1", "--quiet"])
    assert res.exit_code != 0 and "another timeline" in res.output and "kind='beats'" in res.output


def test_merge_keeps_each_videos_bounds(clip, tmp_path) -> None:
    from featpipe.cache.merge import merge_caches

    a, b, merged = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "m.h5"
    other = tmp_path / "other"
    other.mkdir()
    write_clicks(other / "slow.mp4", seconds=4.0, beats=np.arange(0.4, 4.0, 0.75))
    for cache, src in ((a, clip), (b, other)):
        extract([src, "-o", cache, "--audio", "rhythm", "--fps", "4", "--timeline", "beats"])
    merge_caches([a, b], merged)
    with open_cache(merged) as m, open_cache(a) as ca, open_cache(b) as cb:
        assert m.beats and m.videos == ["clicks", "slow"]
        np.testing.assert_array_equal(m.bounds("clicks"), ca.bounds("clicks"))
        np.testing.assert_array_equal(m.bounds("slow"), cb.bounds("slow"))
        assert m.get("slow", "rhythm").data.shape[0] == cb.bounds("slow").shape[0]
