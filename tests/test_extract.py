"""`featpipe extract` and `featpipe info` end to end: the CLI, resume, bad input, kill -9."""

from __future__ import annotations

import json
import os
import shutil
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
from media import write_clip

PLUGINS = str(Path(__file__).parent / "plugins")


def _run(args, **kw):
    result = CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=False, **kw)
    return result


def _report(cache) -> dict[str, dict]:
    lines = Path(f"{cache}.report.jsonl").read_text().splitlines()
    return {json.loads(x)["video_id"]: json.loads(x) for x in lines}


def _arrays(cache, feature) -> dict[str, np.ndarray]:
    with open_cache(cache) as c:
        return {v: c.get(v, feature).data for v in c.videos}


def test_extract_info_rerun_and_adding_an_extractor(clips, tmp_path, tiny_clip):
    cache = tmp_path / "c.h5"
    res = _run(["extract", clips, "-o", cache, "--audio", "priors", "--workers", 1, "--quiet"])
    assert res.exit_code == 0, res.output
    assert all(r["status"] == "done" for r in _report(cache).values())
    priors_before = _arrays(cache, "priors")
    assert {k: v.shape[0] for k, v in priors_before.items()} == {"clip0": 2, "clip1": 3, "clip2": 4}

    res = _run(["extract", clips, "-o", cache, "--audio", "priors", "--quiet"])
    assert res.exit_code == 0 and "skipped 3" in res.output
    assert {r["status"] for r in _report(cache).values()} == {"skipped"}

    res = _run(["extract", clips, "-o", cache, "--audio", "priors", "--visual", f"clip:{tiny_clip}/random",
                "--tokens", "--workers", 1, "--quiet"])
    assert res.exit_code == 0, res.output
    assert "done 3" in res.output
    after = _arrays(cache, "priors")
    for vid, arr in priors_before.items():  # only the new extractor ran; priors rows untouched
        np.testing.assert_array_equal(after[vid], arr)
    with open_cache(cache) as c:
        for vid in c.videos:
            a, v = c.get(vid, "priors"), c.get(vid, "clip-tiny-clip-random")
            np.testing.assert_allclose(a.times, v.times)  # one timeline
            assert c.get(vid, "clip-tiny-clip-random-tokens").data.shape[1:] == (16, 32)

    res = _run(["info", cache, "--json"])
    desc = json.loads(res.output)
    assert desc["videos"] == 3
    assert desc["features"]["priors"]["rows"] == 9
    assert desc["features"]["clip-tiny-clip-random"]["weights"] == "random-init"
    text = _run(["info", cache]).output
    assert "priors" in text and "row i at 0.5 + i*1 s" in text


def test_max_seconds_pads_by_repeating_the_last_segment(clips, tmp_path):
    cache = tmp_path / "c.h5"
    res = _run(["extract", clips, "-o", cache, "--audio", "priors", "--max-seconds", 3, "--workers", 1, "--quiet"])
    assert res.exit_code == 0, res.output
    with open_cache(cache) as c:
        short = c.get("clip0", "priors")
        assert short.data.shape[0] == 3 and short.valid == 2
        np.testing.assert_array_equal(short.data[2], short.data[1])
        assert c.get("clip2", "priors").data.shape[0] == 3


