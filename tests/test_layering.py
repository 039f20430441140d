"""The layering and the lint rules are checked, not described: import-linter's contracts and ruff's
rules live in pyproject.toml, and these tests run them (so .ci/run's pytest fails on a wrong-way import)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", code, "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)


def test_import_contracts_hold():
    res = _lint_imports(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


def test_a_wrong_way_import_breaks_the_contracts(tmp_path):
    for part in ("featpipe", "heads"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    reader = tmp_path / "featpipe" / "cache" / "reader.py"
    reader.write_text(reader.read_text() + "\nfrom ..run.spool import Spooled  # the cache reaching up into the run\n")
    res = _lint_imports(tmp_path)
    assert res.returncode != 0
    assert "featpipe.cache.reader -> featpipe.run.spool" in res.stdout


def test_ruff_lint():
    res = _ruff("check", "--no-cache", ".")
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_format():
    res = _ruff("format", "--check", "--no-cache", ".")
    assert res.returncode == 0, res.stdout + res.stderr
