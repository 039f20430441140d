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


@pytest.mark.parametrize("with_torch", [True, False])
def test_bulk_batch_matches_per_video_reads(tmp_path, monkeypatch, with_torch):
    """batch() reads ranges in bulk and converts runs of back-to-back videos in one call; every
    order, subset, cut and range split must give what per-video get()/mask() give."""
    import featpipe.cache.reader as reader

    if with_torch:
        import torch  # noqa: F401  (the torch cast is used only when torch is imported)
    else:
        monkeypatch.setitem(sys.modules, "torch", None)
    path = tmp_path / "c.h5"
    rng = np.random.default_rng(2)
    # mostly whole 6-row videos (the fused run path), some shorter, one longer, 300 rows each
    # side so the float16 -> float32 cast crosses the torch size threshold
    spec = OutputSpec("feat", (300,), "audio")
    rows = [6] * 30 + [3, 7, 6, 0, 6, 6, 2] + [6] * 20
    arrays = {f"v{i:03d}": rng.normal(size=(r, 300)).astype(np.float16) for i, r in enumerate(rows)}
    with CacheWriter(path, TIMELINE) as w:
        w.ensure_feature(spec, PROV)
        w.start()
        for vid, a in arrays.items():
            # the last row past the recording, and every third video a fill-row run
            runs = {"feat": [[1, 2]]} if int(vid[1:]) % 3 == 0 else {}
            w.commit({"video_id": vid, "source": {}, "invalid": runs}, {"feat": a},
                     valid={"feat": max(0, len(a) - 1)})
    ids = sorted(arrays)
    orders = [ids, ids[::-1], ids[5:45], ids[::7], list(rng.permutation(ids))]
    with open_cache(path) as c:
        for gap in (reader._GAP_ROWS, 0):
            monkeypatch.setattr(reader, "_GAP_ROWS", gap)  # 0: every sparse slot its own read
            for order in orders:
                for length in (None, 4, 9):
                    x, m = c.batch(order, "feat", length=length)
                    T = length if length is not None else max(len(arrays[v]) for v in order)
                    assert x.shape == (len(order), T, 300) and x.dtype == np.float32 and m.shape == (len(order), T)
                    for i, v in enumerate(order):
                        want = np.zeros((T, 300), np.float32)
                        n = min(T, len(arrays[v]))
                        want[:n] = arrays[v][:n]
                        np.testing.assert_array_equal(x[i], want)
                        want_m = np.zeros(T, bool)
                        want_m[:n] = c.mask(v, "feat")[:n]
                        np.testing.assert_array_equal(m[i], want_m)
                for got, v in zip(c.load("feat", order), order):
                    assert got.dtype == np.float32
                    np.testing.assert_array_equal(got, arrays[v].astype(np.float32))
            x16, _ = c.batch(ids, "feat", dtype=None)
            assert x16.dtype == np.float16


def test_cache_batches_reads_each_batch_in_bulk(tmp_path):
    """The DataLoader recipe: batches of file neighbours, every video once per epoch, the same
    rows as batch(), and a pickled copy (a spawned worker) opens the file itself."""
    import pickle

    from torch.utils.data import DataLoader

    from featpipe.cache.dataset import CacheBatches

    path = tmp_path / "c.h5"
    rng = np.random.default_rng(3)
    arrays = {f"v{i:02d}": rng.normal(size=(int(rng.integers(2, 6)), 8)).astype(np.float16) for i in range(23)}
    order = list(rng.permutation(sorted(arrays)))  # commit order differs from sorted ids
    with CacheWriter(path, TIMELINE) as w:
        w.ensure_feature(SPEC, PROV)
        w.start()
        for vid in order:
            w.commit({"video_id": vid, "source": {}}, {"feat": arrays[vid]})
    ds = CacheBatches(path, ["feat"], batch_size=5, length=4)
    assert len(ds) == 5 and ds.video_ids == order
    seen = []
    with open_cache(path) as c:
        for item in DataLoader(ds, batch_size=None, shuffle=True):
            x, m = c.batch(item["video_id"], "feat", 4)
            np.testing.assert_array_equal(item["feat"].numpy(), x)
            np.testing.assert_array_equal(item["feat_mask"].numpy(), m)
            assert item["feat"].shape[1:] == (4, 8)
            seen += item["video_id"]
    assert sorted(seen) == sorted(arrays)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._cache is None
    np.testing.assert_array_equal(clone[1]["feat"].numpy(), ds[1]["feat"].numpy())
    ds.regroup(0)
    assert sorted(v for b in ds.batches for v in b) == sorted(arrays) and ds.batches[0] != order[:5]
    clone.close()
    ds.close()


