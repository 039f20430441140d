"""featpipe's own bugs are never reported as damaged media, and a repeated one stops the run (issue #19).

The bugs are injected through tests/plugins/fp_broken.py (FEATPIPE_PLUGINS), so they happen in
the real workers of a real `featpipe extract`: the decoder's display-matrix read raising the
AttributeError PyAV 18.1.1 caused, and an extractor raising one in its own code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from featpipe.contracts import ExtractOptions
from featpipe.decode import DecodeError, DecodeParams, probe
from featpipe.run.failure import INTERNAL_REPEATS, RepeatGuard, describe
from featpipe.run.extract_video import VideoJob, process_video
from media import write_clip

PLUGINS = str(Path(__file__).parent / "plugins")


def _featpipe(args: list[str], **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, FEATPIPE_PLUGINS="fp_broken", **env)
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [PLUGINS, full.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", "from featpipe.cli import main; main()", *map(str, args)],
                          env=full, capture_output=True, text=True, timeout=300)


def _report(cache: Path) -> list[dict]:
    return [json.loads(x) for x in Path(f"{cache}.report.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def six(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("six")
    for i in range(6):
        write_clip(folder / f"v{i}.mp4", seconds=2, fps=5, freq=200 + 40 * i)
    return folder


def test_a_bug_in_the_probe_is_ours_not_the_files(tmp_path, monkeypatch):
    import featpipe.decode.streams as streams

    path = write_clip(tmp_path / "a.mp4", seconds=2, fps=10)

    def broken(c, index):  # featpipe code meeting an API it does not know
        return None.sample_rate

    monkeypatch.setattr(streams, "choose_audio", broken)
    with pytest.raises(AttributeError):  # passes through media_errors: not turned into a DecodeError
        probe(str(path))
    r = process_video(VideoJob("a", str(path), ("priors",), ExtractOptions(), DecodeParams()))
    assert not r.ok and "\n" not in r.reason
    assert "internal error in featpipe, not a problem of this file" in r.reason and "damaged" not in r.reason
    assert r.internal.startswith("AttributeError at test_internal_errors.py:")
    assert "Traceback" in r.detail and "choose_audio" in r.detail


def test_media_errors_stay_sentences_about_the_file(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    with pytest.raises(DecodeError) as err:
        probe(str(bad))
    f = describe(err.value)
    assert f.internal == "" and f.reason == str(err.value) and "featpipe" not in f.reason
    assert describe(FileNotFoundError(2, "No such file or directory")).internal == ""


def test_the_guard_counts_the_same_bug_in_a_row():
    g = RepeatGuard(3)
    assert not g.see(False, "AttributeError at a.py:1") and not g.see(False, "AttributeError at a.py:1")
    assert not g.see(False, "", "a damaged file")  # a media failure neither ends nor extends the streak
    assert not g.see(True)  # a committed video ends it
    assert not g.see(False, "AttributeError at a.py:1") and not g.see(False, "KeyError at b.py:2")
    assert not g.see(False, "KeyError at b.py:2") and g.see(False, "KeyError at b.py:2")
    assert "3 videos in a row (KeyError at b.py:2)" in g.message("c.h5.report.jsonl")


@pytest.mark.parametrize("where", ["decode", "extractor"])
def test_a_repeated_bug_stops_the_run_early_with_exit_2(six, tmp_path, where):
    cache = tmp_path / "c.h5"
    spec = ["--audio", "broken"] if where == "extractor" else ["--audio", "priors"]
    res = _featpipe(["extract", six, "-o", cache, *spec, "--workers", "1", "--max-in-flight", "1", "--quiet"],
                    FP_BROKEN=where)
    assert res.returncode == 2, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert f"the same internal error failed {INTERNAL_REPEATS} videos in a row (AttributeError at " in last
    assert "bug in featpipe, not in your videos" in last and "damaged" not in res.stderr
    lines = _report(cache)
    assert len(lines) == INTERNAL_REPEATS  # stopped: three of the six videos were never tried
    for line in lines:
        assert line["status"] == "failed" and "internal error in featpipe" in line["reason"]
        assert "AttributeError" in line["traceback"] and line["traceback"].startswith("Traceback")


def test_bugs_that_do_not_repeat_in_a_row_fail_their_videos_and_the_run_goes_on(six, tmp_path):
    cache = tmp_path / "c.h5"
    res = _featpipe(["extract", six, "-o", cache, "--audio", "broken", "--workers", "1", "--max-in-flight", "1",
                     "--quiet"], FP_BROKEN_GOOD=",".join(f"v{i}" for i in range(6)))  # no bug fires
    assert res.returncode == 0, res.stderr
    cache2 = tmp_path / "d.h5"
    # v0, v2 and v4 fail, the others commit: never three in a row
    res = _featpipe(["extract", *(six / f"v{i}.mp4" for i in range(6)), "-o", cache2, "--audio", "broken",
                     "--workers", "1", "--max-in-flight", "1", "--quiet"], FP_BROKEN_GOOD="v1,v3,v5")
    assert res.returncode == 1, res.stderr
    status = {x["video_id"]: x["status"] for x in _report(cache2)}
    assert status == {f"v{i}": "failed" if i % 2 == 0 else "done" for i in range(6)}