def _bad_inputs(folder: Path) -> dict[str, str]:
    """Every kind of bad input, with whether it must work ("done") or fail alone ("failed")."""
    write_clip(folder / "good.mp4", seconds=2)
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("this is not a video\n")
    (folder / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(20000))
    full = write_clip(folder / "tmp_trunc.mp4", seconds=3).read_bytes()
    (folder / "tmp_trunc.mp4").unlink()
    (folder / "truncated.mp4").write_bytes(full[: len(full) // 2])
    write_clip(folder / "noaudio.mp4", seconds=2, audio=False)
    write_clip(folder / "novideo.mp4", seconds=2, video=False)
    write_clip(folder / "short.mp4", seconds=0.4, fps=10)
    write_clip(folder / "odd.mkv", seconds=2, size=(63, 47), vcodec="mjpeg", pix_fmt="yuvj444p")
    write_clip(folder / "vfr.mp4", seconds=2, vfr=True)
    write_clip(folder / "u8.mkv", seconds=2, channels=1, rate=8000, codec="pcm_u8", sample_fmt="u8")
    write_clip(folder / "surround.mp4", seconds=2, channels=6, rate=48000)
    return {"good": "done", "zero": "failed", "text": "failed", "noise": "failed", "truncated": "any",
            "noaudio": "failed", "novideo": "failed", "short": "done", "odd": "done", "vfr": "done",
            "u8": "done", "surround": "done"}


def test_bad_inputs_fail_alone_and_the_run_goes_on(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    expected = _bad_inputs(folder)
    cache = tmp_path / "c.h5"
    res = _run(["extract", folder, "-o", cache, "--audio", "priors", "--visual", "motion", "--quiet"])
    assert res.exit_code == 1, res.output
    report = _report(cache)
    assert set(report) == set(expected)
    for vid, want in expected.items():
        if want != "any":
            assert report[vid]["status"] == want, (vid, report[vid])
        if report[vid]["status"] == "failed":
            assert report[vid]["reason"] and "\n" not in report[vid]["reason"]
            assert f"failed {vid}" in res.output
    assert "no audio stream" in report["noaudio"]["reason"]
    assert "no video stream" in report["novideo"]["reason"]
    with open_cache(cache) as c:
        done = {v for v, r in report.items() if r["status"] == "done"}
        assert set(c.videos) == done
        assert c.get("short", "priors").data.shape[0] == 1
        assert np.isfinite(c.get("u8", "priors").data.astype(np.float32)).all()


def test_missing_weights_is_one_line_before_any_video(clips, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "c.h5"
    res = CliRunner().invoke(cli.main, ["extract", str(clips), "-o", str(cache), "--visual",
                                        "clip:ViT-B-32/laion2b_s34b_b79k"])
    assert res.exit_code == 2
    err = res.output.strip().splitlines()
    assert len(err) == 1 and "clip:ViT-B-32/laion2b_s34b_b79k" in err[0] and "weights" in err[0]
    assert not cache.exists()
    res = CliRunner().invoke(cli.main, ["extract", str(clips), "-o", str(cache), "--visual", "priors"])
    assert res.exit_code == 2 and "--audio" in res.output
    res = CliRunner().invoke(cli.main, ["extract", str(clips), "-o", str(cache), "--audio", "nosuch"])
    assert res.exit_code == 2 and "unknown extractor" in res.output


def _env(**extra) -> dict:
    env = dict(os.environ, FEATPIPE_PLUGINS="fp_slow", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PLUGINS, env.get("PYTHONPATH", "")]))
    return env


def _featpipe() -> list[str]:
    return [sys.executable, "-c", "from featpipe.cli import main; main()"]


def test_kill_9_of_the_extracting_process_then_resume_equals_a_clean_run(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(10):
        write_clip(folder / f"v{i:02d}.mp4", seconds=2, fps=5, freq=200 + 50 * i)
    args = ["extract", str(folder), "--audio", "slow", "--audio", "priors", "--workers", "2", "--quiet"]
    cache = tmp_path / "killed.h5"
    proc = subprocess.Popen(_featpipe() + args + ["-o", str(cache)], env=_env(FP_SLOW_SECONDS="0.5"),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if cache.exists():
                try:
                    with open_cache(cache) as c:
                        if len(c.videos) >= 2:
                            break
                except Exception:  # noqa: BLE001 - not yet in SWMR mode
                    pass
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)  # the client only, mid-run
        proc.wait()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its orphaned workers
        except ProcessLookupError:
            pass
    with open_cache(cache) as c:
        committed = len(c.videos)
    assert 2 <= committed < 10
    resumed = subprocess.run(_featpipe() + args + ["-o", str(cache)], env=_env(FP_SLOW_SECONDS="0"),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"skipped {committed}" in resumed.stderr
    clean = tmp_path / "clean.h5"
    run = subprocess.run(_featpipe() + args + ["-o", str(clean)], env=_env(FP_SLOW_SECONDS="0"),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    for feature in ("slow", "priors"):
        a, b = _arrays(cache, feature), _arrays(clean, feature)
        assert a.keys() == b.keys() and len(a) == 10
        for vid in a:
            np.testing.assert_array_equal(a[vid], b[vid])


@pytest.mark.parametrize("option, value, says", [
    ("--workers", "0", "x>=1"), ("--batch-size", "0", "x>=1"), ("--max-in-flight", "0", "x>=1"),
    ("--max-seconds", "0", "x>0"), ("--max-seconds", "-3", "x>0"), ("--fps", "0", "x>0"),
    ("--video-timeout", "-1", "x>=0"), ("--video-timeout-scale", "-1", "x>=0"), ("--set", "novalue", "KEY=VALUE"),
])
def test_bad_extract_options_are_usage_errors_before_any_work(clips, tmp_path, option, value, says):
    cache = tmp_path / "c.h5"
    res = CliRunner().invoke(cli.main, ["extract", str(clips), "-o", str(cache), "--audio", "priors", "--quiet",
                                        option, value])
    assert res.exit_code == 2, res.output
    assert f"Invalid value for '{option}'" in res.output and says in res.output
    assert not cache.exists()  # refused before any cache, cluster or worker


@pytest.mark.parametrize("option, value", [
    ("--fps", "nan"), ("--fps", "inf"), ("--max-seconds", "nan"), ("--max-seconds", "inf"), ("--min-decoded", "nan"),
    ("--max-bad-packets", "nan"), ("--video-timeout", "nan"), ("--video-timeout", "inf"),
    ("--video-timeout-scale", "nan"),
])
def test_non_finite_numbers_are_usage_errors(clips, tmp_path, option, value):
    # nan passes every range comparison and inf is no number of seconds: both used to start a run
    cache = tmp_path / "c.h5"
    res = CliRunner().invoke(cli.main, ["extract", str(clips), "-o", str(cache), "--audio", "priors", "--quiet",
                                        option, value])
    assert res.exit_code == 2, res.output
    assert f"Invalid value for '{option}'" in res.output and "not a finite number" in res.output
    assert not cache.exists()


def test_extract_defaults_have_one_home() -> None:
    """The command line shows the library's defaults (featpipe.run.config, DecodeParams, ExtractOptions, TryPolicy)."""
    from featpipe.run.config import ExtractConfig, PipelineError

    lib = ExtractConfig(inputs=[], cache=Path("c.h5"))
    shown = {p.name: p.default for p in cli.extract.params}
    assert (shown["fps"], shown["pad"], shown["max_seconds"]) == (lib.params.fps, lib.params.pad, lib.params.max_seconds)
    assert (shown["workers"], shown["batch_size"]) == (lib.workers, lib.options.batch_size)
    assert (shown["video_timeout"], shown["video_timeout_scale"]) == (60.0, 10.0) == (
        lib.try_policy.video_timeout, lib.try_policy.timeout_per_second)
    with pytest.raises(PipelineError, match="workers must be at least 1"):
        ExtractConfig(inputs=[], cache=Path("c.h5"), workers=0)  # library callers are refused too


def test_set_keys_must_be_declared_and_typed(clips, tmp_path):
    cache = tmp_path / "c.h5"
    res = CliRunner().invoke(cli.main, ["extract", str(clips), "-o", str(cache), "--audio", "priors", "--visual",
                                        "motion", "--set", "clap_window=3", "--quiet"])
    assert res.exit_code == 2
    (line,) = res.output.strip().splitlines()
    assert "--set clap_window: no extractor of this run has that option" in line and "priors reads none" in line
    assert not cache.exists()


def test_resume_recognises_copied_and_touched_files_and_not_edited_ones(clips, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(clips, folder)
    cache = tmp_path / "c.h5"
    res = _run(["extract", folder, "-o", cache, "--audio", "priors", "--workers", 1, "--quiet"])
    assert res.exit_code == 0, res.output
    st = (folder / "clip0.mp4").stat()
    os.utime(folder / "clip0.mp4", (st.st_atime, st.st_mtime + 100))  # touched
    moved = tmp_path / "elsewhere.mp4"
    shutil.move(folder / "clip1.mp4", moved)
    shutil.copy(moved, folder / "clip1.mp4")  # copied back: new mtime, same bytes
    edited = folder / "clip2.mp4"
    st = edited.stat()
    data = bytearray(edited.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, and the mtime put back: only the content tells
    edited.write_bytes(bytes(data))
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns))
    res = _run(["extract", folder, "-o", cache, "--audio", "priors", "--workers", 1, "--quiet"])
    report = _report(cache)
    assert report["clip0"]["status"] == report["clip1"]["status"] == "skipped", report
    assert report["clip2"]["status"] != "skipped", report  # decoded again (done, or failed if the flip broke it)
