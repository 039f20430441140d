"""featpipe on the releases it allows: the newest (what every fresh install and CI get) and the tested
floor (pyproject.toml's lower bounds, installed on purpose), and each PyAV shim on both sides of its break.

The floor run installs the lowest allowed av, h5py, dask, distributed, open_clip_torch and timm
from the package index into a folder put first on PYTHONPATH (torch, numpy and the rest stay as
installed), then runs `featpipe extract` and `featpipe info` in subprocesses, workers included.
Without an index (an offline machine) it skips, saying so; CI has one. See docs/dependencies.md.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import av
import numpy as np
import pytest
from packaging.version import Version

from featpipe import open_cache
from featpipe.decode import probe
from featpipe.decode.pyav_compat import display_matrix_side_data
import side_envs
from media import corrupt_packet, truncate, write_clip

PLUGINS = str(Path(__file__).parent / "plugins")
FLOORED = ("av", "h5py", "dask", "distributed", "open_clip_torch", "timm")  # fast-moving, API-breaking


def floors() -> dict[str, str]:
    """The lower bound pyproject.toml gives each fast-moving dependency (from the installed metadata)."""
    found = {}
    for req in requires("featpipe") or []:
        m = re.match(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?\s*>=\s*([0-9.]+)", req)
        if m and ";" not in req and m.group(1).lower().replace("-", "_") in FLOORED:
            found[m.group(1).lower().replace("-", "_")] = m.group(3)
    if "dask" in found:  # dask[distributed] pins distributed to the same release
        found.setdefault("distributed", found["dask"])
    return found


def extra_floor(package: str, extra: str) -> str:
    """The lower bound an extra of pyproject.toml gives ``package``."""
    for req in requires("featpipe") or []:
        m = re.match(rf"{package}\s*>=\s*([0-9.]+)\s*;.*extra\s*==\s*[\"']{extra}[\"']", req)
        if m:
            return m.group(1)
    raise AssertionError(f"no floor for {package} in the {extra!r} extra")


# --- the shims, on each side of their break --------------------------------------------------------


class _Entry:
    def __init__(self, kind, payload: bytes):
        self.type, self.payload = kind, payload

    def __bytes__(self) -> bytes:
        return self.payload


class _Frame:
    def __init__(self, side_data):
        self.side_data = side_data


MATRIX = np.array([0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30], np.int32).tobytes()  # a turn of 90 degrees


def test_display_matrix_from_side_data_that_iterates_objects_before_18_1_1():
    from av.sidedata.sidedata import Type

    other = _Entry(Type.MOTION_VECTORS if hasattr(Type, "MOTION_VECTORS") else None, b"x")
    frame = _Frame([other, _Entry(Type.DISPLAYMATRIX, MATRIX)])  # up to 18.1.0: iteration yields objects
    assert bytes(display_matrix_side_data(frame)) == MATRIX
    assert display_matrix_side_data(_Frame([other])) is None


def test_display_matrix_from_side_data_that_iterates_keys_from_18_1_1():
    from av.sidedata.sidedata import Type

    class Keys(dict):  # 18.1.1: a Mapping; iterating yields Type keys, which have no .type
        pass

    frame = _Frame(Keys({Type.DISPLAYMATRIX: _Entry(Type.DISPLAYMATRIX, MATRIX)}))
    assert bytes(display_matrix_side_data(frame)) == MATRIX
    assert display_matrix_side_data(_Frame(Keys())) is None


def test_the_installed_pyav_gives_the_rotation(tmp_path):
    path = write_clip(tmp_path / "r.mp4", seconds=1, fps=10, size=(64, 32), rotation=-90)
    media = probe(str(path))
    assert (media.display_width, media.display_height, media.orientation.rotation) == (32, 64, 90), av.__version__


def test_pyproject_names_a_floor_for_each_fast_moving_dependency():
    assert set(floors()) == set(FLOORED)


# --- the floor, end to end through the CLI -------------------------------------------------------------


@pytest.fixture(scope="module")
def floor_site() -> Path:
    pins = [f"{name}=={version}" for name, version in sorted(floors().items())]
    return side_envs.install("floor-" + "-".join(p.replace("==", "") for p in pins), pins, "the floor releases")


def _featpipe(args: list, site: Path | None) -> subprocess.CompletedProcess:
    env = dict(os.environ, FEATPIPE_PLUGINS="fp_layout")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site) if site else "", PLUGINS, env.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-c", "from featpipe.cli import main; main()", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_floor_releases_extract_what_the_newest_do(floor_site, tmp_path, tiny_clip):
    check = _featpipe(["models"], floor_site)
    assert check.returncode == 0, check.stderr
    versions = subprocess.run(
        [
            sys.executable,
            "-c",
            "import av, h5py, dask, open_clip, timm; print(av.__version__, "
            "h5py.__version__, dask.__version__, open_clip.__version__, timm.__version__)",
        ],
        env=dict(os.environ, PYTHONPATH=str(floor_site)),
        capture_output=True,
        text=True,
    )
    want = [Version(floors()[k]) for k in ("av", "h5py", "dask", "open_clip_torch", "timm")]
    assert [Version(v) for v in versions.stdout.split()] == want, versions.stderr
    folder = tmp_path / "in"
    folder.mkdir()
    write_clip(folder / "upright.mp4", seconds=3, fps=10, size=(64, 32), pattern="halves", rotation=-90)
    write_clip(folder / "cover.mp4", seconds=3, fps=10, cover=True, second_audio=True)
    full = write_clip(tmp_path / "full.mkv", seconds=8, fps=10)
    truncate(full, folder / "cut.mkv", 0.75)
    corrupt_packet(
        write_clip(tmp_path / "src.mp4", seconds=4, fps=10, preset="medium"), folder / "flipped.mp4", "audio", 2.0
    )
    (folder / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    args = [
        "extract",
        folder,
        "--visual",
        "layout",
        "--visual",
        f"clip:{tiny_clip}/random",
        "--audio",
        "priors",
        "--workers",
        "1",
        "--quiet",
    ]
    runs = {}
    for label, site in (("newest", None), ("floor", floor_site)):
        cache = tmp_path / f"{label}.h5"
        res = _featpipe([*args, "-o", cache], site)
        assert res.returncode == 1, res.stderr  # the noise file fails, alone
        report = {r["video_id"]: r for r in map(json.loads, Path(f"{cache}.report.jsonl").read_text().splitlines())}
        assert "internal error" not in res.stderr
        info = _featpipe(["info", cache], site)
        assert info.returncode == 0, info.stderr
        with open_cache(cache) as c:
            runs[label] = (
                report,
                {v: c.record(v)["media"] for v in c.videos},
                {
                    (v, f): (c.get(v, f).data.astype(np.float32), c.get(v, f).valid)
                    for v in c.videos
                    for f in c.features
                },
            )
    (rep_new, media_new, data_new), (rep_floor, media_floor, data_floor) = runs["newest"], runs["floor"]
    assert (
        {k: r["status"] for k, r in rep_floor.items()}
        == {k: r["status"] for k, r in rep_new.items()}
        == {"upright": "done", "cover": "done", "cut": "done", "flipped": "done", "noise": "failed"}
    )
    assert media_floor == media_new and media_floor["upright"]["rotation"] == 90
    assert media_floor["cover"]["video_codec"] == "h264"  # the cover picture is not taken for the video
    assert data_floor.keys() == data_new.keys()
    for key, (rows, valid) in data_new.items():
        assert data_floor[key][1] == valid, key
        if not key[1].startswith("clip"):  # weight-free features: the same media give the same rows
            np.testing.assert_allclose(data_floor[key][0], rows, atol=1e-3, err_msg=str(key))


def test_the_transformers_floor_runs_the_transformers_extractors():
    """clap:, ast: and hf-audio: (the extras `clap` and `audio`) under their floor release of transformers:
    their own test files, references included, in a subprocess with the floor first on PYTHONPATH."""
    floor = extra_floor("transformers", "audio")
    assert floor == extra_floor("transformers", "clap")
    site = side_envs.transformers(floor, "transformers floor")
    here = Path(__file__).parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")])))
    probe = subprocess.run(
        [sys.executable, "-c", "import transformers; print(transformers.__version__)"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert Version(probe.stdout.strip()) == Version(floor), probe.stderr
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-x",
            *(str(here / f) for f in ("test_clap.py", "test_ast.py", "test_hf_audio.py")),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=here.parent,
    )
    assert res.returncode == 0, res.stdout[-3000:]
    assert " passed" in res.stdout.strip().splitlines()[-1] and "skipped" not in res.stdout.strip().splitlines()[-1]
