"""Streamed rows (#11, featpipe/spool.py): workers write each chunk's rows to ``<cache>.spool/`` and the
client's writer copies them in blocks. A streamed cache is bit-identical to one whose rows came in
memory (``--no-stream``); spool files never outlive a run, a killed run's are removed; a non-finite
stored row still fails its video, in the worker; what a worker and the writer hold is bounded by a
chunk and a block (asserted by counting rows and traced allocations, never by timing).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from distributed import LocalCluster

from featpipe import cli, open_cache
from featpipe.run import dispatch, spool
from featpipe.cache import CacheWriter
from featpipe.run.config import ExtractConfig
from featpipe.contracts import ExtractOptions, OutputSpec
from featpipe.decode import DecodeParams
from featpipe.extractors import resnet18_14x14
from featpipe.decode.rows import fill_plan, take_rows
from featpipe.run.spool import MemorySink, Spooled, SpoolError, SpoolFolder, SpoolSink, write_check
from featpipe.run.beat_timeline import Timeline, pool
from featpipe.run.extract_video import VideoJob, _pool_blocks, process_video
from featpipe.run.worker import worker_check
from conftest import TINY_CLIP
from media import write_clip
from test_resnet import random_resnet18_state
from test_timeline import write_clicks

PLUGINS = Path(__file__).parent / "plugins"
FLOAT16_OVERFLOW = "streamrows produced values that are not finite as float16 (past float16's range: use --dtype float32)"


@pytest.fixture
def plugin(monkeypatch):
    """The ``streamrows`` test extractor (tests/plugins/fp_stream.py) here and in the workers."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    import fp_stream  # noqa: F401 - registers "streamrows"

    monkeypatch.setenv("FEATPIPE_PLUGINS", "fp_stream")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")])))


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """One worker process for the module's CLI runs (``--scheduler``), with the test plugin and the tiny
    CLIP config in its environment: started once, models loaded once."""
    configs = tmp_path_factory.mktemp("clipcfg")
    (configs / "tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    env = {"FEATPIPE_PLUGINS": "fp_stream", "FEATPIPE_OPENCLIP_CONFIGS": str(configs),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")]))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    sys.path.insert(0, str(PLUGINS))
    import fp_stream  # noqa: F401 - registers "streamrows" in this process (the client)

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0")
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()
        sys.path.remove(str(PLUGINS))
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def committed(monkeypatch) -> list[str]:
    """The kind of every output the client committed (``Spooled`` when streamed, ``ndarray`` in memory)."""
    kinds: list[str] = []
    real = dispatch.Dispatch.finish

    def spy(self, job, src, result, key):
        arrays = dict(result.arrays) if result.ok else {}
        real(self, job, src, result, key)
        kinds.extend(type(a).__name__ for a in arrays.values())
        assert not any(Path(a.path).exists() for a in arrays.values() if isinstance(a, Spooled))  # deleted once copied

    monkeypatch.setattr(dispatch.Dispatch, "finish", spy)
    return kinds


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """Two short clips: one whose audio ends early (its audio rows past 1.2 s are masked), one plain."""
    folder = tmp_path_factory.mktemp("stream") / "videos"
    folder.mkdir()
    write_clip(folder / "early.mp4", seconds=3.0, audio_seconds=1.2, freq=330.0)
    write_clip(folder / "plain.mp4", seconds=3.6, freq=550.0)
    return folder


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("resnet-weights")
    torch.save(random_resnet18_state(), folder / resnet18_14x14.WEIGHTS_FILE)
    return folder


def _extract(inputs, cache, *args, scheduler: str | None = None) -> str:
    where = ["--scheduler", scheduler] if scheduler else ["--workers", "1"]  # default: a LocalCluster
    res = CliRunner().invoke(cli.main, ["extract", str(inputs), "-o", str(cache), "--quiet", *where,
                                        *map(str, args)], catch_exceptions=False)
    assert res.exit_code in (0, 1), res.output
    return res.output


