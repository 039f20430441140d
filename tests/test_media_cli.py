"""Real-world media through `featpipe extract`: upright frames, honest valid counts per feature,
bad packets in the record, one-sentence reasons, the storage-dtype check, the report under kill -9.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from featpipe import cli
from featpipe import open_cache
from media import corrupt_packet, truncate, write_clip

PLUGINS = str(Path(__file__).parent / "plugins")
EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception|Exit)\b|Traceback|\(at \w+:\d+\)")


@pytest.fixture
def layout_plugin(monkeypatch):
    monkeypatch.setenv("FEATPIPE_PLUGINS", "fp_layout")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [PLUGINS, os.environ.get("PYTHONPATH", "")])))
    monkeypatch.syspath_prepend(PLUGINS)


def _extract(*args) -> tuple[int, str]:
    res = CliRunner().invoke(cli.main, ["extract", *map(str, args), "--workers", "1", "--quiet"],
                             catch_exceptions=False)
    return res.exit_code, res.output


def _report(cache) -> dict[str, dict]:
    return {r["video_id"]: r for r in map(json.loads, Path(f"{cache}.report.jsonl").read_text().splitlines())}


def _records(cache) -> dict[str, dict]:
    with open_cache(cache) as c:
        return {v: c.record(v) for v in c.videos}


def test_real_world_files_through_extract(tmp_path, layout_plugin):
    folder = tmp_path / "in"
    folder.mkdir()
    write_clip(folder / "upright.mp4", seconds=3, fps=10, size=(64, 32), pattern="halves", rotation=-90)
    full = write_clip(tmp_path / "full.mkv", seconds=20, fps=10)
    truncate(full, folder / "cut.mkv", 0.75)
    truncate(full, folder / "stub.mkv", 0.3)
    corrupt_packet(write_clip(tmp_path / "src.mp4", seconds=6, fps=10, preset="medium"), folder / "flipped.mp4",
                   "audio", 2.0)
    write_clip(folder / "cover.mp4", seconds=4, fps=10, cover=True, second_audio=True)
    (folder / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    cache = tmp_path / "c.h5"
    code, out = _extract(folder, "-o", cache, "--visual", "layout", "--audio", "priors")
    assert code == 1, out  # two files fail
    report = _report(cache)
    assert {k: r["status"] for k, r in report.items()} == {
        "upright": "done", "cut": "done", "stub": "failed", "flipped": "done", "cover": "done", "noise": "failed"}
    for r in report.values():
        assert not EXCEPTION_NAME.search(r["reason"]), r["reason"]
    assert re.search(r"decoded \d+\.\d\d s of the 20\.0\d s the file states", report["stub"]["reason"])
    recs = _records(cache)
    with open_cache(cache) as c:
        up = c.get("upright", "layout").data.astype(np.float32)
        assert up.shape == (3, 14)
        top, bottom = up[:, 0:3], up[:, 3:6]
        np.testing.assert_allclose(top.mean(0), (255, 0, 0), atol=12)  # stored left half: now on top
        np.testing.assert_allclose(bottom.mean(0), (0, 0, 255), atol=12)
        assert (up[:, 12] == 64).all() and (up[:, 13] == 32).all()  # displayed 32 wide, 64 high
        media = recs["upright"]["media"]
        assert (media["display_width"], media["display_height"], media["rotation"]) == (32, 64, 90)

        cut = recs["cut"]
        video_end, audio_end = cut["streams"]["video"]["end"], cut["streams"]["audio"]["end"]
        assert audio_end < video_end < 19.5 and cut["duration"] == pytest.approx(20, abs=0.1)
        assert c.get("cut", "layout").valid == int(np.floor(video_end + 0.5))  # per feature, per stream
        assert c.get("cut", "priors").valid == int(np.floor(audio_end + 0.5))
        assert cut["segments"] == c.get("cut", "layout").data.shape[0] == int(np.floor(video_end + 0.5))

        flipped = recs["flipped"]
        assert flipped["bad_packets"] >= 1 and flipped["streams"]["audio"]["bad_packets"] >= 1
        assert c.get("flipped", "priors").valid == 6 and c.get("flipped", "layout").valid == 6

        cover = recs["cover"]["media"]
        assert cover["video_codec"] == "h264" and cover["audio_channels"] == 1  # not the cover, the default audio


def test_values_past_float16_fail_the_cast_check_and_float32_keeps_them(tmp_path, layout_plugin):
    write_clip(tmp_path / "a.mp4", seconds=2, fps=10)
    code, _ = _extract(tmp_path / "a.mp4", "-o", tmp_path / "h.h5", "--visual", "layout", "--set", "big=1")
    reason = _report(tmp_path / "h.h5")["a"]["reason"]
    assert code == 1 and reason == "layout produced values that are not finite as float16 (past float16's range: use --dtype float32)"
    code, out = _extract(tmp_path / "a.mp4", "-o", tmp_path / "f.h5", "--visual", "layout", "--set", "big=1",
                         "--audio", "priors", "--dtype", "float32")
    assert code == 0, out
    with open_cache(tmp_path / "f.h5") as c:
        assert (c.get("a", "layout").data == 70000).all()
        assert c.get("a", "priors").data.dtype == np.float32


def test_report_keeps_a_line_per_committed_video_after_kill_9(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(8):
        write_clip(folder / f"v{i}.mp4", seconds=2, fps=5, freq=200 + 50 * i)
    cache = tmp_path / "k.h5"
    env = dict(os.environ, FEATPIPE_PLUGINS="fp_slow", FP_SLOW_SECONDS="0.5")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PLUGINS, env.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", "from featpipe import cli; cli.main()", "extract", str(folder), "-o", str(cache),
                             "--audio", "slow", "--workers", "1", "--quiet"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = Path(f"{cache}.report.jsonl")
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (report.exists() and report.read_text().count('"done"') >= 2):
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    done = {v for v, r in _report(cache).items() if r["status"] == "done"}
    with open_cache(cache) as c:
        committed = set(c.videos)
    assert len(done) >= 2 and done <= committed and len(committed) < 8