def _chunk_rows_before_2026_12_08(row_shape, itemsize):
    """The writer's rule until 2026-12-08: about 512 KiB per chunk, at most 8192 rows."""
    return int(min(8192, max(1, (512 * 1024) // (int(np.prod(row_shape)) * itemsize))))


def test_caches_with_512_kib_chunks_still_read_and_grow(tmp_path, monkeypatch):
    """Caches written with the earlier 512 KiB chunks open and read as before, and today's writer
    appends to them (their datasets keep their chunks); new features get the larger ones."""
    import featpipe.cache.writer as writer
    from featpipe.cache.layout import CHUNK_TARGET

    path = tmp_path / "old.h5"
    rng = np.random.default_rng(8)
    arrays = {f"v{i}": rng.normal(size=(700, 512)).astype(np.float16) for i in range(3)}  # 2,100 rows: 5 old chunks
    with monkeypatch.context() as m:
        m.setattr(writer, "chunk_rows", _chunk_rows_before_2026_12_08)
        with CacheWriter(path, TIMELINE) as w:
            w.ensure_feature(OutputSpec("feat", (512,), "visual"), PROV)
            w.start()
            for vid in ("v0", "v1"):
                w.commit({"video_id": vid, "source": {}}, {"feat": arrays[vid]})
    with CacheWriter(path, TIMELINE) as w:
        w.ensure_feature(OutputSpec("feat", (512,), "visual"), PROV)
        w.ensure_feature(OutputSpec("new", (512,), "visual"), {"spec": "new", "weights": "none"})
        w.start()
        w.commit({"video_id": "v2", "source": {}}, {"feat": arrays["v2"], "new": arrays["v2"]})
    with h5py.File(path, "r") as f:
        assert f["features/feat/data"].chunks == (512, 512)
        assert f["features/new/data"].chunks == (CHUNK_TARGET // 1024, 512)
    ids = sorted(arrays)
    with open_cache(path) as c:
        for got, v in zip(c.load("feat", ids, dtype=None), ids):
            np.testing.assert_array_equal(got, arrays[v])
        np.testing.assert_array_equal(c.batch(ids, "feat")[0][1], arrays["v1"].astype(np.float32))
        np.testing.assert_array_equal(c.get("v2", "new").data, arrays["v2"])


def test_two_readers_of_one_cache_in_a_process(tmp_path):
    """Readers keep one handle per feature dataset; two of them on one file share it. (HDF5 2.0
    fails every later read of a dataset once H5Drefresh ran on one of two open handles and a
    read spans chunks: "can't insert duplicate key".)"""
    from featpipe.cache.layout import chunk_rows

    path = tmp_path / "c.h5"
    spec = OutputSpec("feat", (512,), "visual")
    rng = np.random.default_rng(4)
    rows = chunk_rows((512,), 2) // 2 + 1  # three videos span two chunks
    arrays = {f"v{i}": rng.normal(size=(rows, 512)).astype(np.float16) for i in range(3)}
    with CacheWriter(path, TIMELINE) as w:
        w.ensure_feature(spec, PROV)
        w.start()
        for vid, a in arrays.items():
            w.commit({"video_id": vid, "source": {}}, {"feat": a})
    ids = sorted(arrays)
    first = open_cache(path)
    first.get("v0", "feat")  # holds its handle
    with open_cache(path) as second:
        second.refresh()
        for c in (second, first, second):
            for got, v in zip(c.load("feat", ids, dtype=None), ids):
                np.testing.assert_array_equal(got, arrays[v])
    np.testing.assert_array_equal(first.batch(ids, "feat")[0][2], arrays["v2"].astype(np.float32))
    first.close()
    with CacheWriter(path, TIMELINE) as w:  # every reader closed: the file is free again
        w.start()
