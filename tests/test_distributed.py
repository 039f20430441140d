"""Distributed extraction: real Dask processes on loopback, faults injected on purpose.

The slow tests (marked ``slow``, kept in the default run) start a real ``dask scheduler`` and
``dask worker`` processes on 127.0.0.1 and run ``featpipe extract --scheduler`` as a separate
process, then kill things: a worker mid-video, the client, the scheduler. A test-only extractor
(tests/distributed_plugin.py, loaded through FEATPIPE_PLUGINS) crashes its worker on
``poison*`` files, hangs on ``hang*`` and dawdles on ``slow*``. Every process a test starts,
it stops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
import urllib.request
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest

from featpipe.cache import CacheError, CacheWriter, open_cache
from featpipe.cache.layout import INDEX, VIDEOS, decode_records
from featpipe.run.cluster import ClusterError, connect, dashboard_link, gpu_devices
from featpipe.decode import DecodeParams
from featpipe.extractors.base import MediaNeeds
from featpipe.run.prefetch import prefetch
from featpipe.run.extract_video import chunk_params

import distributed_plugin  # noqa: F401 - registers the "faults" extractor in this process too
from media import write_clip

TESTS = Path(__file__).parent
BIN = Path(sys.executable).parent
GOOD = [f"v{i}" for i in range(6)]


# -- helpers ----------------------------------------------------------------------------------
def plugin_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH", "")]))
    env["FEATPIPE_PLUGINS"] = "distributed_plugin"
    env.update(extra)
    return env


def _wait_for(cond, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and its descendants (a `dask worker` is a nanny plus its worker process)."""
    try:
        proc = psutil.Process(pid)
        procs = proc.children(recursive=True) + [proc]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


