"""A study run that fails on a Dask worker (issue #21): the other runs are written, the command
exits 1 with one line naming the arm and seed, the failed run is not stored as finished, and the
same command again redoes only that run.

The bug is injected through a Dask worker preload (tests/plugins/fp_study_broken.py,
``DASK_DISTRIBUTED__WORKER__PRELOAD``), so it happens inside the head in the real worker
processes of a real ``featpipe study``, started as a user starts it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from study_data import synth_study_set

PLUGINS = Path(__file__).parent / "plugins"
ROOT = Path(__file__).parents[1]


def _study(files: dict, out: Path, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, **env)
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(PLUGINS), full.get("PYTHONPATH", "")]))
    args = ["study", files["cache"], "--train", files["train"], "--val", files["val"], "--test", files["test"]]
    args += ["--arm", "noise=noise", "--arm", "deep=deep", "--seeds", "3", "--set", "max_epochs=2", "--quiet"]
    cmd = [sys.executable, "-c", "from featpipe.cli import main; main()", *map(str, args), "-o", str(out)]
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=300)


def _records(out: Path) -> dict[str, int]:
    return {f"{p.parent.name}:{p.stem.split('-')[1]}": p.stat().st_mtime_ns for p in out.glob("runs/*/seed-*.json")}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return synth_study_set(tmp_path_factory.mktemp("failures") / "set", videos=40, seed=7)


def test_a_failed_run_is_named_kept_unfinished_and_redone_alone(files, tmp_path):
    out = tmp_path / "out"
    broken = {"DASK_DISTRIBUTED__WORKER__PRELOAD": '["fp_study_broken"]', "FP_STUDY_BROKEN": "deep:1"}
    r = _study(files, out, **broken)
    assert r.returncode == 1, r.stdout + r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr  # no worker tracebacks on the terminal: one line
    assert err[0].startswith("featpipe: error: 1 of 9 runs failed")
    assert "deep seed 1" in err[0] and "AttributeError" in err[0] and "internal error in featpipe" in err[0]
    done = _records(out)
    assert set(done) == {f"{a}:{s}" for a in ("question-only", "noise", "deep") for s in range(3)} - {"deep:1"}
    assert not (out / "runs" / "deep" / "seed-1.jsonl").exists() and not (out / "study.json").exists()
    trace = (out / "runs" / "deep" / "seed-1.error.txt").read_text()
    assert "Traceback" in trace and "no_such_attribute" in trace and "fp_study_broken.py" in trace

    r = _study(files, out)  # the same command, the bug gone: only deep seed 1 runs again
    assert r.returncode == 0, r.stdout + r.stderr
    assert "8 of 9 runs already done" in r.stdout
    again = _records(out)
    assert {k: again[k] for k in done} == done and "deep:1" in again
    assert not (out / "runs" / "deep" / "seed-1.error.txt").exists()
    s = json.loads((out / "study.json").read_text())
    assert s["seeds"] == [0, 1, 2]
    lines = (out / "runs" / "deep" / "seed-1.jsonl").read_text().splitlines()
    assert {json.loads(x)["seed"] for x in lines} == {1}


def test_the_same_bug_in_three_runs_stops_the_study(files, tmp_path):
    out = tmp_path / "out"
    broken = {"DASK_DISTRIBUTED__WORKER__PRELOAD": '["fp_study_broken"]', "FP_STUDY_BROKEN": "deep:0,deep:1,deep:2"}
    r = _study(files, out, **broken)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "stopped: the same error failed 3 runs" in r.stdout
    err, *rest = r.stderr.strip().splitlines()
    assert not rest, r.stderr
    assert err.startswith("featpipe: error: 3 of 9 runs failed, the first: arm deep seed ")
    assert not any(k.startswith("deep:") for k in _records(out)) and not (out / "study.json").exists()
