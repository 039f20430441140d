"""Damaged caches and files from elsewhere (issue #22): hand-corrupted caches are one line from info,
load, export and train-head; a chunk far larger than featpipe writes is refused before it is read
(checked under an address-space limit); a full disk during commits is one line and loses nothing
committed (a file-size limit stands for the full disk). All fixtures are written here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from featpipe.cache import CacheError, CacheWriter, open_cache
from featpipe.cli import main
from featpipe.extractors.base import OutputSpec

TIMELINE = {"fps": 1.0, "seg_len": 1.0, "max_seconds": None, "pad": "repeat"}
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}


def make_cache(path: Path, n: int = 6, dim: int = 8) -> Path:
    with CacheWriter(path, TIMELINE) as w:
        w.ensure_feature(OutputSpec("feat", (dim,), "audio"), {"spec": "feat", "weights": "none"})
        w.ensure_text_table("words", 4, {"weights": "t"})
        w.start()
        for i in range(n):
            w.commit(
                {"video_id": f"v{i}", "source": {"size": i, "mtime": 0}}, {"feat": np.full((4, dim), i, np.float32)}
            )
        w.add_texts("words", [{"text": "hello", "ids": [1]}], np.ones((1, 4), np.float32))
    return path


def _records(f, blobs: list[bytes]) -> None:
    """Replace the video log with these raw records."""
    g = f["videos"]
    del g["records"], g["index"]
    data = np.frombuffer(b"".join(blobs), np.uint8)
    g.create_dataset("records", data=data, maxshape=(None,), chunks=(65536,))
    offs = np.cumsum([0] + [len(b) for b in blobs])[:-1]
    g.create_dataset(
        "index",
        data=np.array([[o, len(b)] for o, b in zip(offs, blobs)], np.int64).reshape(-1, 2),
        maxshape=(None, 2),
        chunks=(4096, 2),
    )


def _record(vid: str, features) -> bytes:
    return json.dumps({"video_id": vid, "source": {"size": 1}, "features": features}).encode()


def _replace(f, name: str, **kw) -> None:
    del f[name]
    f.create_dataset(name, **kw)


CORRUPTIONS = {
    "no videos group": lambda f: f.__delitem__("videos"),
    "no index": lambda f: f["videos"].__delitem__("index"),
    "no features group": lambda f: f.__delitem__("features"),
    "feature without data": lambda f: f["features/feat"].__delitem__("data"),
    "feature is a dataset": lambda f: (f.__delitem__("features/feat"), f["features"].create_dataset("feat", data=[1])),
    "empty group named a path": lambda f: f["features"].create_group("a/b"),
    "shape attr not json": lambda f: f["features/feat"].attrs.__setitem__("shape", "[8,"),
    "shape attr disagrees": lambda f: f["features/feat"].attrs.__setitem__("shape", "[9]"),
    "no hop attr": lambda f: f["features/feat"].attrs.__delitem__("hop"),
    "provenance not json": lambda f: f["features/feat"].attrs.__setitem__("provenance", "{oops"),
    "bad modality": lambda f: f["features/feat"].attrs.__setitem__("modality", "smell"),
    "data of strings": lambda f: (
        f["features/feat"].__delitem__("data"),
        f["features/feat"].create_dataset("data", data=np.array([[b"x"] * 8] * 24)),
    ),
    "records garbage": lambda f: f["videos/records"].__setitem__(slice(0, 40), np.full(40, 0xFF, np.uint8)),
    "index past records": lambda f: f["videos/index"].__setitem__(0, [0, 10**9]),
    "index of floats": lambda f: _replace(f, "videos/index", data=np.zeros((2, 3), np.float32)),
    "timeline not json": lambda f: f.attrs.__setitem__("timeline", "fps=1"),
    "record is a list": lambda f: _records(f, [b"[1, 2, 3]"]),
    "record without id": lambda f: _records(f, [b'{"features": {}}']),
    "record past the data": lambda f: _records(f, [_record("v0", {"feat": [0, 10**6, 10**6]})]),
    "record of a missing feature": lambda f: _records(f, [_record("v0", {"gone": [0, 4, 4]})]),
    "record with negative rows": lambda f: _records(f, [_record("v0", {"feat": [-4, 4, 4]})]),
    "deeply nested record": lambda f: _records(f, [b"[" * 100000 + b"]" * 100000]),
    "text record garbage": lambda f: f["texts/words/records"].__setitem__(slice(0, 10), np.full(10, 0x7B, np.uint8)),
}


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("labels") / "labels.csv"
    p.write_text("video_id,label\n" + "".join(f"v{i},{i % 2}\n" for i in range(6)))
    return p


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_hand_corrupted_cache_is_one_line(tmp_path, kind, labels):
    cache = make_cache(tmp_path / "c.h5")
    with h5py.File(cache, "a", libver="latest") as f:
        CORRUPTIONS[kind](f)
    run = CliRunner().invoke
    texts_only = kind.startswith("text")  # what reads no text table does not see it
    for args in (
        ["info", str(cache)],
        [
            "export",
            str(cache),
            "--layout",
            "generic",
            "--feature",
            "feat=f",
            "--text",
            "words=t",
            "-o",
            str(tmp_path / "x"),
        ],
        [
            "train-head",
            str(cache),
            "--task",
            "classify",
            "--train",
            str(labels),
            "-o",
            str(tmp_path / "h"),
            "--quiet",
            "--epochs",
            "1",
        ],
    )[: 2 if texts_only else 3]:
        r = run(main, args)
        assert isinstance(r.exception, SystemExit) and r.exit_code == 2, (args[0], r.output, r.exc_info)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("featpipe: error:") and str(cache) in lines[0], (args[0], lines)
    with pytest.raises(CacheError):
        with open_cache(cache) as c:
            c.load("feat")
            c.text_embeddings("words", question_ids=[1])
    if not texts_only:
        with pytest.raises(CacheError):
            with CacheWriter(cache, TIMELINE) as w:
                w.start()


# -- 8. chunks featpipe never writes ---------------------------------------------------------------------
READ_LIMITED = textwrap.dedent("""
    import resource, sys
    from featpipe.cache import CacheError, open_cache
    size = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + (96 << 20), resource.RLIM_INFINITY))
    try:
        with open_cache(sys.argv[1]) as c:
            print("read", c.get("v0", "feat").data.shape, flush=True)
    except CacheError as exc:
        print("refused:", exc, flush=True)