def _contents(cache: Path) -> dict:
    """Everything a reader sees per video: each feature's bytes, dtype, shape and valid rows, the record
    (without the commit time and the row offsets) and the beat bounds."""
    out: dict = {}
    with open_cache(cache) as c:
        for v in c.videos:
            rec = c.record(v)
            out[v, "record"] = {k: val for k, val in rec.items() if k not in ("committed", "features")}
            for f in c.features:
                if c.has(v, f):
                    a = c.get(v, f).data
                    out[v, f] = (a.dtype.str, a.shape, rec["features"][f][2], a.tobytes())
            if c.beats:
                out[v, "bounds"] = c.bounds(v).tobytes()
    return out


def _referenced_rows(cache: Path) -> dict[str, list[tuple[int, int]]]:
    """Per feature, the (offset, rows) ranges the records point at."""
    refs: dict[str, list[tuple[int, int]]] = {}
    with open_cache(cache) as c:
        for v in c.videos:
            for f, (off, rows, *_) in c.record(v)["features"].items():
                refs.setdefault(f, []).append((off, rows))
    return refs


@pytest.mark.slow  # real Dask worker processes
@pytest.mark.parametrize("extra", [("--pad", "repeat", "--max-seconds", "4"),
                                   ("--pad", "zero", "--max-seconds", "2", "--dtype", "float32")])
def test_streamed_cache_is_bit_identical_to_rows_in_memory(media, resnet_weights, scheduler, committed, tmp_path,
                                                           extra):
    specs = ["--audio", "streamrows", "--audio", "priors", "--visual", "resnet18-14x14",
             "--visual", "clip:tiny-clip/random", "--tokens", "--weights", f"resnet18-14x14={resnet_weights}",
             *extra, "--scheduler", scheduler]
    streamed, in_memory = tmp_path / "streamed.h5", tmp_path / "memory.h5"
    assert "done 2, skipped 0, failed 0" in _extract(media, streamed, *specs)
    assert set(committed) == {"Spooled"} and len(committed) == 2 * 7  # 7 outputs, all streamed
    assert not Path(f"{streamed}.spool").exists()  # the run's end removes the folder
    committed.clear()
    assert "done 2, skipped 0, failed 0" in _extract(media, in_memory, *specs, "--no-stream")
    assert set(committed) == {"ndarray"}
    a, b = _contents(streamed), _contents(in_memory)
    assert a.keys() == b.keys() and len(a) == 2 * 8  # 7 features and the record
    for key in a:
        assert a[key] == b[key], key
    rows = {k[1]: v[1][0] for k, v in a.items() if k[0] == "early" and k[1] != "record"}
    assert rows["streamrows-hop"] == 2 * rows["streamrows"]  # its own 0.5 s hop, streamed the same way
    want = "<f4" if "float32" in extra else "<f2"
    assert {v[0] for k, v in a.items() if k[1] != "record"} == {want}
    early = {k[1]: v for k, v in a.items() if k[0] == "early"}
    assert early["streamrows"][2] < early["streamrows"][1][0]  # masked audio rows were filled by the take plan


@pytest.mark.slow
def test_beat_timeline_streams_the_same_rows(tmp_path, scheduler, committed):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_clicks(folder / "clicks.mp4", seconds=5.0)
    specs = ["--timeline", "beats", "--fps", "4", "--audio", "rhythm", "--audio", "streamrows", "--audio", "priors",
             "--visual", "motion", "--scheduler", scheduler]
    assert "failed 0" in _extract(folder, tmp_path / "s.h5", *specs)
    assert set(committed) == {"Spooled"}
    assert "failed 0" in _extract(folder, tmp_path / "m.h5", *specs, "--no-stream")
    a, b = _contents(tmp_path / "s.h5"), _contents(tmp_path / "m.h5")
    assert a.keys() == b.keys() and ("clicks", "bounds") in a
    for key in a:
        assert a[key] == b[key], key
    assert not Path(f"{tmp_path / 's.h5'}.spool").exists()


