"""Feature identity through the CLI: a run whose feature would mean something else is refused with
what differs and the two ways out (a new cache, or a named variant); `featpipe info` shows the
fingerprint; heads refuse a cache whose feature identity differs from the one they were trained on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from featpipe import cli
from featpipe import open_cache
from featpipe.extractors.priors import Priors

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def gain_plugin(monkeypatch):
    """The ``gain`` test extractor (declared options gain, threads) in this process and in workers."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    import fp_gain  # noqa: F401 - registers "gain" here; workers import it through FEATPIPE_PLUGINS

    monkeypatch.setenv("FEATPIPE_PLUGINS", "fp_gain")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")])))


def _extract(clips, cache, *args):
    res = CliRunner().invoke(cli.main, ["extract", str(clips), "-o", str(cache), "--workers", "1", "--quiet",
                                        *map(str, args)])
    return res.exit_code, res.output


def _records(cache) -> int:
    with open_cache(cache) as c:
        return len(c.videos)


def _refused(clips, cache, *args) -> str:
    code, out = _extract(clips, cache, *args)
    assert code == 2, out
    (line,) = out.strip().splitlines()
    assert "write to a new cache (-o other.h5) or name this variant (--name " in line
    return line


def test_another_identity_is_refused_and_the_ways_out_work(clips, tmp_path, gain_plugin, monkeypatch):
    cache = tmp_path / "c.h5"
    code, out = _extract(clips, cache, "--audio", "gain", "--audio", "priors")
    assert code == 0, out
    with open_cache(cache) as c:
        gain = {v: c.get(v, "gain").data for v in c.videos}

    line = _refused(clips, cache, "--audio", "gain", "--set", "gain=2")
    assert "feature 'gain'" in line and "options.gain=1.0, this run gives 2.0" in line
    line = _refused(clips, cache, "--audio", "priors", "--dtype", "float32")
    assert "feature 'priors'" in line and "dtype='float16', this run gives 'float32'" in line
    with monkeypatch.context() as m:
        m.setattr(Priors, "version", "2")  # a newer featpipe whose priors changed
        line = _refused(clips, cache, "--audio", "priors")
    assert "version='1', this run gives '2'" in line
    assert _records(cache) == 3  # nothing was appended by the refused runs

    code, out = _extract(clips, cache, "--audio", "gain", "--set", "threads=4")  # speed only: same identity
    assert code == 0 and "skipped 3" in out, out

    code, out = _extract(clips, cache, "--audio", "gain", "--set", "gain=2", "--name", "gain2")  # a variant
    assert code == 0 and "done 3" in out, out
    with open_cache(cache) as c:
        assert set(c.features) == {"gain", "gain2", "priors"}
        for v, rows in gain.items():
            np.testing.assert_array_equal(c.get(v, "gain").data, rows)  # the original is untouched
            np.testing.assert_allclose(c.get(v, "gain2").data, 2 * rows, rtol=1e-6)
    code, out = _extract(clips, cache, "--audio", "gain", "--set", "gain=2", "--name", "gain2")
    assert code == 0 and "skipped 3" in out, out  # the variant resumes under its own name

    desc = json.loads(CliRunner().invoke(cli.main, ["info", str(cache), "--json"]).output)["features"]
    assert desc["gain"]["identity"]["options"] == {"gain": 1.0}  # threads does not affect the output
    assert desc["gain2"]["identity"]["options"] == {"gain": 2.0}
    assert desc["gain"]["fingerprint"].startswith("sha256:")
    assert desc["gain"]["fingerprint"] != desc["gain2"]["fingerprint"]
    text = CliRunner().invoke(cli.main, ["info", str(cache)]).output
    assert f"fingerprint {desc['gain2']['fingerprint']}: gain v1, gain=2.0, stored float32" in text

    other = tmp_path / "other.h5"  # the other way out: a new cache
    code, out = _extract(clips, other, "--audio", "gain", "--set", "gain=2")
    assert code == 0, out
    res = CliRunner().invoke(cli.main, ["merge", str(cache), str(other), "-o", str(tmp_path / "merged.h5")])
    assert res.exit_code == 2 and "identity.options.gain 1.0 vs 2.0" in res.output, res.output  # shards must agree
    from featpipe.heads.data import HeadError, check_features

    with open_cache(cache) as a, open_cache(other) as b:
        trained = [{"name": "gain", "shape": [1], "provenance": a.provenance("gain")}]
        check_features(a, trained, "head")  # the cache it was trained on is accepted
        with pytest.raises(HeadError, match=r"identity\.options\.gain=1\.0; this cache has 2\.0: features differ"):
            check_features(b, trained, "head")