class DaskProcesses:
    """A `dask scheduler` and `dask worker` processes on loopback; everything stopped by ``close``."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.file = folder / "scheduler.json"
        self.workers: list[subprocess.Popen] = []
        self.scheduler = self._spawn("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                                   "--no-dashboard", "--scheduler-file", str(self.file)])
        self.address = _wait_for(lambda: self.file.exists() and self.file.stat().st_size and
                                 json.loads(self.file.read_text())["address"], 60, "the scheduler file")

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "ab")
        return subprocess.Popen([str(BIN / "dask"), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def add_worker(self) -> subprocess.Popen:
        n = len(self.workers)
        w = self._spawn(f"worker{n}", ["worker", "--scheduler-file", str(self.file), "--nthreads", "1",
                                       "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{n}"])
        self.workers.append(w)
        return w

    def live_workers(self) -> list[subprocess.Popen]:
        return [w for w in self.workers if w.poll() is None]

    def wait_workers(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(n, timeout=90)

    def kill_worker_process(self, pid: int) -> None:
        """SIGKILL the worker process ``pid`` and the `dask worker` (nanny) that owns it."""
        for w in self.live_workers():
            if pid in [c.pid for c in psutil.Process(w.pid).children(recursive=True)]:
                _kill_tree(w.pid)
                return
        raise AssertionError(f"no worker process {pid}")

    def close(self) -> None:
        for p in [*self.workers, self.scheduler]:
            _kill_tree(p.pid)
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """Good clips v0..v5 and slow0 (2 s each), and apart from them poison.mp4 and hang.mp4."""
    folder = tmp_path_factory.mktemp("media")
    good = folder / "good"
    good.mkdir()
    for i, name in enumerate([*GOOD, "slow0"]):
        write_clip(good / f"{name}.mp4", seconds=2.0, fps=5, size=(32, 24), freq=200.0 + 50 * i)
    for name in ("poison", "hang"):
        write_clip(folder / f"{name}.mp4", seconds=2.0, fps=5, size=(32, 24))
    return folder


@pytest.fixture(scope="module")
def dask_env(tmp_path_factory) -> dict[str, str]:
    # The scheduler gives up on a task after 2 worker deaths, sooner than featpipe's own bound
    # (3): the client must resubmit, and still stop after 3.
    return plugin_env(FEATPIPE_FAULTS_SLEEP="0.2", FEATPIPE_FAULTS_SLOW="4",
                      FEATPIPE_FAULTS_MARK=str(tmp_path_factory.mktemp("marks")),
                      DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="1")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, dask_env):
    procs = DaskProcesses(tmp_path_factory.mktemp("dask"), dask_env)
    try:
        procs.add_worker()
        procs.add_worker()
        procs.wait_workers(2)
        yield procs
    finally:
        procs.close()


def extract(inputs: list[Path], cache: Path, env: dict[str, str], *extra: str, background: bool = False):
    args = [str(BIN / "featpipe"), "extract", *map(str, inputs), "-o", str(cache), "--audio", "faults",
            "--device", "cpu", "--quiet", *extra]
    if background:
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)


def contents(path: Path) -> dict[str, tuple[np.ndarray, int]]:
    with open_cache(path) as cache:
        return {v: (cache.get(v, "faults").data, cache.get(v, "faults").valid) for v in cache.videos}


def record_counts(path: Path) -> dict[str, int]:
    """How many records each video has in the file (a duplicated commit shows as 2)."""
    with h5py.File(path, "r", swmr=True, locking=False) as f:
        g = f[VIDEOS]
        n = g[INDEX].shape[0]
        idx = g[INDEX][:n]
        recs = decode_records(idx, g["records"][: int((idx[:, 0] + idx[:, 1]).max())]) if n else []
    counts: dict[str, int] = {}
    for r in recs:
        counts[r["video_id"]] = counts.get(r["video_id"], 0) + 1
    return counts


def committed(path: Path) -> int:
    try:
        with open_cache(path) as cache:
            return len(cache.videos)
    except (CacheError, OSError, KeyError):  # not created yet, or being structured
        return 0


def marks(env: dict[str, str], video: str) -> list[int]:
    """pids of the worker processes that started ``video``, in order."""
    found = sorted(Path(env["FEATPIPE_FAULTS_MARK"]).glob(f"{video}.*"), key=lambda p: int(p.name.split(".")[2]))
    return [int(p.name.split(".")[1]) for p in found]


def assert_same(cache: Path, reference: dict[str, tuple[np.ndarray, int]]) -> None:
    got = contents(cache)
    assert sorted(got) == sorted(reference)
    for v, (data, valid) in reference.items():
        np.testing.assert_array_equal(got[v][0], data, err_msg=v)
        assert got[v][1] == valid
    assert set(record_counts(cache).values()) == {1}, "a video was committed twice"


@pytest.fixture(scope="module")
def reference(cluster, media, dask_env, tmp_path_factory) -> dict[str, tuple[np.ndarray, int]]:
    """A clean run of the good clips on the same cluster."""
    cache = tmp_path_factory.mktemp("ref") / "ref.h5"
    r = extract([media / "good"], cache, dask_env, "--scheduler", cluster.address)
    assert r.returncode == 0, r.stdout + r.stderr
    got = contents(cache)
    assert sorted(got) == sorted([*GOOD, "slow0"])
    assert got["v0"][0].shape == (2, 3) and got["v0"][0][:, 0].tolist() == [0, 1]  # real rows, not a stub
    return got


# -- worker internals (fast) ------------------------------------------------------------------
def test_prefetch_decodes_ahead_while_the_consumer_works() -> None:
    producing_second = threading.Event()

    def items():
        yield 0
        producing_second.set()  # runs only if the producer went on while item 0 was being used
        yield 1

    got = []
    for item in prefetch(items()):
        if item == 0:
            assert producing_second.wait(10), "nothing was decoded ahead"
        got.append(item)
    assert got == [0, 1]


def test_prefetch_raises_producer_errors_and_stops_early() -> None:
    def broken():
        yield 1
        raise ValueError("bad packet")

    with pytest.raises(ValueError, match="bad packet"):
        list(prefetch(broken()))

    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()  # decoders close their containers here

    it = prefetch(endless())
    assert next(it) == 0
    it.close()
    assert closed.wait(10)


def test_chunks_hold_a_full_batch() -> None:
    p = DecodeParams()
    assert chunk_params(p, MediaNeeds(frame_positions=(0.5,)), 40).chunk_segments == 40
    assert chunk_params(p, MediaNeeds(frame_positions=(0.1, 0.3, 0.5, 0.7, 0.9)), 32).chunk_segments == 16
    assert chunk_params(p, MediaNeeds(audio=True), 256) is p


def test_gpu_layout_one_worker_per_device(monkeypatch) -> None:
    """Without a GPU: the per-device workers and their CUDA_VISIBLE_DEVICES, on the CPU."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_devices() == []
    with pytest.raises(ClusterError, match="no GPU"):
        with connect(device="cuda"):
            pass
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert gpu_devices() == ["1", "0"]
    with connect(device="cuda") as client:
        seen = client.run(os.getenv, "CUDA_VISIBLE_DEVICES")
        assert sorted(seen.values()) == ["0", "1"]
        assert client.scheduler_info()["services"].get("dashboard") != 8787  # a free port
        check_dashboard_link(client, monkeypatch)


