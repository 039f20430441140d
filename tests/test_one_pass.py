"""Issue "OpenL3 and CLAP": CLIP, OpenL3, CLAP and the priors fill one cache in one run, on one
timeline, each loaded through its real weight path (tiny random weights written here)."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from featpipe import cli
from featpipe import open_cache
from featpipe.models import openl3 as m
from media import write_clip
from test_clap import make_tiny_clap
from test_openl3 import random_arrays, write_keras_h5


def test_clip_openl3_clap_and_priors_in_one_pass(tmp_path, tiny_clip):
    weights = tmp_path / m.weight_filename("mel128", "music")
    write_keras_h5(weights, random_arrays())
    clap = make_tiny_clap(tmp_path / "tiny-clap")
    videos = tmp_path / "clips"
    videos.mkdir()
    for i, secs in enumerate((2.0, 3.0)):
        write_clip(videos / f"v{i}.mp4", seconds=secs, fps=10, freq=300.0 + 100 * i)
    cache = tmp_path / "c.h5"
    res = CliRunner().invoke(cli.main, [
        "extract", str(videos), "-o", str(cache), "--visual", f"clip:{tiny_clip}/random",
        "--audio", "openl3:mel128/music/512", "--weights", str(weights), "--audio", f"clap:{clap}",
        "--audio", "priors", "--workers", "1", "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    desc = json.loads(CliRunner().invoke(cli.main, ["info", str(cache), "--json"]).output)
    names = {"clip-tiny-clip-random", "openl3-mel128-music-512", "clap-tiny-clap", "priors"}
    assert names <= set(desc["features"])
    timelines = {n: {k: desc["features"][n]["timeline"][k] for k in ("hop", "start", "on_segment_timeline")}
                 for n in names}
    assert all(t == timelines["priors"] for t in timelines.values())  # same hop and start
    assert {desc["features"][n]["rows"] for n in names} == {5}
    with open_cache(cache) as c:
        for vid, rows in (("v0", 2), ("v1", 3)):
            arrays = [c.get(vid, n) for n in sorted(names)]
            assert {a.data.shape[0] for a in arrays} == {rows}
            for a in arrays:
                np.testing.assert_allclose(a.times, arrays[0].times)
                assert np.isfinite(a.data.astype(np.float32)).all()
        assert c.info("openl3-mel128-music-512").weights.startswith("sha256:")
