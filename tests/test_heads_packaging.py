"""The wheel installs cli.py, demo.py and heads/ under featpipe's name, and no generic top-level module."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import featpipe
import featpipe.cli
import featpipe.heads

ROOT = Path(__file__).resolve().parent.parent


def _build(folder: Path, hook: str) -> str:
    out = subprocess.run([sys.executable, "-c", f"import setuptools.build_meta as b; print(b.{hook}('dist'))"],
                         cwd=folder, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_checkout_imports_the_application_layer_from_the_repository():
    assert Path(featpipe.heads.__file__) == ROOT / "heads" / "__init__.py"
    assert Path(featpipe.cli.__file__) == ROOT / "cli.py"


def test_wheel_has_featpipe_cli_demo_heads_and_nothing_else_at_the_top(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "cli.py", "demo.py"):
        shutil.copy2(ROOT / name, src / name)
    for folder in ("featpipe", "heads"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    # as `python -m build` does: an sdist, then the wheel built from the unpacked sdist
    sdist = src / "dist" / _build(src, "build_sdist")
    shutil.unpack_archive(sdist, tmp_path / "unpacked")
    unpacked = next((tmp_path / "unpacked").iterdir())
    wheel = unpacked / "dist" / _build(unpacked, "build_wheel")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"featpipe", "featpipe-0.1.0.dist-info"}, tops
    for module in ("featpipe/cli.py", "featpipe/demo.py", "featpipe/heads/__init__.py",
                   "featpipe/heads/estimators.py", "featpipe/cache/reader.py"):
        assert module in names, module
    meta = zipfile.ZipFile(wheel)
    entry = meta.read("featpipe-0.1.0.dist-info/entry_points.txt").decode()
    assert "featpipe = featpipe.cli:main" in entry
    top_level = [n for n in names if n.endswith("top_level.txt")]
    assert not top_level or meta.read(top_level[0]).decode().split() == ["featpipe"]
