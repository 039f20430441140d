"""Hostile and unlucky caches (issue #22, cache side): one writer per file whatever its name, merge's
output locked, truncated files and future schemas refused in one line, the run's report opened only
after the checks and never through a symlink. Every fixture is written here; second writers are real
processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from featpipe.cache import CacheError, CacheWriter, open_cache
from featpipe.cache.lock import LockError
from featpipe.cache.recover import clear_write_flags, write_flags
from featpipe.cli import main
from featpipe.extractors.base import OutputSpec
from featpipe.cache.merge import merge_caches

TIMELINE = {"fps": 1.0, "seg_len": 1.0, "max_seconds": None, "pad": "repeat"}
SPEC = OutputSpec("feat", (8,), "audio")
PROV = {"spec": "feat", "weights": "none"}
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}

# Holds a cache open for writing (SWMR: its write flags are set) until its stdin closes.
HOLD = textwrap.dedent("""
    import sys
    from featpipe.cache import CacheWriter
    from featpipe.extractors.base import OutputSpec
    w = CacheWriter(sys.argv[1], {"fps": 1.0, "seg_len": 1.0, "max_seconds": None, "pad": "repeat"})
    w.ensure_feature(OutputSpec("feat", (8,), "audio"), {"spec": "feat", "weights": "none"})
    w.start()
    print("ready", flush=True)
    sys.stdin.read()
    w.close()
""")

# A merge that stops after its first record until a line comes on stdin.
MERGE = textwrap.dedent("""
    import sys
    from featpipe.cache.merge import merge_caches
    seen = []
    def pause(vid):
        seen.append(vid)
        if len(seen) == 1:
            print("merging", flush=True)
            sys.stdin.readline()
    s = merge_caches(sys.argv[1:-1], sys.argv[-1], on_record=pause)
    print("merged", s.videos, flush=True)