""")


def _read_limited(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", READ_LIMITED, str(path)], capture_output=True, text=True, timeout=300, env=ENV
    )


def test_a_huge_chunk_is_refused_before_it_is_read(tmp_path):
    good = make_cache(tmp_path / "good.h5", n=2, dim=64)
    r = _read_limited(good)
    assert r.stdout.strip() == "read (4, 64)", r.stdout + r.stderr  # the limit leaves room for a normal read
    bad = make_cache(tmp_path / "bad.h5", n=2, dim=64)
    with h5py.File(bad, "a", libver="latest") as f:  # one gzip chunk of 2**20 rows: 128 MiB to read any row
        g = f["features/feat"]
        del g["data"]
        ds = g.create_dataset(
            "data",
            shape=(1 << 20, 64),
            maxshape=(None, 64),
            chunks=(1 << 20, 64),
            dtype=np.float16,
            compression="gzip",
            compression_opts=1,
        )
        ds[:8] = np.ones((8, 64), np.float16)
    r = _read_limited(bad)
    assert r.stdout.startswith("refused:") and "chunks of 128 MiB" in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stderr


# -- 12. a full disk during commits ----------------------------------------------------------------------
FILL = textwrap.dedent("""
    import os, resource, signal, sys
    import numpy as np
    from featpipe.cache import CacheError, CacheWriter
    from featpipe.extractors.base import OutputSpec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as ENOSPC would
    _detach = CacheWriter._detach
    def detach(self):  # the disk is full, memory is not: the limit stands for the disk alone
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        _detach(self)
    CacheWriter._detach = detach
    path = sys.argv[1]
    w = CacheWriter(path, {"fps": 1.0, "seg_len": 1.0, "max_seconds": None, "pad": "repeat"})
    w.ensure_feature(OutputSpec("feat", (512,), "audio"), {"spec": "feat", "weights": "none"}, "float32")
    w.start()
    from featpipe.cache.layout import CHUNK_TARGET
    # room for a few commits: the first row of a chunk allocates (and writes) the whole chunk
    room = os.path.getsize(path) + CHUNK_TARGET + (2 << 20)
    resource.setrlimit(resource.RLIMIT_FSIZE, (room, resource.RLIM_INFINITY))
    i = 0
    try:
        while True:
            w.commit({"video_id": f"v{i:03d}", "source": {"size": i, "mtime": 0}},
                     {"feat": np.full((64, 512), i, np.float32)})
            print("committed", i, flush=True)
            i += 1
    except CacheError as exc:
        print("error:", exc, flush=True)
    before = open(path, "rb").read()
    w.close()
    print("untouched by close:", before == open(path, "rb").read(), flush=True)
