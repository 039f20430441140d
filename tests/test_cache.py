"""The cache: commits, resume, refusals, kill -9 at any moment, and reading while writing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from featpipe.cache import CacheError, CacheWriter, open_cache
from featpipe.extractors.base import OutputSpec

TIMELINE = {"fps": 1.0, "seg_len": 1.0, "max_seconds": None, "pad": "repeat"}
SPEC = OutputSpec("feat", (8,), "audio")
PROV = {"spec": "feat", "weights": "none"}

# A writer that commits video i with rows == i forever; used to kill it at random moments.
WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from featpipe.cache import CacheWriter
    from featpipe.extractors.base import OutputSpec
    path, delay = sys.argv[1], float(sys.argv[2])
    w = CacheWriter(path, {"fps": 1.0, "seg_len": 1.0, "max_seconds": None, "pad": "repeat"})
    w.ensure_feature(OutputSpec("feat", (8,), "audio"), {"spec": "feat", "weights": "none"})
    w.start()
    i = len(w.records)
    print("ready", flush=True)
    while True:
        rows = 1 + i % 7
        w.commit({"video_id": f"v{i:05d}", "source": {"size": i, "mtime": 0}},
                 {"feat": np.full((rows, 8), i % 2048, np.float32)})
        i += 1
        time.sleep(delay)
""")


def _check_consistent(path) -> int:
    with open_cache(path) as cache:
        for vid in cache.videos:
            i = int(vid[1:])
            arr = cache.get(vid, "feat")
            assert arr.data.shape == (1 + i % 7, 8), vid
            assert (arr.data == i % 2048).all(), vid
        return len(cache.videos)


def _writer(path, delay=0.0):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(delay)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_commit_and_read_back(tmp_path):
    path = tmp_path / "c.h5"
    with CacheWriter(path, TIMELINE) as w:
        w.ensure_feature(SPEC, PROV)
        w.start()
        w.commit({"video_id": "a", "source": {"size": 1, "mtime": 0}}, {"feat": np.ones((3, 8))}, {"feat": 2})
    with open_cache(path) as c:
        assert c.videos == ["a"] and c.features == ["feat"]
        arr = c.get("a", "feat")
        assert arr.data.dtype == np.float16 and arr.valid == 2
        np.testing.assert_allclose(arr.times, [0.5, 1.5, 2.5])
        x, mask = c.batch(["a"], "feat", length=5)
        assert x.shape == (1, 5, 8) and mask.tolist() == [[True, True, False, False, False]]
    # plain h5py, as docs/cache-format.md describes it
    with h5py.File(path, "r") as f:
        off, n = f["videos/index"][-1]
        rec = json.loads(f["videos/records"][off:off + n].tobytes())
        o, rows, valid = rec["features"]["feat"]
        assert (f["features/feat/data"][o:o + rows] == 1).all()


def test_refusals(tmp_path):
    path = tmp_path / "c.h5"
    with CacheWriter(path, TIMELINE) as w:
        w.ensure_feature(SPEC, PROV)
        with pytest.raises(CacheError, match="another featpipe process"):
            CacheWriter(path, TIMELINE)
    with pytest.raises(CacheError, match="another timeline"):
        CacheWriter(path, dict(TIMELINE, fps=2.0))
    with CacheWriter(path, TIMELINE) as w, pytest.raises(CacheError, match="use a new cache"):
        w.ensure_feature(SPEC, dict(PROV, weights="sha256:other"))
    bad = tmp_path / "bad.h5"
    bad.write_text("nope")
    with pytest.raises(CacheError):
        CacheWriter(bad, TIMELINE)
    with pytest.raises(CacheError):
        open_cache(bad)


def test_new_feature_later_keeps_old_ones_and_changed_source_drops_them(tmp_path):
    path = tmp_path / "c.h5"
    src = {"size": 1, "mtime": 0}
    with CacheWriter(path, TIMELINE) as w:
        w.ensure_feature(SPEC, PROV)
        w.start()
        w.commit({"video_id": "a", "source": src}, {"feat": np.ones((2, 8))})
    with CacheWriter(path, TIMELINE) as w:
        w.ensure_feature(OutputSpec("other", (2,), "visual"), PROV)
        w.start()
        w.commit({"video_id": "a", "source": src}, {"other": np.zeros((2, 2))})
    with open_cache(path) as c:
        assert c.has("a", "feat") and c.has("a", "other")
    with CacheWriter(path, TIMELINE) as w:
        w.start()
        w.commit({"video_id": "a", "source": {"size": 2, "mtime": 0}}, {"other": np.zeros((2, 2))})
    with open_cache(path) as c:
        assert not c.has("a", "feat") and c.has("a", "other")


def test_kill_9_at_random_moments_never_loses_committed_videos(tmp_path):
    path = tmp_path / "c.h5"
    rng = np.random.default_rng(0)
    seen = 0
    for _ in range(6):
        proc = _writer(path)
        time.sleep(float(rng.uniform(0.05, 0.4)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        count = _check_consistent(path)  # opens, every committed video intact
        assert count >= seen  # nothing committed before was lost
        seen = count
    assert seen > 0
    proc = _writer(path)  # a writer resumes after the last kill
    time.sleep(0.2)
    proc.terminate()
    proc.wait()
    assert _check_consistent(path) >= seen


def test_reader_in_another_process_while_writing(tmp_path):
    path = tmp_path / "c.h5"
    proc = _writer(path, delay=0.01)
    try:
        counts = []
        with open_cache(path) as cache:
            for _ in range(10):
                time.sleep(0.1)
                cache.refresh()
                for vid in cache.videos[-5:]:
                    i = int(vid[1:])
                    assert (cache.get(vid, "feat").data == i % 2048).all()
                counts.append(len(cache.videos))
        assert counts[-1] > counts[0] > 0  # it saw videos arrive while open
    finally:
        proc.kill()
        proc.wait()


def test_bulk_load_matches_per_video_reads(tmp_path):
    path = tmp_path / "c.h5"
    rng = np.random.default_rng(1)
    arrays = {f"v{i}": rng.normal(size=(int(rng.integers(1, 9)), 8)).astype(np.float16) for i in range(40)}
    with CacheWriter(path, TIMELINE) as w:
        w.ensure_feature(SPEC, PROV)
        w.start()
        for vid, a in arrays.items():
            w.commit({"video_id": vid, "source": {}}, {"feat": a})
    with open_cache(path) as c:
        ids = sorted(arrays)
        for vid, got in zip(ids, c.load("feat", ids, dtype=None)):
            np.testing.assert_array_equal(got, arrays[vid])
        some = ids[::13]
        for vid, got in zip(some, c.load("feat", some, dtype=None)):  # sparse: per-video reads
            np.testing.assert_array_equal(got, arrays[vid])
        ds = c.dataset(["feat"], ids[:3])
        assert len(ds) == 3 and ds[0]["feat"].shape[1] == 8