""")


def make_cache(path: Path, n: int = 3, rows: int = 4) -> Path:
    with CacheWriter(path, TIMELINE) as w:
        w.ensure_feature(SPEC, PROV)
        w.start()
        for i in range(n):
            w.commit(
                {"video_id": f"v{i}", "source": {"size": i, "mtime": 0}}, {"feat": np.full((rows, 8), i, np.float32)}
            )
    return path


def npy_folder(folder: Path, ids=("v0", "v1"), rows: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for v in ids:
        np.save(folder / f"{v}.npy", np.ones((rows, 3), np.float32))
    return folder


def hold(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The featpipe command in its own process (a hang is a failure, not a stuck test)."""
    return subprocess.run(
        [sys.executable, "-c", "from featpipe.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def one_line_error(r, *words: str) -> None:
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(err) == 1 and err[0].startswith("featpipe: error:") and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in err[0], err[0]


# -- 1. one writer per file --------------------------------------------------------------------------
def test_second_writer_through_any_name_is_refused(tmp_path):
    cache = make_cache(tmp_path / "cache.h5")
    (tmp_path / "sub").mkdir()
    os.symlink(cache, tmp_path / "link.h5")
    os.link(cache, tmp_path / "hard.h5")
    proc = hold(cache)
    try:
        for name in (tmp_path / "link.h5", tmp_path / "hard.h5", tmp_path / "sub" / ".." / "cache.h5"):
            with pytest.raises(CacheError, match="being written by another featpipe process"):
                CacheWriter(name, TIMELINE)
        r = cli(
            "import", "--feature", f"imp={npy_folder(tmp_path / 'npy')}", "-o", str(tmp_path / "hard.h5"), "--quiet"
        )
        one_line_error(r, "being written by another featpipe process")
        # the live writer's flags are never cleared, by any name
        assert write_flags(cache)
        for name in (cache, tmp_path / "link.h5", tmp_path / "hard.h5"):
            with pytest.raises(LockError):
                clear_write_flags(name)
        assert write_flags(cache)
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0
    with CacheWriter(tmp_path / "link.h5", TIMELINE):  # free again once the first writer is gone
        pass
    with open_cache(tmp_path / "hard.h5") as c:
        assert c.videos == ["v0", "v1", "v2"]


def test_clear_write_flags_after_a_killed_writer(tmp_path):
    cache = make_cache(tmp_path / "cache.h5")
    proc = hold(cache)
    proc.kill()
    proc.wait()
    assert write_flags(cache)
    assert clear_write_flags(tmp_path / "cache.h5")  # nobody holds the lock: the writer is dead
    assert not write_flags(cache)


def test_merge_locks_its_output_against_an_import(tmp_path):
    a = make_cache(tmp_path / "a.h5", n=3)
    b = tmp_path / "b.h5"
    shutil.copy(a, b)
    out = tmp_path / "out.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", MERGE, str(a), str(b), str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert proc.stdout.readline().strip() == "merging", proc.stderr.read()
        os.symlink(out, tmp_path / "out-link.h5")
        for target in (out, tmp_path / "out-link.h5"):
            r = cli("import", "--feature", f"imp={npy_folder(tmp_path / 'npy', rows=60)}", "-o", str(target), "--quiet")
            one_line_error(r, "being written by another featpipe process")
        with pytest.raises(CacheError):
            merge_caches([a], out)  # a second merge into the same output
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().split()[:2] == ["merged", "3"]
    finally:
        proc.kill()
        proc.wait()
    with open_cache(out) as c:
        assert c.videos == ["v0", "v1", "v2"] and c.features == ["feat"]


def test_a_killed_merges_placeholder_is_taken_over(tmp_path):
    a = make_cache(tmp_path / "a.h5")
    out = tmp_path / "out.h5"
    out.touch()  # what a merge killed before its rename leaves
    Path(f"{out}.partial").write_bytes(b"half")
    assert merge_caches([a], out).videos == 3
    with pytest.raises(CacheError, match="exists"):
        merge_caches([a], out)


# -- 2. truncated caches ---------------------------------------------------------------------------
def test_truncated_cache_is_one_line_everywhere(tmp_path):
    whole = make_cache(tmp_path / "whole.h5", n=40, rows=200)
    cut = tmp_path / "cut.h5"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CacheError, match="truncated"):
        open_cache(cut)
    with pytest.raises(CacheError, match="truncated"):
        CacheWriter(cut, TIMELINE)
    labels = tmp_path / "labels.csv"
    labels.write_text("video_id,label\n" + "".join(f"v{i},{i % 2}\n" for i in range(40)))
    for args in (
        ["info", str(cut)],
        ["export", str(cut), "--layout", "generic", "--feature", "feat=f", "-o", str(tmp_path / "x")],
        ["import", "--feature", f"imp={npy_folder(tmp_path / 'npy', rows=200)}", "-o", str(cut), "--quiet"],
        ["merge", str(whole), str(cut), "-o", str(tmp_path / "m.h5")],
        ["train-head", str(cut), "--task", "classify", "--train", str(labels), "-o", str(tmp_path / "h"), "--quiet"],
    ):
        one_line_error(cli(*args), "truncated")
    assert not (tmp_path / "m.h5").exists()


def test_a_cut_copy_of_a_live_cache_is_refused_not_extended(tmp_path):
    """A copy taken while a writer ran (write flags set) and cut short: the next writer must not take
    the missing end for the unused tail of a full disk; the file is refused and left as it was."""
    src = make_cache(tmp_path / "src.h5", n=40, rows=200)
    proc = hold(src)
    try:
        data = src.read_bytes()
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert write_flags(cut)
    with pytest.raises(CacheError, match="truncated.*lies past its end"):
        CacheWriter(cut, TIMELINE)
    assert cut.stat().st_size == len(data) * 2 // 3
    with pytest.raises(CacheError, match="truncated"):
        open_cache(cut)


# -- 3. the run's report -----------------------------------------------------------------------------
def test_refused_runs_leave_the_report_alone(tmp_path, clips):
    cache = make_cache(tmp_path / "cache.h5")
    report = Path(f"{cache}.report.jsonl")
    report.write_text('{"video_id": "running"}\n')
    # another timeline: refused after the lock, before the report is touched
    r = cli("extract", str(clips), "-o", str(cache), "--audio", "priors", "--fps", "2", "--quiet")
    one_line_error(r, "another timeline")
    assert report.read_text() == '{"video_id": "running"}\n'
    proc = hold(cache)
    try:  # a second writer, through a symlink
        os.symlink(cache, tmp_path / "link.h5")
        Path(f"{tmp_path / 'link.h5'}.report.jsonl").symlink_to(report)
        r = cli("extract", str(clips), "-o", str(tmp_path / "link.h5"), "--audio", "priors", "--quiet")
        one_line_error(r, "being written by another featpipe process")
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert report.read_text() == '{"video_id": "running"}\n'


def extract_one(clips: Path, cache: Path) -> subprocess.CompletedProcess:
    return cli(
        "extract",
        str(clips / "clip0.mp4"),
        "-o",
        str(cache),
        "--audio",
        "priors",
        "--quiet",
        "--workers",
        "1",
        timeout=300,
    )


def test_report_is_never_written_through_a_symlink_and_a_missing_folder_is_made(tmp_path, clips):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    cache = tmp_path / "out" / "cache.h5"
    cache.parent.mkdir()
    Path(f"{cache}.report.jsonl").symlink_to(victim)
    r = extract_one(clips, cache)
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "keep me\n"
    report = Path(f"{cache}.report.jsonl")
    assert not report.is_symlink() and json.loads(report.read_text().splitlines()[0])["status"] == "done"
    deep = tmp_path / "new" / "folder" / "cache.h5"  # a missing output folder is created
    r = extract_one(clips, deep)
    assert r.returncode == 0, r.stderr
    assert Path(f"{deep}.report.jsonl").read_text().count("\n") == 1


# -- 10. schema versions -----------------------------------------------------------------------------
def test_future_schema_is_read_but_never_written(tmp_path):
    cache = make_cache(tmp_path / "cache.h5")
    with h5py.File(cache, "a", libver="latest") as f:
        f.attrs["schema_version"] = 2
        f.attrs["featpipe_version"] = "9.0.0"
    with open_cache(cache) as c:
        assert c.schema_version == 2 and c.videos == ["v0", "v1", "v2"]
    with pytest.raises(CacheError, match=r"schema 2 \(made by featpipe 9.0.0\).*featpipe 9.0.0 or newer"):
        CacheWriter(cache, TIMELINE)
    r = CliRunner().invoke(
        main, ["import", "--feature", f"imp={npy_folder(tmp_path / 'npy')}", "-o", str(cache), "--quiet"]
    )
    assert r.exit_code == 2 and "schema 2" in r.output, r.output
    with pytest.raises(CacheError, match="schema 2"):
        merge_caches([cache], tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()
    with h5py.File(cache, "r") as f:
        assert int(f.attrs["schema_version"]) == 2 and "imp" not in f["features"]


def test_missing_schema_version_is_one_line(tmp_path):
    cache = make_cache(tmp_path / "cache.h5")
    with h5py.File(cache, "a", libver="latest") as f:
        del f.attrs["schema_version"]
    r = CliRunner().invoke(main, ["info", str(cache)])
    assert r.exit_code == 2 and "no schema_version attribute" in r.output and "Traceback" not in r.output
    with pytest.raises(CacheError, match="no schema_version"):
        CacheWriter(cache, TIMELINE)