""")


def test_a_full_disk_is_one_line_and_keeps_what_was_committed(tmp_path):
    cache = tmp_path / "c.h5"
    r = subprocess.run([sys.executable, "-c", FILL, str(cache)], capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr == "", r.stderr[-2000:]
    lines = r.stdout.splitlines()
    committed = [int(x.split()[1]) for x in lines if x.startswith("committed")]
    errors = [x for x in lines if x.startswith("error:")]
    assert committed and len(errors) == 1 and "a full disk or a file size limit" in errors[0], r.stdout
    assert lines[-1] == "untouched by close: True"
    with CacheWriter(cache, TIMELINE) as w:  # room again: the next writer recovers the file and goes on
        w.start()
        assert sorted(w.records) == [f"v{i:03d}" for i in committed]
        w.commit({"video_id": "more", "source": {"size": 1, "mtime": 0}}, {"feat": np.ones((2, 512), np.float32)})
    with open_cache(cache) as c:
        for i in committed:
            assert (c.get(f"v{i:03d}", "feat").data == i).all()
        assert c.has("more", "feat")


ADD_FEATURE = textwrap.dedent("""
    import sys
    import numpy as np
    from featpipe.cache import CacheWriter
    from featpipe.extractors.base import OutputSpec
    with CacheWriter(sys.argv[1], {"fps": 1.0, "seg_len": 1.0, "max_seconds": None, "pad": "repeat"}) as w:
        w.ensure_feature(OutputSpec("later", (3,), "visual"), {"spec": "later", "weights": "none"})
        w.start()
        w.commit({"video_id": "v9", "source": {"size": 9, "mtime": 0}}, {"later": np.ones((4, 3), np.float32)})
""")


def test_a_long_lived_reader_refreshes_across_a_writer_adding_a_feature(tmp_path):
    """The checks must not take a feature added (by another process) after a reader opened for damage."""
    cache = make_cache(tmp_path / "c.h5", n=2)
    with open_cache(cache) as reader:
        r = subprocess.run(
            [sys.executable, "-c", ADD_FEATURE, str(cache)], capture_output=True, text=True, timeout=120, env=ENV
        )
        assert r.returncode == 0, r.stderr
        reader.refresh()
        assert "v9" in reader.videos
    with open_cache(cache) as fresh:
        assert fresh.get("v9", "later").data.shape == (4, 3)


def test_names_extractors_derive_stay_writable_and_readable(tmp_path):
    """The reader's and the writer's name check refuse paths only: a CLAP folder's name with spaces and
    brackets (its feature is ``clap-<folder name>``) is a feature like any other."""
    name = "clap-my model (v2)"
    with CacheWriter(tmp_path / "c.h5", TIMELINE) as w:
        w.ensure_feature(OutputSpec(name, (4,), "audio"), {"spec": "clap:x", "weights": "w"})
        w.start()
        w.commit({"video_id": "v0", "source": {"size": 1, "mtime": 0}}, {name: np.ones((2, 4), np.float32)})
    with open_cache(tmp_path / "c.h5") as c:
        assert c.features == [name] and c.load(name)[0].shape == (2, 4)
    with pytest.raises(CacheError, match="is a path"):
        with CacheWriter(tmp_path / "d.h5", TIMELINE) as w:
            w.ensure_feature(OutputSpec("../x", (4,), "audio"), {"spec": "x", "weights": "w"})
