"""Heads and the cache: loading on the segment timeline, checkpoint contents, refusing other features."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from safetensors import safe_open
from test_heads_support import planted_clips, prov, write_cache

from featpipe import open_cache
from featpipe.extractors.base import OutputSpec
from featpipe.heads import api
from featpipe.heads.data import HeadError, describe, load_segments


def test_native_hop_features_are_averaged_into_segments(tmp_path):
    specs = [(OutputSpec("seg", (1,), "audio"), prov("seg")),
             (OutputSpec("fine", (2,), "audio", hop=0.5, start=0.25), prov("fine"))]
    rows = np.stack([np.arange(6.0), 10 * np.arange(6.0)], 1)  # centres 0.25, 0.75, ... 2.75 s
    write_cache(tmp_path / "c.h5", specs, {"v1": {"seg": np.ones((3, 1)), "fine": rows}})
    with open_cache(tmp_path / "c.h5") as cache:
        segs, T = load_segments(cache, ["v1"], describe(cache, ["seg", "fine"]))
    assert T == 3
    x, mask = segs["fine"]
    np.testing.assert_allclose(x[0, :, 0], [0.5, 2.5, 4.5])
    np.testing.assert_allclose(x[0, :, 1], [5.0, 25.0, 45.0])
    assert mask.tolist() == [[True, True, True]]


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probe")
    files = planted_clips(tmp, n_videos=60)
    api.train_head(files["cache"], "classify", files["train"], files["val"], ["aud", "vis"], tmp / "h", model="mlp",
                   hparams={"max_epochs": 3, "patience": 3, "batch_size": 16})
    return files, tmp / "h"


def _arrays(n=60):
    rng = np.random.default_rng(0)
    return {f"{i:08d}": {"aud": rng.normal(size=(6, 8)), "vis": rng.normal(size=(6, 5))} for i in range(n)}


def test_checkpoint_is_json_and_safetensors_only(probe):
    files, head = probe
    assert sorted(p.name for p in head.iterdir()) == ["head.json", "weights.safetensors"]
    meta = json.loads((head / "head.json").read_text())
    assert meta["format"] == "featpipe-head" and meta["labels"] == [f"class{k}" for k in range(4)]
    assert [f["name"] for f in meta["features"]] == ["aud", "vis"]
    with open_cache(files["cache"]) as cache:
        assert meta["features"][0]["provenance"] == json.loads(json.dumps(cache.provenance("aud")))
    assert meta["sources"]["train"]["sha256"] and meta["hparams"]["hidden"] == 1024
    with safe_open(str(head / "weights.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {"std.0.mean", "std.0.std", "out.weight"} <= keys


def test_evaluate_refuses_a_cache_with_other_features(probe, tmp_path):
    files, head = probe
    other_weights = [(OutputSpec("aud", (8,), "audio"), prov("aud", "sha256:other")),
                     (OutputSpec("vis", (5,), "visual"), prov("vis"))]
    write_cache(tmp_path / "w.h5", other_weights, _arrays())
    with pytest.raises(HeadError, match="weights='none'; this cache has 'sha256:other': features differ"):
        api.evaluate(head, tmp_path / "w.h5", files["test"])
    other_fps = [(OutputSpec("aud", (8,), "audio"), prov("aud", decode={"fps": 2.0, "pad": "repeat"})),
                 (OutputSpec("vis", (5,), "visual"), prov("vis"))]
    write_cache(tmp_path / "f.h5", other_fps, _arrays())
    with pytest.raises(HeadError, match="decode.fps=1.0; this cache has 2.0"):
        api.predict(head, tmp_path / "f.h5", files["test"], tmp_path / "p.jsonl")
    missing = [(OutputSpec("aud", (8,), "audio"), prov("aud"))]
    write_cache(tmp_path / "m.h5", missing, {k: {"aud": v["aud"]} for k, v in _arrays().items()})
    with pytest.raises(HeadError, match="trained on feature 'vis', which this cache lacks"):
        api.evaluate(head, tmp_path / "m.h5", files["test"])
    shape = [(OutputSpec("aud", (8,), "audio"), prov("aud")), (OutputSpec("vis", (4,), "visual"), prov("vis"))]
    write_cache(tmp_path / "s.h5", shape, {k: {"aud": v["aud"], "vis": v["vis"][:, :4]} for k, v in _arrays().items()})
    with pytest.raises(HeadError, match=r"rows of shape \(5,\); this cache has \(4,\)"):
        api.evaluate(head, tmp_path / "s.h5", files["test"])


def test_other_featpipe_or_pyav_version_only_warns(probe, tmp_path):
    files, head = probe
    newer = dict(prov("aud"), featpipe="0.2.0")
    newer["decode"] = dict(newer["decode"], pyav="19.0", chunk_segments=4)
    specs = [(OutputSpec("aud", (8,), "audio"), newer), (OutputSpec("vis", (5,), "visual"), prov("vis"))]
    write_cache(tmp_path / "v.h5", specs, _arrays())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = api.evaluate(head, tmp_path / "v.h5", files["test"])
    text = " ".join(str(w.message) for w in caught)
    assert "featpipe was '0.1.0' at training, '0.2.0'" in text and "pyav" in text and "chunk_segments" not in text
    assert result["metrics"]["n"] == 12


def test_videos_missing_from_the_cache_are_skipped_and_counted(probe, tmp_path):
    files, head = probe
    test_csv = tmp_path / "t.csv"
    test_csv.write_text(files["test"].read_text() + "99999999,class0\n")
    result = api.evaluate(head, files["cache"], test_csv)
    assert result["skipped_videos"] == 1 and result["metrics"]["n"] == 12
    none = tmp_path / "none.csv"
    none.write_text("video_id,label\n99999999,class0\n")
    with pytest.raises(HeadError, match="none of the 1 videos is in the cache"):
        api.evaluate(head, files["cache"], none)