@pytest.mark.slow
def test_non_finite_stored_rows_fail_that_video_in_the_worker_and_leave_nothing(media, plugin, tmp_path, committed):
    cache = tmp_path / "c.h5"
    # rows from 2 on overflow float16: "plain" stores row 2 and fails; "early" (audio until 1.2 s) stores
    # row 0 three times, its overflowing rows are computed but not stored, and it passes
    out = _extract(media, cache, "--audio", "streamrows", "--set", "overflow_from=2", "--max-seconds", "3")
    assert "done 1, skipped 0, failed 1" in out and f"plain.mp4): {FLOAT16_OVERFLOW}" in out, out
    assert committed == ["Spooled", "Spooled"]  # early's two outputs; plain's rows never left its worker
    assert _referenced_rows(cache) == {"streamrows": [(0, 3)], "streamrows-hop": [(0, 6)]}
    with h5py.File(cache, "r") as f:
        assert f["features/streamrows/data"].shape[0] == 3  # nothing of the failed video was written
    assert not Path(f"{cache}.spool").exists()


@pytest.mark.slow
def test_a_spool_file_gone_before_commit_fails_only_that_video(media, scheduler, tmp_path, monkeypatch):
    real = CacheWriter.commit

    def lose_last(self, record, arrays, valid=None, **more):
        if record["video_id"] == "early":  # after the first outputs' blocks are in the datasets
            list(arrays.values())[-1].remove()
        return real(self, record, arrays, valid, **more)

    monkeypatch.setattr(CacheWriter, "commit", lose_last)
    cache = tmp_path / "c.h5"
    out = _extract(media, cache, "--audio", "streamrows", "--audio", "priors", "--max-seconds", "4", scheduler=scheduler)
    assert "done 1, skipped 0, failed 1" in out and "its rows could not be read back: spool file" in out
    monkeypatch.setattr(CacheWriter, "commit", real)
    clean = tmp_path / "clean.h5"
    _extract(media / "plain.mp4", clean, "--audio", "streamrows", "--audio", "priors", "--max-seconds", "4",
             scheduler=scheduler)
    got, want = _contents(cache), _contents(clean)
    assert [k for k in got if k[0] == "early"] == []  # no record: its partial rows are referenced by nothing
    assert {k: v for k, v in got.items() if k[1] != "record"} == {k: v for k, v in want.items() if k[1] != "record"}
    assert not Path(f"{cache}.spool").exists()


def _leftovers(cache: Path, clip: Path) -> list[Path]:
    """What a killed run leaves in the spool folder: a try's row files and a worker's check file."""
    folder = SpoolFolder(cache).open()
    r = process_video(VideoJob("v", str(clip), ("priors",), ExtractOptions(), DecodeParams(max_seconds=3)),
                      sink=SpoolSink(folder.target("0123456789ab-7")))
    assert r.ok and all(isinstance(a, Spooled) for a in r.arrays.values())
    write_check(str(folder.path))
    return folder.files()


@pytest.mark.slow
def test_a_killed_runs_spool_is_removed_by_the_next_run(media, tmp_path, scheduler, monkeypatch):
    cache = tmp_path / "c.h5"
    left = _leftovers(cache, media / "plain.mp4")
    assert len(left) == 2
    (Path(f"{cache}.spool") / "mine.txt").write_text("not featpipe's")
    with monkeypatch.context() as m:
        m.setattr(SpoolFolder, "close", lambda self: None)  # what is gone now went at the start (or once committed)
        assert "failed 0" in _extract(media, cache, "--audio", "priors", scheduler=scheduler)
    assert [p.name for p in Path(f"{cache}.spool").iterdir()] == ["mine.txt"]  # only featpipe's own files go
    (Path(f"{cache}.spool") / "mine.txt").unlink()
    _leftovers(cache, media / "plain.mp4")
    assert "failed 0" in _extract(media, cache, "--audio", "priors", "--visual", "motion", scheduler=scheduler)
    assert not Path(f"{cache}.spool").exists()


