"""A checkpoint that exists but cannot be loaded stops the run once, before the first video (as a
missing one does), instead of failing every video one by one."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from clip_helpers import save_weights

from featpipe.cli import main


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_an_unloadable_clip_checkpoint_fails_once_before_any_video(clips, tiny_clip, tmp_path, damage):
    ckpt = tmp_path / "w.safetensors"
    if damage == "garbage":
        ckpt.write_bytes(b"\x00not a checkpoint" * 64)
    else:
        whole = save_weights(tiny_clip, tmp_path / "good.safetensors").read_bytes()
        ckpt.write_bytes(whole[: len(whole) // 2])  # an interrupted download
    cache = tmp_path / "c.h5"
    r = CliRunner().invoke(
        main,
        ["extract", str(clips), "-o", str(cache), "--visual", f"clip:{tiny_clip}/{ckpt}", "--workers", "1", "--quiet"],
    )
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("featpipe: error:")]
    assert len(errors) == 1 and f"cannot load clip:{tiny_clip}/{ckpt}" in errors[0], r.output
    assert "failed" not in r.output  # no video was tried, so none failed one by one
    report = tmp_path / "c.h5.report.jsonl"
    assert not report.exists() or not [json.loads(x) for x in report.read_text().splitlines() if x.strip()]


def test_a_try_whose_worker_died_is_not_timed_while_it_waits(monkeypatch):
    # the clock of a video whose worker died stops until its next try starts: waiting in the queue
    # for a worker (the nanny restarting it, the other one busy) is not running past the limit
    import time

    from featpipe.run.retry import TryPolicy, Watchdog

    class FakeClient:
        workers = {"tcp://alive:1": {}}

        def scheduler_info(self, n_workers=-1):
            return {"workers": dict(self.workers)}

    dog = Watchdog(FakeClient(), "topic", TryPolicy(video_timeout=None))
    dog.enabled, dog.policy = True, TryPolicy(video_timeout=3.0, timeout_per_second=0.0)
    for key, worker in (("dead-key", "tcp://gone:1"), ("live-key", "tcp://alive:1")):
        dog.expect(key)
        dog._on_event((0, {"key": key, "stage": "start", "worker": worker}))
    monkeypatch.setattr(time, "monotonic", lambda real=time.monotonic: real() + 10.0)
    assert [k for k, *_ in dog.expired()] == ["live-key"]
    assert "dead-key" not in dog._running  # until its next try announces "start"
    dog._on_event((0, {"key": "dead-key", "stage": "start", "worker": "tcp://alive:1"}))
    assert "dead-key" in dog._running


def test_a_damaged_clap_checkpoint_is_found_by_the_preflight_load(tmp_path):
    # CLAP (a Hugging Face folder) goes through the same pre-flight task as CLIP: check() passes
    # (the folder is there), the worker's load_check names the damage once
    pytest.importorskip("transformers")
    from test_clap import make_tiny_clap

    from featpipe.contracts import ExtractOptions
    from featpipe.extractors import build
    from featpipe.run.worker import load_check

    folder = make_tiny_clap(tmp_path / "clap")
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])  # an interrupted copy
    spec, options = f"clap:{folder}", ExtractOptions()
    build(spec, options).check()
    problem = load_check((spec,), options)
    assert problem is not None and problem.startswith(f"cannot load {spec}: ") and "\n" not in problem