def check_dashboard_link(client, monkeypatch) -> None:
    """Both states, whether or not bokeh (the ``[dashboard]`` extra) is installed here.

    The local scheduler runs in this process, so its modules are ours: with the dashboard module
    absent there is no link; with it present the link is the port the scheduler really serves.
    """
    dashboard_module = "distributed.dashboard.scheduler"
    monkeypatch.delitem(sys.modules, dashboard_module, raising=False)
    assert dashboard_link(client) is None  # HTTP is served (health, metrics), but no dashboard
    monkeypatch.setitem(sys.modules, dashboard_module, types.ModuleType(dashboard_module))
    port = client.scheduler_info(n_workers=0)["services"]["dashboard"]
    assert dashboard_link(client) == f"http://127.0.0.1:{port}/status"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
        assert answer.read() == b"ok"  # the link's port is the scheduler's HTTP server


# -- backpressure (in-process client, local cluster) ------------------------------------------
@pytest.mark.slow
def test_in_flight_stays_bounded_with_a_slow_writer(tmp_path, media, monkeypatch) -> None:
    from featpipe.run import plan as pipeline
    from featpipe.extractors.base import ExtractOptions

    started = tmp_path / "started"
    started.mkdir()
    for k, v in plugin_env(FEATPIPE_FAULTS_MARK=str(started), FEATPIPE_FAULTS_SLEEP="0",
                           FEATPIPE_FAULTS_SLOW="0").items():
        monkeypatch.setenv(k, v)  # local workers are spawned with this environment
    ahead: list[int] = []
    real_commit = CacheWriter.commit

    def slow_commit(self, record, arrays, valid=None, **more):
        # started by workers (seen from outside the client) minus committed so far
        ahead.append(len(list(started.iterdir())) - len(self.records))
        time.sleep(0.3)
        real_commit(self, record, arrays, valid, **more)

    monkeypatch.setattr(CacheWriter, "commit", slow_commit)
    cfg = pipeline.ExtractConfig(inputs=[str(media / "good")], cache=tmp_path / "c.h5", audio=("faults",),
                                 options=ExtractOptions(device="cpu"), workers=2, max_in_flight=2)
    summary = pipeline.run_extract(cfg)
    assert sorted(summary.done) == sorted([*GOOD, "slow0"]) and summary.ok
    assert summary.peak_in_flight == 2
    assert len(ahead) == 7 and max(ahead) <= 2, ahead
    # a link exactly when this (in-process) scheduler serves a dashboard: bokeh installed or not
    assert (summary.dashboard is None) == ("distributed.dashboard.scheduler" not in sys.modules)


