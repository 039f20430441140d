"""``featpipe merge``: shards with the same timeline combine; later records win; mixed meanings are refused."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from featpipe.cache import CacheError, CacheWriter, open_cache
from featpipe.extractors.base import OutputSpec
from featpipe.cache.merge import merge_caches

TIMELINE = {"fps": 1.0, "seg_len": 1.0, "max_seconds": None, "pad": "repeat"}
EMB = OutputSpec("emb", (4,), "visual")
AUD = OutputSpec("aud", (2,), "audio", dtype="float32")


def _shard(path: Path, videos: dict[str, dict[str, np.ndarray]], timeline=TIMELINE, weights="w1",
           size: int = 100, texts: list[str] = ()) -> None:
    with CacheWriter(path, timeline) as w:
        for spec in (EMB, AUD):
            w.ensure_feature(spec, {"spec": spec.name, "weights": weights})
        if texts:
            w.ensure_text_table("clip-x", 4, {"weights": "t1"})
        w.start()
        for vid, arrays in videos.items():
            rows = next(iter(arrays.values())).shape[0]
            w.commit({"video_id": vid, "source": {"size": size, "mtime": 1.0}, "segments": rows}, arrays,
                     {k: rows - 1 for k in arrays})
        if texts:
            w.add_texts("clip-x", [{"text": t, "ids": [i]} for i, t in enumerate(texts)],
                        np.arange(len(texts) * 4, dtype=np.float32).reshape(-1, 4))


def _rows(n: int, value: float, dim: int) -> np.ndarray:
    return np.full((n, dim), value, np.float32)


def test_merge_combines_shards_and_later_records_win(tmp_path) -> None:
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    _shard(a, {"x": {"emb": _rows(3, 1, 4)}, "y": {"emb": _rows(2, 2, 4), "aud": _rows(2, 3, 2)}}, texts=["hi"])
    time.sleep(0.01)
    _shard(b, {"x": {"aud": _rows(3, 4, 2)}, "y": {"emb": _rows(2, 5, 4)}, "z": {"aud": _rows(1, 6, 2)}})
    _shard(tmp_path / "y_old.h5", {"y": {"emb": _rows(2, 9, 4)}})  # committed after b but listed first below
    out = tmp_path / "c.h5"
    s = merge_caches([a, b], out)
    assert (s.videos, s.records, s.features, s.texts) == (3, 5, ["aud", "emb"], 1)
    with open_cache(out) as c:
        assert c.videos == ["x", "y", "z"]
        assert c.get("x", "emb").data.tolist() == _rows(3, 1, 4).tolist()  # from a, kept
        assert c.get("x", "aud").data.tolist() == _rows(3, 4, 2).tolist()  # from b, added
        assert c.get("y", "emb").data[0, 0] == 5  # b's record is the later one
        assert c.get("y", "aud").data[0, 0] == 3  # a's feature that b did not replace
        assert c.get("y", "emb").valid == 1
        assert c.record("z")["merged_from"]["cache"] == str(b)
        assert c.text_embeddings("clip-x", texts=["hi"]).tolist() == [[0, 1, 2, 3]]
        assert c.timeline == TIMELINE
    assert not Path(f"{out}.partial").exists()
    # commit order, not argument order, decides: y_old.h5 was written last, so it wins
    s = merge_caches([tmp_path / "y_old.h5", a, b], tmp_path / "d.h5")
    with open_cache(tmp_path / "d.h5") as c:
        assert c.get("y", "emb").data[0, 0] == 9


def test_merge_refuses_what_would_mix_meanings(tmp_path) -> None:
    a = tmp_path / "a.h5"
    _shard(a, {"x": {"emb": _rows(3, 1, 4)}})
    _shard(tmp_path / "t.h5", {"x": {"emb": _rows(3, 1, 4)}}, timeline=dict(TIMELINE, fps=2.0, seg_len=0.5))
    _shard(tmp_path / "w.h5", {"x": {"emb": _rows(3, 1, 4)}}, weights="w2")
    with pytest.raises(CacheError, match="same timeline"):
        merge_caches([a, tmp_path / "t.h5"], tmp_path / "o1.h5")
    with pytest.raises(CacheError, match="feature 'aud' differs.*weights 'w1' vs 'w2'"):
        merge_caches([a, tmp_path / "w.h5"], tmp_path / "o2.h5")
    with pytest.raises(CacheError, match="exists"):
        merge_caches([a], a)
    assert not (tmp_path / "o1.h5").exists() and not (tmp_path / "o2.h5").exists()


def test_merge_command(tmp_path) -> None:
    from featpipe.cli import main

    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    _shard(a, {"x": {"emb": _rows(3, 1, 4)}})
    _shard(b, {"y": {"emb": _rows(2, 2, 4)}})
    r = CliRunner().invoke(main, ["merge", str(a), str(b), "-o", str(tmp_path / "c.h5")])
    assert r.exit_code == 0, r.output
    assert "2 videos" in r.output
    r = CliRunner().invoke(main, ["merge", str(a), "-o", str(b)])
    assert r.exit_code == 2 and "exists" in r.output