def _featpipe() -> list[str]:
    return [sys.executable, "-c", "from featpipe.cli import main; main()"]


@pytest.mark.slow
def test_kill_9_mid_video_leaves_a_spool_that_the_rerun_removes(media, tmp_path):
    env = dict(os.environ, FEATPIPE_PLUGINS="fp_slow", FP_SLOW_SECONDS="60")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGINS), env.get("PYTHONPATH", "")]))
    cache = tmp_path / "k.h5"
    args = ["extract", str(media / "plain.mp4"), "-o", str(cache), "--audio", "slow", "--workers", "1", "--quiet"]
    proc = subprocess.Popen(_featpipe() + args, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not any(p.suffix == ".rows" for p in SpoolFolder(cache).files()):
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the client and its workers, mid-video
        proc.wait()
    assert [p.suffix for p in SpoolFolder(cache).files()] == [".rows"]
    env["FP_SLOW_SECONDS"] = "0"
    rerun = subprocess.run(_featpipe() + args, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0 and "done 1" in rerun.stderr, rerun.stderr
    assert not Path(f"{cache}.spool").exists()


# -- without a cluster: the worker's side, the writer's blocks, the beat pooling's blocks --------------
class CountingSink(SpoolSink):
    """A spool sink that counts the most rows it was handed at once, per output."""

    def __init__(self, target):
        super().__init__(target)
        self.most: dict[str, int] = {}

    def add(self, key, rows):
        self.most[key] = max(self.most.get(key, 0), rows.shape[0])
        super().add(key, rows)


def _wide_job(clip: Path, seconds: float) -> VideoJob:
    opts = ExtractOptions(extra=(("width", "16384"),))  # rows of 128 KiB and 64 KiB float32
    return VideoJob("w", str(clip), ("streamrows",), opts, DecodeParams(chunk_segments=2, max_seconds=seconds),
                    dtype="float32")


def test_a_streaming_worker_holds_one_chunk_of_rows(tmp_path, plugin):
    clip = write_clip(tmp_path / "long.mp4", seconds=40.0, fps=2, size=(32, 32))
    chunk = 2 * 16384 * 2 * 4 + 4 * 16384 * 4  # one chunk's float32 rows of both outputs: 512 KiB
    folder = SpoolFolder(tmp_path / "c.h5").open()
    process_video(_wide_job(clip, 2))  # loads the extractor, warms the decoder
    peaks, kept = {}, {}
    for mode in ("memory", "spool"):
        for seconds in (10, 40):
            sink = CountingSink(folder.target(f"0123456789ab-{seconds}")) if mode == "spool" else None
            tracemalloc.start()
            r = process_video(_wide_job(clip, seconds), sink=sink)
            peaks[mode, seconds] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert r.ok, r.reason
            if mode == "spool":
                assert sink.most == {"0": 2, "1": 4}  # one chunk of 2 segments at a time (the hop output: 4 rows)
                assert all(isinstance(a, Spooled) for a in r.arrays.values())
                assert len(pickle.dumps(r)) < 4096  # what goes back to the client: references, not rows
                kept[mode, seconds] = {k: a.read(0, a.shape[0]) for k, a in r.arrays.items()}
            else:
                kept[mode, seconds] = r.arrays
    for k in kept["memory", 40]:
        np.testing.assert_array_equal(kept["spool", 40][k], kept["memory", 40][k])
    # 30 s more of video: in memory at least its rows more (7.5 MiB), streamed less than one chunk more
    assert peaks["memory", 40] - peaks["memory", 10] > 15 * chunk, peaks
    assert peaks["spool", 40] - peaks["spool", 10] < chunk, peaks


def test_worker_side_failures_delete_their_files(tmp_path, plugin):
    clip = write_clip(tmp_path / "v.mp4", seconds=3.0, audio_seconds=1.5)
    folder = SpoolFolder(tmp_path / "c.h5").open()
    job = VideoJob("v", str(clip), ("streamrows",), ExtractOptions(extra=(("overflow_from", "1"),)),
                   DecodeParams(max_seconds=3))
    r = process_video(job, sink=SpoolSink(folder.target("0123456789ab-1")))
    assert not r.ok and r.reason == FLOAT16_OVERFLOW and r.arrays == {}
    assert folder.files() == []  # the failed try's files are gone
    # rows that overflow but are not stored (audio ends at 1.5 s: segments 2.. repeat segment 1) pass
    late = VideoJob("v", str(clip), ("streamrows",), ExtractOptions(extra=(("overflow_from", "2"),)),
                    DecodeParams(max_seconds=3))
    ok = process_video(late, sink=SpoolSink(folder.target("0123456789ab-2")))
    assert ok.ok, ok.reason
    assert np.isfinite(ok.arrays["streamrows"].read(0, 3).astype(np.float32)).all()
    assert process_video(late).ok  # the same verdict in memory
    as32 = process_video(VideoJob(job.video_id, job.path, job.specs, job.options, job.params, dtype="float32"))
    assert as32.ok, as32.reason  # 1e6 is finite as float32


def test_spooled_reads_equal_the_take_plan_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((23, 3, 2)).astype(np.float16)
    sink = SpoolSink(SpoolFolder(tmp_path / "c.h5").open().target("0123456789ab-1"))
    for i in range(5):
        sink.open(str(i), (3, 2), np.float16)
        for lo in range(0, 23, 4):
            sink.add(str(i), rows[lo:lo + 4])
    for i in range(5):
        base = sink.stored(str(i), None)  # the rows as written
        mask = rng.random(30) < (0.2 + 0.15 * i)
        for pad in ("repeat", "zero"):
            take = fill_plan(mask, 23, pad)
            ref = Spooled(base.path, base.dtype, base.computed, take)
            want = take_rows(rows, take)
            for step in (1, 2, 7, 30):
                got = np.concatenate([ref.read(lo, hi) for lo, hi in ref.blocks(step)])
                assert got.dtype == want.dtype
                np.testing.assert_array_equal(got, want)
    with open(ref.path, "r+b") as f:
        f.truncate(10)
    with pytest.raises(SpoolError, match="holds 10 bytes"):
        ref.read(0, 5)
    ref.remove()
    with pytest.raises(SpoolError, match="is gone"):
        ref.read(0, 5)


def test_the_writer_copies_spooled_rows_in_bounded_blocks(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((40, 4, 4)).astype(np.float32)
    take = fill_plan(rng.random(45) < 0.7, 40, "repeat")
    sink = SpoolSink(SpoolFolder(tmp_path / "s.h5").open().target("0123456789ab-1"))
    sink.open("0", (4, 4), np.float32)
    sink.add("0", rows)
    ref = sink.stored("0", take)
    monkeypatch.setattr(spool, "BLOCK_BYTES", 3 * 4 * 4 * 4)  # 3 rows
    reads: list[tuple[int, int]] = []
    real = Spooled.read
    monkeypatch.setattr(Spooled, "read", lambda self, lo, hi: reads.append((lo, hi)) or real(self, lo, hi))
    spec = OutputSpec("maps", (4, 4), "visual")
    caches = {}
    for name, arr in (("streamed", ref), ("memory", take_rows(rows, take))):
        with CacheWriter(tmp_path / f"{name}.h5", {"seg_len": 1.0}) as w:
            w.ensure_feature(spec, {"spec": "t", "weights": "none"})
            w.commit({"video_id": "a", "source": {}}, {"maps": np.zeros((2, 4, 4), np.float32)})
            w.commit({"video_id": "v", "source": {}}, {"maps": arr}, {"maps": 30})
        with open_cache(tmp_path / f"{name}.h5") as c:
            caches[name] = (c.get("v", "maps").data, c.record("v")["features"]["maps"], c.get("a", "maps").data)
    assert reads and max(hi - lo for lo, hi in reads) == 3 and sum(hi - lo for lo, hi in reads) == 45
    np.testing.assert_array_equal(caches["streamed"][0], caches["memory"][0])
    assert caches["streamed"][1] == caches["memory"][1] == [2, 45, 30]
    np.testing.assert_array_equal(caches["streamed"][2], 0)


def test_pooling_in_blocks_equals_pooling_the_whole_video():
    rng = np.random.default_rng(2)
    for case in range(40):
        n, hop = int(rng.integers(0, 30)), float(rng.choice([0.25, 0.5, 1.0]))
        arr = rng.standard_normal((n, 3, 2)).astype(np.float16)
        centres = hop / 2 + hop * np.arange(n) if case % 2 else hop * np.arange(n)
        end = max(1.0, n * hop)
        edges = np.unique(np.concatenate([[0.0, end], np.sort(rng.uniform(0, end, int(rng.integers(0, 25))))]))
        bounds = np.stack([edges[:-1], edges[1:]], axis=1)
        want = pool(arr, centres, bounds)
        for most in (1, 2, 3, 7, 100):
            blocks = _pool_blocks(centres, bounds, most)
            assert [b[2] for b in blocks] == [0, *[b[3] for b in blocks[:-1]]] and blocks[-1][3] == len(bounds)
            got = np.concatenate([pool(arr[r0:r1], centres[r0:r1], bounds[s0:s1]) for r0, r1, s0, s1 in blocks])
            np.testing.assert_array_equal(got, want)


def test_beat_pooling_of_spooled_rows_reads_blocks(tmp_path, monkeypatch, plugin):
    path = write_clicks(tmp_path / "clicks.mp4", seconds=5.0)
    opts = ExtractOptions(extra=(("beat_times", "1"), ("width", "64")))
    job = VideoJob("c", path, ("rhythm", "streamrows", "motion"), opts, DecodeParams(fps=4, chunk_segments=3),
                   timeline=Timeline("beats"))
    in_memory = process_video(job)
    assert in_memory.ok, in_memory.reason
    monkeypatch.setattr(spool, "BLOCK_BYTES", 3 * 64 * 2 * 8)  # 3 rows of streamrows, as pooling's float64
    reads: list[tuple[tuple[int, ...], int]] = []
    real = Spooled.read
    monkeypatch.setattr(Spooled, "read",
                        lambda self, lo, hi: reads.append((tuple(self.computed[1:]), hi - lo)) or real(self, lo, hi))
    folder = SpoolFolder(tmp_path / "c.h5").open()
    streamed = process_video(job, sink=SpoolSink(folder.target("0123456789ab-1")))
    assert streamed.ok, streamed.reason
    np.testing.assert_array_equal(streamed.bounds, in_memory.bounds)
    assert streamed.valid == in_memory.valid and streamed.arrays.keys() == in_memory.arrays.keys()
    assert len(folder.files()) == len(streamed.arrays)  # the base-grid files are gone once pooled
    wide = [n for shape, n in reads if shape == (64, 2)]  # streamrows: 20 base rows, 2 per beat segment
    assert max(wide) <= 3 and sum(wide) >= 20, wide  # pooled from blocks of at most 3 rows
    for k, ref in streamed.arrays.items():
        np.testing.assert_array_equal(ref.read(0, ref.shape[0]), in_memory.arrays[k])


class FakeClient:
    """Answers ``run`` as workers on another machine would (they do not see the client's folder)."""

    def __init__(self, folder: str):
        self.folder = folder

    def wait_for_workers(self, n, timeout):
        pass

    def run(self, fn, *args, on_error):
        return {"tcp://10.0.0.9:1": fn(*args[:3], self.folder), "tcp://10.0.0.9:2": fn(*args[:3], self.folder)}

    def submit(self, fn, *args, **kwargs):  # the pre-flight load, run here at once
        return _Done(fn(*args))


class _Done:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value

    def release(self):
        pass


def test_workers_that_cannot_see_the_spool_send_rows_in_memory(tmp_path, media):
    cfg = ExtractConfig([str(media)], tmp_path / "c.h5", audio=("priors",))
    folder = SpoolFolder(cfg.cache).open()
    jobs = [(VideoJob("plain", str(media / "plain.mp4"), ("priors",), ExtractOptions(), DecodeParams()), {})]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert dispatch.check_workers(FakeClient(str(folder.path)), cfg, jobs, folder) is True  # same disk
        assert folder.files() == []  # the check files were read back and deleted
        assert dispatch.check_workers(FakeClient(str(tmp_path / "elsewhere")), cfg, jobs, folder) is False
        assert dispatch.check_workers(FakeClient(str(folder.path)), cfg, jobs, None) is False  # --no-stream
    (line,) = [str(w.message) for w in seen]
    assert line == (f"worker tcp://10.0.0.9:1 and 1 more cannot write to {folder.path}, which this client reads: "
                    "results come in memory")
    assert not (tmp_path / "elsewhere").exists()  # a worker never makes the folder
    version, problem, check = worker_check(("priors",), ExtractOptions(), None, str(folder.path))
    assert problem is None and folder.visible(check) and not folder.visible(check)  # read once, then deleted


def test_forgetting_a_submission_deletes_only_its_files(tmp_path):
    folder = SpoolFolder(tmp_path / "c.h5").open()
    for prefix in ("0123456789ab-1", "0123456789ab-11", "0123456789ab-2"):
        sink = SpoolSink(folder.target(prefix))
        sink.open("0", (1,), np.float16)
        sink.stored("0", None)
    folder.delete_submission("0123456789ab-1")
    assert sorted(p.name.split("-")[1] for p in folder.files()) == ["11", "2"]
    folder.close()
    assert not folder.path.exists()
    mem = MemorySink()
    mem.open("0", (2,), np.float32)
    assert mem.stored("0", np.array([-1, -1])).tolist() == [[0, 0], [0, 0]]  # no rows computed: zeros


def test_a_spool_folder_that_cannot_be_made_means_rows_in_memory(tmp_path):
    cfg = ExtractConfig([], tmp_path / "c.h5")
    Path(f"{cfg.cache}.spool").write_text("a file where the folder would be")
    with pytest.warns(UserWarning, match=r"c\.h5\.spool .*results come in memory"):
        assert dispatch._open_spool(cfg) is None
    assert Path(f"{cfg.cache}.spool").read_text() == "a file where the folder would be"


def test_each_chunk_notes_its_rows_that_are_not_finite_after_the_cast():
    from featpipe.run.extract_video import _add_chunk

    sink, bad = MemorySink(), []
    sink.open("0", (3,), np.float16)
    first = np.array([[1, 2, 3], [1, 7e4, 0], [0, 0, 0]], np.float32)  # 7e4: inf as float16
    second = np.array([[np.nan, 0, 0], [-1e6, 1, 1], [5, 5, 5], [-np.inf, 0, 0]], np.float32)
    for chunk in (first, second):
        _add_chunk(sink, "0", chunk, np.dtype(np.float16), bad, "t", (3,))
    assert bad == [1, 3, 4, 6]  # rows of the whole output: NaN, -inf and +inf, each wherever it is in the row
    assert sink.rows("0") == 7 and sink.stored("0", None).dtype == np.float16