def test_set_values_and_names_are_checked_before_any_work(clips, tmp_path, gain_plugin):
    cache = tmp_path / "c.h5"
    for args, says in [(("--audio", "gain", "--set", "gain=loud"), "gain='loud' is not a valid float"),
                       (("--audio", "gain", "--audio", "priors", "--name", "x"), "say which extractor, as SPEC=NAME"),
                       (("--audio", "gain", "--name", "nosuch=x"), "no such extractor"),
                       (("--audio", "gain", "--name", "../../x"), "a feature name, not a path")]:
        code, out = _extract(clips, cache, *args)
        assert code == 2, out
        (line,) = out.strip().splitlines()
        assert says in line, line
    assert not cache.exists()


def test_weights_per_extractor_checked_against_the_spec(clips, tmp_path):
    from featpipe.models import openl3 as m
    from test_openl3 import random_arrays, write_keras_h5

    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    a = first / m.weight_filename("mel128", "music")
    b = second / m.weight_filename("mel128", "music")
    write_keras_h5(a, random_arrays(seed=0))
    write_keras_h5(b, random_arrays(seed=1))  # same model, other weights
    cache = tmp_path / "c.h5"
    code, out = _extract(clips, cache, "--audio", "openl3:mel128/music/512", "--audio", "priors",
                         "--weights", f"openl3={a}")
    assert code == 0, out
    with open_cache(cache) as c:
        assert c.info("openl3-mel128-music-512").weights.startswith("sha256:")

    line = _refused(clips, cache, "--audio", "openl3:mel128/music/512", "--weights", f"openl3:mel128/music/512={b}")
    assert "feature 'openl3-mel128-music-512'" in line and "weights='sha256:" in line

    for args, says in [
        (("--audio", "openl3:mel256/music/512", "--weights", f"openl3={a}"),  # mel128 file for a mel256 spec
         "holds the mel128/music model; this spec needs openl3_audio_mel256_music-v0_4_0.h5"),
        (("--audio", "openl3:mel128/env/512", "--weights", str(a)), "holds the mel128/music model"),
        (("--audio", "priors", "--weights", f"clip={a}"), "--weights clip=...: no extractor 'clip' in this run"),
    ]:
        code, out = _extract(clips, tmp_path / "new.h5", *args)
        assert code == 2, out
        (line,) = out.strip().splitlines()
        assert says in line, line


def test_adding_a_native_frame_extractor_computes_only_it(clips, tmp_path, tiny_clip):
    """A visual identity records the extractor's own frame request; CLIP (native frames) beside
    motion (64-pixel frames) neither changes motion's identity nor makes it recompute."""
    cache = tmp_path / "c.h5"
    code, out = _extract(clips, cache, "--visual", "motion")
    assert code == 0, out
    with open_cache(cache) as c:
        before = {v: c.record(v)["features"]["motion"] for v in c.videos}
        ident = c.provenance("motion")["identity"]
        rows = {v: c.get(v, "motion").data for v in c.videos}
    assert ident["decode"]["frames"] == {"positions": [0.1, 0.3, 0.5, 0.7, 0.9], "short_side": 64, "native": False}
    code, out = _extract(clips, cache, "--visual", "motion", "--visual", f"clip:{tiny_clip}/random")
    assert code == 0 and "done 3" in out, out
    with open_cache(cache) as c:
        assert {v: c.record(v)["features"]["motion"] for v in c.videos} == before  # not rewritten: only CLIP ran
        assert c.provenance("motion")["identity"] == ident
        clip = next(n for n in c.features if n.startswith("clip"))
        assert c.provenance(clip)["identity"]["decode"]["frames"]["native"] is True
        assert all(c.has(v, clip) for v in c.videos)
        for v, r in rows.items():
            np.testing.assert_array_equal(c.get(v, "motion").data, r)
