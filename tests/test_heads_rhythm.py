"""The AVQA head on beat-timeline caches (variable lengths, masks) and its rhythm option, via the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from featpipe import open_cache
from featpipe.cli import main
from featpipe.heads.data import HeadError, choose_rhythm, default_features, describe, load_segments
from featpipe.synth import make_dataset


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads_rhythm")
    make_dataset(root / "data", videos=8, seed=3, seconds=3.0, fps=8, size=(96, 64))
    videos = str(root / "data" / "videos")
    run = CliRunner().invoke
    for cache, extra in ((root / "beats.h5", ["--fps", "4", "--timeline", "beats"]),
                         (root / "fixed.h5", ["--fps", "4", "--set", "beat_times=1"])):
        r = run(main, ["extract", videos, "-o", str(cache), "--audio", "priors", "--audio", "rhythm",
                       "--workers", "1", "--quiet", *extra], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    return root


def test_beat_cache_loads_with_per_video_lengths_and_masks(synth) -> None:
    with open_cache(synth / "beats.h5") as c:
        metas = describe(c, default_features(c, tokens=False))
        arrays, T = load_segments(c, c.videos, metas)
        lengths = [c.bounds(v).shape[0] for v in c.videos]
        assert T == max(lengths) and len(set(lengths)) > 1  # the videos' beats differ
        for name, (x, mask) in arrays.items():
            assert x.shape[:2] == (len(c.videos), T)
            np.testing.assert_array_equal(mask.sum(axis=1), [c.get(v, name).valid for v in c.videos])
            assert not np.any(x[~mask])  # rows past a video's last beat segment are zero padding


def test_rhythm_option_chooses_features(synth) -> None:
    with open_cache(synth / "fixed.h5") as c:
        base = default_features(c, tokens=False)
        assert "rhythm-beats" not in base and set(base) == {"priors", "rhythm"}
        assert choose_rhythm(c, base, False) == ["priors"]
        assert choose_rhythm(c, ["priors"], True) == ["priors", "rhythm"]
        assert choose_rhythm(c, base, None) == base
    with open_cache(synth / "beats.h5") as c:
        only = [n for n in c.features if n != "rhythm"]
    assert only == ["priors"]


def train(synth, cache: str, out, *flags: str):
    data = synth / "data"
    return CliRunner().invoke(main, ["train-head", str(synth / cache), "--task", "avqa", "--train",
                                     str(data / "avqa-train.json"), "--val", str(data / "avqa-val.json"),
                                     "--epochs", "2", "-o", str(out), "--quiet", *flags])


def test_cli_train_evaluate_on_beats_with_and_without_rhythm(synth, tmp_path) -> None:
    used = {}
    for flag in ("--rhythm", "--no-rhythm"):
        head = tmp_path / flag.strip("-")
        r = train(synth, "beats.h5", head, flag)
        assert r.exit_code == 0, r.output
        used[flag] = [f["name"] for f in json.loads((head / "head.json").read_text())["features"]]
        r = CliRunner().invoke(main, ["evaluate", str(head), str(synth / "beats.h5"), "--test",
                                      str(synth / "data" / "avqa-test.json")])
        assert r.exit_code == 0, r.output
        assert "Temporal" in r.output or "Temp" in r.output
    assert used == {"--rhythm": ["priors", "rhythm"], "--no-rhythm": ["priors"]}
    # a head trained on beat segments refuses fixed-second features (another timeline), in one line
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "rhythm"), str(synth / "fixed.h5"), "--test",
                                  str(synth / "data" / "avqa-test.json")])
    assert r.exit_code != 0 and "timeline" in r.output and len(r.output.strip().splitlines()) == 1


def test_rhythm_option_without_rhythm_is_one_line(synth, tmp_path) -> None:
    with open_cache(synth / "beats.h5") as c:
        with pytest.raises(HeadError, match="--audio rhythm"):
            choose_rhythm(_NoRhythm(c), ["priors"], True)


class _NoRhythm:
    """A cache view without the rhythm feature."""

    def __init__(self, cache) -> None:
        self._c = cache
        self.features = [n for n in cache.features if n != "rhythm"]

    def provenance(self, name: str) -> dict:
        return self._c.provenance(name)


def test_rhythm_mirror_swaps_the_sides(synth) -> None:
    from featpipe.extractors.rhythm import COL
    from featpipe.heads.layout import read_layout, stream_layout

    with open_cache(synth / "fixed.h5") as c:
        lay = {n: read_layout(c.info(n)) for n in ("priors", "rhythm")}
    perm, sign = lay["rhythm"].mirror()
    assert np.all(sign == 1)
    for a, b in (("onset_rate_left", "onset_rate_right"), ("tempo_left_bpm", "tempo_right_bpm"),
                 ("tempo_strength_left", "tempo_strength_right")):
        assert perm[COL[a]] == COL[b] and perm[COL[b]] == COL[a]
    assert perm[COL["tempo_bpm"]] == COL["tempo_bpm"]
    assert stream_layout([lay["priors"], lay["rhythm"]], []).mirror_a is not None  # mirrored copies stay on