@pytest.mark.slow
def test_local_cluster_fails_a_poisoned_video_alone(tmp_path, media, monkeypatch) -> None:
    from featpipe.run import plan as pipeline
    from featpipe.extractors.base import ExtractOptions

    for k, v in plugin_env(FEATPIPE_FAULTS_SLEEP="0").items():
        monkeypatch.setenv(k, v)
    cfg = pipeline.ExtractConfig(inputs=[str(media / "good" / "v0.mp4"), str(media / "good" / "v1.mp4"),
                                         str(media / "poison.mp4")], cache=tmp_path / "c.h5", audio=("faults",),
                                 options=ExtractOptions(device="cpu"), workers=2)
    summary = pipeline.run_extract(cfg)
    assert sorted(summary.done) == ["v0", "v1"]
    ((vid, _, reason),) = summary.failed
    assert vid == "poison" and reason.startswith("its worker died 3 times")


def test_workers_without_the_plugin_stop_the_run_with_the_reason(tmp_path, media, monkeypatch) -> None:
    from featpipe.run import plan as pipeline
    from featpipe.extractors.base import ExtractOptions

    monkeypatch.delenv("FEATPIPE_PLUGINS", raising=False)  # the client has it (imported above), workers not
    cfg = pipeline.ExtractConfig(inputs=[str(media / "good" / "v0.mp4")], cache=tmp_path / "c.h5",
                                 audio=("faults",), options=ExtractOptions(device="cpu"), workers=1)
    with pytest.raises(pipeline.PipelineError, match=r"worker tcp://127\.0\.0\.1:\d+: .*unknown extractor 'faults'"):
        pipeline.run_extract(cfg)
    with open_cache(cfg.cache) as cache:
        assert cache.videos == []


# -- on a GPU (skipped without one) -----------------------------------------------------------
def _cuda() -> int:
    import torch

    return torch.cuda.device_count()


@pytest.mark.skipif(not gpu_devices() or _cuda() == 0, reason="needs a CUDA GPU")
def test_cuda_workers_each_see_their_own_gpu() -> None:
    with connect(device="cuda") as client:
        seen = client.run(lambda: __import__("torch").cuda.get_device_name(0) + "|" +
                          os.environ["CUDA_VISIBLE_DEVICES"])
    assert len(seen) == len(gpu_devices()) and len(set(seen.values())) == len(seen)


@pytest.mark.skipif(not gpu_devices() or _cuda() == 0, reason="needs a CUDA GPU")
def test_clip_half_precision_on_cuda() -> None:
    """The documented tolerance: float16 CLIP within cosine 0.999 and 1 % of float32."""
    from featpipe.extractors import Chunk, build
    from featpipe.extractors.base import ExtractOptions

    frames = np.random.default_rng(0).integers(0, 256, (16, 240, 320, 3), dtype=np.uint8)
    chunk = Chunk("v", 0, 16, 1.0, 16.0, frames={0.5: frames})
    out = {}
    for precision in ("fp16", "fp32"):
        ext = build("clip:ViT-B-32/random", ExtractOptions(device="cuda", extra=(("precision", precision),)))
        ext.load("cuda")
        out[precision] = next(iter(ext.extract(chunk).values())).astype(np.float64)
    a, b = out["fp32"], out["fp16"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() >= 0.999
    assert (np.abs(a - b).max(1) <= 0.01 * np.abs(a).max(1)).all()


# -- faults on a real external cluster ---------------------------------------------------------
@pytest.mark.slow
def test_worker_killed_mid_video_is_retried_elsewhere(cluster, media, dask_env, reference, tmp_path) -> None:
    cache = tmp_path / "c.h5"
    client = extract([media / "good"], cache, dask_env, "--scheduler", cluster.address, background=True)
    try:
        victim = _wait_for(lambda: marks(dask_env, "slow0")[-1:], 60, "slow0 to start")[0]
        cluster.kill_worker_process(victim)  # it is 4 s into sleeping on slow0
        out, _ = client.communicate(timeout=120)
    finally:
        client.kill()
    assert client.returncode == 0, out
    starts = marks(dask_env, "slow0")
    assert starts[-2] == victim and starts[-1] != victim  # slow0 ran again, on the other worker
    assert_same(cache, reference)
    cluster.add_worker()  # back to two for the next tests
    cluster.wait_workers(2)


@pytest.mark.slow
def test_client_killed_then_rerun_resumes(cluster, media, dask_env, reference, tmp_path) -> None:
    cache = tmp_path / "c.h5"
    client = extract([media / "good"], cache, dask_env, "--scheduler", cluster.address, background=True)
    try:
        _wait_for(lambda: committed(cache) >= 2, 60, "two commits")
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=10)
    finally:
        client.kill()
    first = committed(cache)
    assert 2 <= first < len(reference)
    r = extract([media / "good"], cache, dask_env, "--scheduler", cluster.address)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"skipped {first}" in r.stderr
    assert_same(cache, reference)


@pytest.mark.slow
def test_poisoned_and_hanging_videos_fail_alone(cluster, media, dask_env, reference, tmp_path) -> None:
    cache = tmp_path / "c.h5"
    good = [media / "good" / f"{v}.mp4" for v in GOOD]  # not slow0: it would outlast the 3 s limit
    r = extract([*good, media / "poison.mp4", media / "hang.mp4"], cache, dask_env,
                "--scheduler", cluster.address, "--video-timeout", "3", "--video-timeout-scale", "0")
    assert r.returncode == 1, r.stdout + r.stderr
    report = {json.loads(line)["video_id"]: json.loads(line) for line in Path(f"{cache}.report.jsonl").open()}
    assert report["poison"]["status"] == "failed"
    # featpipe's bound, not the scheduler's: the scheduler gave up after 2 deaths, the client
    # resubmitted, and the try after the third death stopped before touching the file
    assert "its worker died 3 times" in report["poison"]["reason"]
    assert len(set(marks(dask_env, "poison"))) == 3
    assert "because 2 workers died" in (cluster.folder / "scheduler.log").read_text()
    assert report["hang"]["status"] == "failed" and "timed out after" in report["hang"]["reason"]
    assert {v for v, line in report.items() if line["status"] == "done"} == set(GOOD)
    assert_same(cache, {v: reference[v] for v in GOOD})
    cluster.wait_workers(2)  # the nannies brought every worker back


@pytest.mark.slow
def test_scheduler_lost_exits_with_a_message_and_rerun_resumes(media, tmp_path, reference) -> None:
    env = plugin_env(FEATPIPE_FAULTS_SLEEP="1", FEATPIPE_FAULTS_SLOW="1", FEATPIPE_FAULTS_MARK=str(tmp_path))
    cache = tmp_path / "c.h5"
    procs = DaskProcesses(tmp_path, env)
    try:
        procs.add_worker()
        procs.wait_workers(1)
        client = extract([media / "good"], cache, env, "--scheduler", procs.address, background=True)
        try:
            _wait_for(lambda: committed(cache) >= 1, 60, "a commit")
            _kill_tree(procs.scheduler.pid)
            out, _ = client.communicate(timeout=90)
        finally:
            client.kill()
    finally:
        procs.close()
    assert client.returncode == 2, out
    assert "lost the Dask scheduler" in out and "rerun to resume" in out
    done = committed(cache)
    assert 1 <= done < len(reference)
    env["FEATPIPE_FAULTS_SLEEP"] = env["FEATPIPE_FAULTS_SLOW"] = "0"
    (tmp_path / "again").mkdir()
    procs = DaskProcesses(tmp_path / "again", env)
    try:
        procs.add_worker()
        procs.wait_workers(1)
        r = extract([media / "good"], cache, env, "--scheduler", procs.address)
    finally:
        procs.close()
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"skipped {done}" in r.stderr
    assert_same(cache, reference)
